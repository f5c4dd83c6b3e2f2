//! etcd's HTTP/JSON gateway on the client port (what grpc-gateway serves for etcd under
//! `/v3/`): every client RPC as `POST /v3/<service>/<method>` with the request as JSON and the
//! response as JSON, in the gRPC-gateway mapping etcd uses (proto field names, 64-bit integers
//! as strings, bytes as base64, enums by name, zero values left out). Streams (watch, lease
//! keep-alive, election observe, snapshot) answer one `{"result": ...}` object per message,
//! newline-separated; watch and keep-alive read a sequence of JSON requests from the body.
//!
//! The gateway calls the same service objects as gRPC, in process, so answers, errors and
//! limits are the same; a gRPC failure becomes etcd's JSON error with the HTTP status
//! grpc-gateway gives its code.

mod codec;
mod error;
mod routes;
mod stream;

pub use error::GatewayError;
pub use routes::{Services, router};
