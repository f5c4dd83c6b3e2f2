//! The server: drives the consensus core with real time, disk and network, and serves the
//! etcd v3 API, the peer protocol and the HTTP health/metrics endpoints.

pub mod cluster_service;
pub mod context;
pub mod dev;
pub mod errors;
pub mod health;
pub mod http;
pub mod identity;
pub mod kv_service;
pub mod kv_syncer;
pub mod maintenance_service;
pub mod member;
pub mod metrics;
pub mod peer_api;
pub mod raft_loop;
pub mod tls;
pub mod transport;
