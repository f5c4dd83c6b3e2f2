//! Compiles the project's protos with `protox` (pure Rust), so building needs no `protoc`.

use std::path::PathBuf;

/// Proto files compiled into the crate, relative to the repository's `proto/` folder.
const PROTOS: &[&str] = &[
    "etcd/kv.proto",
    "etcd/auth.proto",
    "etcd/rpc.proto",
    "etcd/v3lock.proto",
    "etcd/v3election.proto",
    "kvserver.proto",
    "peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| proto_root.join(p)).collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&proto_root])?;
    // The JSON mapping of the client API's messages for the HTTP/JSON gateway, as etcd's
    // grpc-gateway writes it: proto field names, 64-bit integers as strings, bytes as base64,
    // enums by name, zero values left out.
    let mut json = pbjson_build::Builder::new();
    for file in &fds.file {
        json.register_file_descriptor(file.clone());
    }
    json.preserve_proto_field_names()
        // Written by hand with the message (src/proto/txn.rs).
        .exclude([".etcdserverpb.TxnRequest"])
        .build(&[".etcdserverpb", ".mvccpb", ".authpb", ".v3lockpb", ".v3electionpb"])?;
    // The Raft messages are the consensus core's own types (crate `raft`, from raft.proto);
    // peer.proto only wraps them in the transport service.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .extern_path(".raftpb", "::raft::pb")
        // Written by hand (src/proto/txn.rs): nesting bounded by etcd's rule, not prost's.
        .extern_path(".etcdserverpb.TxnRequest", "crate::proto::txn::TxnRequest")
        .compile_fds(fds)?;
    Ok(())
}
