//! `kv-operator`: `run` (the default) reconciles KVClusters; `crd` prints the CRD YAML.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use kv_operator::crd::crd_yaml;
use kv_operator::run::{RunConfig, run};

#[derive(Debug, Parser)]
#[command(
    name = "kv-operator",
    version,
    about = "Kubernetes operator for raftkv clusters",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `run`'s settings, accepted without the subcommand too (`run` is the default).
    #[command(flatten)]
    run: RunConfig,
    /// Log format: `json` (default, for log pipelines) or `text`.
    #[arg(long, env = "KV_OPERATOR_LOG_FORMAT", default_value = "json", global = true)]
    log_format: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator (the default).
    Run(Box<RunConfig>),
    /// Print the KVCluster CustomResourceDefinition as YAML.
    Crd,
}

fn init_logging(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "text" { builder.init() } else { builder.json().flatten_event(true).init() }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match cli.command {
        Some(Command::Crd) => {
            return match crd_yaml() {
                Ok(yaml) => {
                    print!("{yaml}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kv-operator: cannot render the CRD: {e}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Some(Command::Run(config)) => *config,
        None => cli.run,
    };
    init_logging(&cli.log_format);
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "kv-operator stopped");
            std::process::ExitCode::FAILURE
        }
    }
}
