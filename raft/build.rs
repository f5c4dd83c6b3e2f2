//! Compiles `proto/raft.proto` (the peer protocol's messages) with `protox` (pure Rust), so
//! building needs no `protoc`. Only messages: the gRPC service that carries them belongs to the
//! node (`proto/peer.proto`), which maps these types in with `extern_path`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let file = proto_root.join("raft.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&proto_root])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
