//! etcd-client's build script runs protoc through `PROTOC`, which `.cargo/config.toml` points at
//! `tools/protoc`, a wrapper around the binary of the `protoc-bin-vendored` crate. This
//! build script only checks that the vendored binary exists for this platform, so a missing one
//! is reported plainly here rather than as a cryptic failure inside etcd-client's build.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Err(e) = protoc_bin_vendored::protoc_bin_path() {
        println!("cargo:warning=no vendored protoc for this platform ({e}); set PROTOC to a protoc binary");
    }
}
