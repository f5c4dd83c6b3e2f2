//! raftkv's node: a Raft-replicated key-value store on redb that serves the etcd v3 API.
//!
//! Layers, each depending only on the ones below it:
//! - [`offline`]: commands on files rather than a running member (`kvnode snapshot ...`);
//! - [`member`]: one member's lifecycle (start, identity, joining, publishing, stop; `dev`,
//!   and a data dir restored from a backup);
//! - [`gateway`]: etcd's HTTP/JSON gateway over the same services, on the client port;
//! - [`api`]: the etcd v3 services, one file each, and etcd's errors;
//! - [`http`]: `/metrics`, `/health`, `/livez`, `/readyz`;
//! - [`watch`]: watchers and the hub feeding them from the key space's history;
//! - [`lease`]: the lessor, which keeps lease time on the leader;
//! - [`driver`]: the Raft loop turning the core with real time, disk and network, its handle,
//!   the wait registry, apply, compaction and the peer transport;
//! - [`storage`]: the member's redb databases (Raft log; MVCC key space and membership);
//! - [`raft`]: the consensus core, a deterministic state machine with no I/O (its own crate);
//! - [`peer_client`]: dialling other members' Peer service (lease time, hash checks);
//! - [`proto`], [`config`], [`metrics`], [`tls`]: wire types, flags, metrics and TLS settings
//!   shared by the layers above.

pub mod api;
pub mod config;
pub mod driver;
pub mod gateway;
pub mod http;
pub mod lease;
pub mod member;
pub mod metrics;
pub mod offline;
pub mod peer_client;
pub mod proto;
/// The consensus core (crate `raft`), re-exported so `kvnode::raft` names it.
pub use raft;
pub mod storage;
pub mod tls;
pub mod watch;
