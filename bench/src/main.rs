//! `kvbench`: drives etcd and raftkv through the same etcd v3 client code and reports
//! throughput, latency percentiles and errors, plus the machine's floors (fdatasync, loopback
//! gRPC). `scripts/bench.sh` runs it against both systems and `kvbench report` prints the table.

mod cli;
mod commands;
mod conn;
mod disk;
mod error;
mod fsync_probe;
mod keys;
mod lease;
mod load;
mod maintenance;
mod ping;
mod plot;
mod ports;
mod procfs;
mod proto;
mod ready;
mod record;
mod report;
mod rss;
mod runner;
mod stats;
mod watch;
mod workload;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::BenchError;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvbench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<(), BenchError> {
    match command {
        Command::FsyncProbe(args) => commands::fsync_probe(args),
        Command::DiskUsage(args) => commands::disk_usage(args),
        Command::FreePorts { count } => commands::free_ports(count),
        Command::Report(args) => commands::report(args),
        Command::Plot(args) => commands::plot(args),
        Command::Run(args) => runtime()?.block_on(commands::run(args)),
        Command::Watch(args) => runtime()?.block_on(commands::watch(args)),
        Command::Lease(args) => runtime()?.block_on(commands::lease(args)),
        Command::Load(args) => runtime()?.block_on(commands::load(args)),
        Command::Leader(args) => runtime()?.block_on(commands::leader(args)),
        Command::WaitReady(args) => runtime()?.block_on(commands::wait_ready(args)),
        Command::Ping(args) => runtime()?.block_on(commands::ping(args)),
        Command::SnapshotSave(args) => runtime()?.block_on(commands::snapshot_save(args)),
        Command::DefragStall(args) => runtime()?.block_on(commands::defrag_stall(args)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
