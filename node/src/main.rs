//! `kvnode`: one raftkv member, or `kvnode dev` for a local cluster.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use kvnode::config::{Cli, Command};
use kvnode::member::{self, dev};
use tracing::error;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: redb allocates and frees a buffer per page it touches,
/// and with glibc that was about a tenth of the Raft thread's CPU under write load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: `docker logs`, journald and files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Why `kvnode` exits non-zero.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Start(#[from] member::StartError),
    /// The member stopped itself: serving on would serve wrong or stale data.
    #[error("member failed: {0}")]
    Failed(std::sync::Arc<kvnode::driver::FatalError>),
    /// An offline command (`kvnode snapshot ...`) failed.
    #[error(transparent)]
    Snapshot(#[from] kvnode::offline::snapshot::SnapshotError),
    #[error("the command's thread failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

async fn run(cli: Cli) -> Result<(), RunError> {
    match cli.command {
        Some(Command::Dev(dev_flags)) => Ok(dev::run(dev_flags, cli.node).await?),
        Some(Command::Snapshot(command)) => {
            let out = tokio::task::spawn_blocking(move || kvnode::offline::snapshot::run(&command)).await??;
            print!("{out}");
            Ok(())
        }
        None => {
            let listeners = member::Listeners::bind(&cli.node).await?;
            let running = member::start(cli.node, listeners).await?;
            tokio::select! {
                () = terminated() => {
                    running.stop().await;
                    Ok(())
                }
                fatal = running.failed() => Err(RunError::Failed(fatal)),
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.node.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "kvnode failed");
            eprintln!("kvnode: {e}");
            ExitCode::FAILURE
        }
    }
}
