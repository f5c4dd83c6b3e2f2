//! `kvnode`: one raftkv member, or `kvnode dev` for a local cluster.

use clap::Parser;
use kvnode::config::Cli;

fn main() {
    let cli = Cli::parse();
    eprintln!("kvnode: server not yet wired: {cli:?}");
    std::process::exit(2);
}
