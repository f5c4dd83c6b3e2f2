//! The errors kvbench reports. One type, so every subcommand can return `Result<_, BenchError>`
//! and `main` can print the cause and pick the exit code in one place.

use std::path::PathBuf;

/// Everything that can stop a kvbench subcommand or fail a single benchmark operation.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The etcd client returned an error (connection refused, gRPC status, ...).
    #[error("etcd client: {0}")]
    Etcd(#[from] etcd_client::Error),

    /// A plain gRPC call (the ping floor) failed.
    #[error("grpc: {0}")]
    Grpc(#[from] tonic::Status),

    /// A tonic transport (connect, serve) failed.
    #[error("grpc transport: {0}")]
    Transport(#[from] tonic::transport::Error),

    /// An operation did not finish within the request timeout.
    #[error("operation timed out after {0:?}")]
    Timeout(std::time::Duration),

    /// A read came back without the data the workload had preloaded, so the figures would
    /// measure something else than intended (an empty key costs less to serve).
    #[error("unexpected response: {0}")]
    Unexpected(String),

    /// A keep-alive was answered with no time left: the lease the client kept alive expired or
    /// was revoked under it, so the run no longer measures renewals.
    #[error("lease {0:x} is gone (a keep-alive answered TTL <= 0)")]
    LeaseGone(i64),

    /// The flags given cannot describe a meaningful run.
    #[error("invalid arguments: {0}")]
    Config(String),

    /// No endpoint reported itself as the Raft leader.
    #[error("no leader among endpoints {0:?}")]
    NoLeader(Vec<String>),

    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A socket or other I/O without a meaningful path failed.
    #[error("i/o: {0}")]
    BareIo(#[from] std::io::Error),

    /// A results file held a line that is not a kvbench record.
    #[error("results line {line}: {source}")]
    Parse {
        /// 1-based line number in the results file.
        line: usize,
        /// The JSON error.
        source: serde_json::Error,
    },

    /// Writing a JSON record failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),

    /// The run finished but its result fails the `--check` criteria (errors or no throughput).
    #[error("check failed: {0}")]
    CheckFailed(String),

    /// Drawing a plot failed.
    #[error("plot {plot}: {source}")]
    Plot {
        /// The file the plot was drawn for.
        plot: String,
        /// What plotters said.
        source: plotters::drawing::DrawingAreaErrorKind<std::io::Error>,
    },

    /// A server did not become ready before the deadline.
    #[error("not ready after {waited:?}: {last_error}")]
    NotReady {
        /// How long kvbench waited.
        waited: std::time::Duration,
        /// The last error seen while polling.
        last_error: String,
    },
}

impl BenchError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
