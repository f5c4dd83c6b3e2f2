//! Generated protobuf types. Only generated code lives here.

/// The peer protocol between kvnode members (`proto/raft.proto`).
#[allow(clippy::all, missing_docs)]
pub mod raftpb {
    tonic::include_proto!("raftpb");
}
