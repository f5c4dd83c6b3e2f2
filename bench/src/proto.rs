//! Generated protobuf code. Only generated code lives here.

/// kvbench's own echo service (`bench/proto/ping.proto`), used for the loopback floor.
#[allow(clippy::all, missing_docs)]
pub mod ping {
    tonic::include_proto!("kvbench.ping");
}
