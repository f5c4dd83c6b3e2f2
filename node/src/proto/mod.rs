//! Protobuf types: generated from `proto/`, except etcd's `TxnRequest` ([`txn`]), written by
//! hand so that nesting is bounded by etcd's rule and not by the decoder's recursion limit.

pub mod txn;

/// The Raft messages members exchange (`proto/raft.proto`), owned by the consensus core.
pub use raft::pb as raftpb;

/// etcd's key-value and event types (`proto/etcd/kv.proto`), as etcd clients expect them.
#[allow(clippy::all, missing_docs)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's users, roles and permissions (`proto/etcd/auth.proto`).
#[allow(clippy::all, missing_docs)]
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// The etcd v3 client API: services KV, Watch, Lease, Cluster, Maintenance, Auth
/// (`proto/etcd/rpc.proto`).
#[allow(clippy::all, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
    pub use super::txn::TxnRequest;
}

/// etcd's Lock service (`proto/etcd/v3lock.proto`).
#[allow(clippy::all, missing_docs)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// etcd's Election service (`proto/etcd/v3election.proto`).
#[allow(clippy::all, missing_docs)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// raftkv's own persisted formats: log commands, members, snapshot data (`proto/kvserver.proto`).
#[allow(clippy::all, missing_docs)]
pub mod kvserverpb {
    tonic::include_proto!("kvserverpb");
}

/// Member-to-member requests beside Raft messages (`proto/peer.proto`).
#[allow(clippy::all, missing_docs)]
pub mod peerpb {
    tonic::include_proto!("peerpb");
}
