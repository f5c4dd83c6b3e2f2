//! The etcd v3 client API: one file per service, the mapping of the driver's typed errors to
//! etcd's statuses, and what the services share.
//!
//! Services never talk to other members: every request is served by this member through its
//! driver (proposals and read index requests of a follower travel to the leader inside Raft).

pub mod backup_stream;
pub mod cluster;
pub mod context;
pub mod election;
pub mod errors;
pub mod grpc_status;
pub mod health;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod recipes;
pub mod watch;

pub use context::{ApiContext, Limits};
pub use errors::EtcdError;
