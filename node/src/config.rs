//! Command-line flags of `kvnode`.
//!
//! Names and meanings follow etcd's flags wherever the two share a concept, so that people and
//! tools that know etcd can configure a node without a translation table. Every flag can also
//! be given in the environment as `KVNODE_<FLAG_IN_UPPER_SNAKE>` (for example
//! `KVNODE_INITIAL_CLUSTER`), which is how a StatefulSet pod receives per-pod values.
//!
//! This module is deliberately free of server types: the operator's tests parse the command
//! line it renders with [`NodeFlags`] to prove it only passes flags kvnode accepts.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// How `--auto-compaction-retention` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AutoCompactionMode {
    Periodic,
    Revision,
}

/// Whether this member bootstraps a new cluster or joins one that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitialClusterState {
    /// Every member listed in `--initial-cluster` starts together and elects a leader.
    New,
    /// The member was added through the Cluster API (MemberAdd) and joins the running cluster.
    Existing,
}

// Boolean flags take etcd's forms: `--flag`, `--flag=true`, `--flag=false` (Go's flag package;
// `--flag false` would not turn it off there either, so a value must follow `=`). Scripts, Helm
// values and systemd units written for etcd pass `--client-cert-auth=true`.

/// The flags of one kvnode member.
#[derive(Debug, Clone, Args)]
pub struct NodeFlags {
    /// Human-readable name of this member; must match its entry in `--initial-cluster`.
    #[arg(long, env = "KVNODE_NAME", default_value = "default")]
    pub name: String,

    /// Directory holding the member's redb databases (Raft log and key space).
    #[arg(long, env = "KVNODE_DATA_DIR", default_value = "default.kvnode")]
    pub data_dir: PathBuf,

    /// Comma-separated URLs to listen on for client (etcd v3 gRPC) traffic.
    #[arg(
        long,
        env = "KVNODE_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub listen_client_urls: Vec<String>,

    /// Comma-separated client URLs advertised to clients and other members.
    #[arg(
        long,
        env = "KVNODE_ADVERTISE_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub advertise_client_urls: Vec<String>,

    /// Comma-separated URLs to listen on for peer (Raft) traffic.
    #[arg(
        long,
        env = "KVNODE_LISTEN_PEER_URLS",
        default_value = "http://127.0.0.1:2380",
        value_delimiter = ','
    )]
    pub listen_peer_urls: Vec<String>,

    /// Comma-separated peer URLs of this member, advertised to the rest of the cluster.
    #[arg(
        long,
        env = "KVNODE_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://127.0.0.1:2380",
        value_delimiter = ','
    )]
    pub initial_advertise_peer_urls: Vec<String>,

    /// Initial membership for bootstrapping: `name1=http://host1:2380,name2=http://host2:2380`.
    #[arg(long, env = "KVNODE_INITIAL_CLUSTER", default_value = "default=http://127.0.0.1:2380")]
    pub initial_cluster: String,

    /// `new` to bootstrap the cluster in `--initial-cluster`, `existing` to join a running one.
    #[arg(long, env = "KVNODE_INITIAL_CLUSTER_STATE", value_enum, default_value = "new")]
    pub initial_cluster_state: InitialClusterState,

    /// Token mixed into the cluster and member ids, so two clusters with the same member names
    /// never accept each other's peers.
    #[arg(long, env = "KVNODE_INITIAL_CLUSTER_TOKEN", default_value = "raftkv-cluster")]
    pub initial_cluster_token: String,

    /// Comma-separated URLs to serve `/metrics`, `/health`, `/livez` and `/readyz` on.
    #[arg(
        long,
        env = "KVNODE_LISTEN_METRICS_URLS",
        default_value = "http://127.0.0.1:2381",
        value_delimiter = ','
    )]
    pub listen_metrics_urls: Vec<String>,

    /// Time (in milliseconds) of a heartbeat interval; also the Raft tick.
    #[arg(long, env = "KVNODE_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Time (in milliseconds) for an election to time out; randomized up to twice this value.
    #[arg(long, env = "KVNODE_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,

    /// Number of applied entries after which a snapshot is taken and the log compacted.
    #[arg(long, env = "KVNODE_SNAPSHOT_COUNT", default_value_t = 10_000)]
    pub snapshot_count: u64,

    /// Size (in bytes) the database may grow to before writes are refused (0 = 2 GiB default).
    #[arg(long, env = "KVNODE_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: u64,

    /// Largest client request (in bytes) the server accepts.
    #[arg(long, env = "KVNODE_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: u64,

    /// Largest number of operations allowed in one transaction.
    #[arg(long, env = "KVNODE_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: u64,

    /// How often a watcher that asked for progress notifications and got no event gets one
    /// (a duration such as `10m`, `30s`, `500ms`)
    #[arg(
        long,
        env = "KVNODE_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m",
        value_parser = parse_duration
    )]
    pub experimental_watch_progress_notify_interval: Duration,

    /// How often the leader records the time left of leases with a longer TTL through the log,
    /// so a restart or a new leader does not give them their whole TTL again (`0` turns it off)
    #[arg(
        long,
        env = "KVNODE_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL",
        default_value = "5m",
        value_parser = parse_duration
    )]
    pub experimental_lease_checkpoint_interval: Duration,

    /// `periodic` (keep `--auto-compaction-retention` worth of time) or `revision` (keep that
    /// many revisions) of history; the leader compacts the rest.
    #[arg(long, env = "KVNODE_AUTO_COMPACTION_MODE", value_enum, default_value = "periodic")]
    pub auto_compaction_mode: AutoCompactionMode,

    /// History to keep: for `periodic` a duration (`30m`) or a number of hours (`1`), for
    /// `revision` a number of revisions; `0` turns auto-compaction off.
    #[arg(long, env = "KVNODE_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,

    /// How often `revision` auto-compaction compacts: etcd's fixed 5 minutes. Hidden: it
    /// exists so tests of the revision mode need not wait 5 minutes, not for operators.
    #[arg(long, hide = true, default_value = "5m", value_parser = parse_duration)]
    pub auto_compaction_revision_interval: Duration,

    /// Restart this member, with its data, as the only member of its cluster (etcd's
    /// meaning): for a cluster that lost its quorum for good. Entries not known committed are
    /// discarded. Remove the flag once the other members are added back.
    #[arg(
        long,
        env = "KVNODE_FORCE_NEW_CLUSTER",
        default_value_t = false,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub force_new_cluster: bool,

    /// Before serving, compare this member's history with every reachable peer's (HashKV) and
    /// refuse to start if one differs.
    #[arg(
        long,
        env = "KVNODE_EXPERIMENTAL_INITIAL_CORRUPT_CHECK",
        default_value_t = false,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub experimental_initial_corrupt_check: bool,

    /// How often the leader compares every member's history with its own (HashKV) and raises a
    /// CORRUPT alarm for one that differs (`0` turns it off)
    #[arg(
        long,
        env = "KVNODE_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        default_value = "0s",
        value_parser = parse_duration
    )]
    pub experimental_corrupt_check_time: Duration,

    /// Verify every page checksum of both databases on every start (a full read of them), not
    /// only after an unclean shutdown, when it always happens.
    #[arg(
        long,
        env = "KVNODE_VERIFY_DB_ON_OPEN",
        default_value_t = false,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub verify_db_on_open: bool,

    /// Path to the client server TLS certificate file; `--listen-client-urls` must then be https://.
    #[arg(long, env = "KVNODE_CERT_FILE")]
    pub cert_file: Option<PathBuf>,

    /// Path to the client server TLS key file.
    #[arg(long, env = "KVNODE_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// Path to the client server TLS trusted CA certificate file; as in etcd, clients must then
    /// present a certificate signed by it.
    #[arg(long, env = "KVNODE_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,

    /// Require client certificates signed by `--trusted-ca-file`.
    #[arg(
        long,
        env = "KVNODE_CLIENT_CERT_AUTH",
        default_value_t = false,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub client_cert_auth: bool,

    /// Path to the peer server TLS certificate file, also presented to other members as client
    /// certificate; peer URLs must then be https://.
    #[arg(long, env = "KVNODE_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,

    /// Path to the peer server TLS key file.
    #[arg(long, env = "KVNODE_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,

    /// Path to the peer server TLS trusted CA file: other members (both ways) must hold a
    /// certificate signed by it. Required for https:// peer URLs.
    #[arg(long, env = "KVNODE_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,

    /// Require peer certificates signed by `--peer-trusted-ca-file`.
    #[arg(
        long,
        env = "KVNODE_PEER_CLIENT_CERT_AUTH",
        default_value_t = false,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub peer_client_cert_auth: bool,

    /// Log format: `json` for machines, `text` for people.
    #[arg(long, env = "KVNODE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// `kvnode dev`: a local cluster for trying raftkv out.
#[derive(Debug, Clone, Args)]
pub struct DevFlags {
    /// Number of members to run on loopback.
    #[arg(long, default_value_t = 3)]
    pub members: u16,
    /// Directory holding every member's data (`<dir>/<name>`).
    #[arg(long, default_value = ".dev-cluster")]
    pub dir: PathBuf,
    /// First client port; member i uses `base + 10*i` (client), `+1` (peer), `+2` (metrics).
    #[arg(long, default_value_t = 2379)]
    pub base_port: u16,
}

/// Subcommands besides running a single member.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run a local multi-member cluster on loopback in this process (Ctrl-C stops it).
    Dev(DevFlags),
    /// Inspect or restore a backup (what `etcdctl snapshot save` or Maintenance.Snapshot wrote).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

/// `kvnode snapshot ...`: etcdutl's offline snapshot commands for raftkv's backup format.
#[derive(Debug, Clone, Subcommand)]
pub enum SnapshotCommand {
    /// Verify a backup and print its hash (HashKV), revision, keys and size.
    Status(SnapshotStatusFlags),
    /// Create a member's data dir from a backup, as a member of a new cluster (new cluster id
    /// and membership; keys, history, revision and leases kept). Run it for every member with
    /// the same file, `--initial-cluster` and `--initial-cluster-token`, then start them.
    Restore(SnapshotRestoreFlags),
}

/// How `snapshot status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Simple,
    Table,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct SnapshotStatusFlags {
    /// The backup file.
    pub file: PathBuf,
    /// Output format.
    #[arg(short = 'w', long = "write-out", value_enum, default_value = "simple")]
    pub write_out: StatusFormat,
}

#[derive(Debug, Clone, Args)]
pub struct SnapshotRestoreFlags {
    /// The backup file.
    pub file: PathBuf,
    /// This member's name in `--initial-cluster`.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Data dir to create (must not exist or be empty); defaults to `<name>.kvnode`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The restored cluster's members: `name1=http://host1:2380,...`.
    #[arg(long, default_value = "default=http://127.0.0.1:2380")]
    pub initial_cluster: String,
    /// The restored cluster's token (give it a new one: the restored cluster is a new cluster).
    #[arg(long, default_value = "raftkv-cluster")]
    pub initial_cluster_token: String,
    /// This member's peer URLs (must match its `--initial-cluster` entry).
    #[arg(long, default_value = "http://127.0.0.1:2380", value_delimiter = ',')]
    pub initial_advertise_peer_urls: Vec<String>,
}

/// The `kvnode` command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kvnode",
    version,
    about = "A Raft-replicated key-value store that speaks the etcd v3 API",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub node: NodeFlags,
}

/// A malformed `--initial-cluster` value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid --initial-cluster entry {entry:?}: expected name=url")]
pub struct InitialClusterError {
    /// The offending comma-separated entry.
    pub entry: String,
}

/// A duration flag that is not a sequence of numbers with units.
#[derive(Debug, thiserror::Error)]
#[error("invalid duration {0:?}: expected numbers with units ns, us, ms, s, m or h, such as 10m or 1m30s")]
pub struct DurationError(String);

/// Reads a duration as etcd's flags (Go's `time.Duration`) write it: `10m`, `1m30s`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(text.to_string());
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(err());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(err)?;
        let number: f64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total += Duration::from_nanos((number * nanos_per_unit) as u64);
    }
    Ok(total)
}

/// A `--listen-*-urls` value that does not name an address to bind.
#[derive(Debug, thiserror::Error)]
#[error("invalid listen URL {url:?}: {source}")]
pub struct ListenUrlError {
    pub url: String,
    #[source]
    pub source: std::net::AddrParseError,
}

/// The address part of a `http://host:port` listen URL, for binding (`localhost` is the
/// loopback address).
pub fn listen_addr(url: &str) -> Result<std::net::SocketAddr, ListenUrlError> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport.parse().map_err(|source| ListenUrlError { url: url.to_string(), source })
}

/// Parses `name1=url1,name2=url2` into (name, peer URL) pairs, in order. A name may appear
/// several times to give a member several peer URLs, as in etcd.
pub fn parse_initial_cluster(value: &str) -> Result<Vec<(String, String)>, InitialClusterError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((name, url)) if !name.is_empty() && !url.is_empty() => {
                Ok((name.to_string(), url.to_string()))
            }
            _ => Err(InitialClusterError { entry: entry.to_string() }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(parse_duration("10m").ok(), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1m30s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms").ok(), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s").ok(), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0").ok(), Some(Duration::ZERO));
        for bad in ["", "10", "5x", "m", "1m30"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_addr_accepts_urls_and_rejects_garbage() {
        use std::net::SocketAddr;
        assert_eq!(listen_addr("http://127.0.0.1:2381").ok(), Some(SocketAddr::from(([127, 0, 0, 1], 2381))));
        assert_eq!(listen_addr("http://0.0.0.0:2379/").ok(), Some(SocketAddr::from(([0, 0, 0, 0], 2379))));
        assert_eq!(listen_addr("http://localhost:1").ok(), Some(SocketAddr::from(([127, 0, 0, 1], 1))));
        assert!(listen_addr("http://no-port").is_err());
    }

    #[test]
    fn etcd_style_flags_parse() {
        let cli = Cli::try_parse_from([
            "kvnode",
            "--name=n1",
            "--initial-cluster=n1=http://a:2380,n2=http://b:2380",
            "--initial-cluster-state=existing",
            "--listen-client-urls=http://0.0.0.0:2379,http://127.0.0.1:12379",
        ])
        .expect("flags parse");
        assert!(cli.command.is_none());
        assert_eq!(cli.node.name, "n1");
        assert_eq!(cli.node.initial_cluster_state, InitialClusterState::Existing);
        assert_eq!(cli.node.listen_client_urls.len(), 2);
    }

    #[test]
    fn boolean_flags_take_etcds_forms() {
        let parse = |args: &[&str]| {
            let mut all = vec!["kvnode"];
            all.extend(args);
            Cli::try_parse_from(all).map(|c| c.node)
        };
        let bare = parse(&["--client-cert-auth", "--force-new-cluster"]).expect("bare flags");
        assert!(bare.client_cert_auth && bare.force_new_cluster);
        let explicit =
            parse(&["--client-cert-auth=true", "--peer-client-cert-auth=false", "--verify-db-on-open=1"])
                .expect("flag=value");
        assert!(explicit.client_cert_auth && !explicit.peer_client_cert_auth && explicit.verify_db_on_open);
        let absent = parse(&[]).expect("no flags");
        assert!(!absent.client_cert_auth && !absent.experimental_initial_corrupt_check);
        assert!(parse(&["--force-new-cluster=maybe"]).is_err());
        // As in Go, a separate word is not the flag's value: it is a stray argument.
        assert!(parse(&["--force-new-cluster", "false"]).is_err());
    }

    #[test]
    fn unknown_flag_is_rejected() {
        assert!(Cli::try_parse_from(["kvnode", "--no-such-flag"]).is_err());
    }

    #[test]
    fn initial_cluster_parses_and_rejects_garbage() {
        let parsed = parse_initial_cluster("a=http://x:1, b=http://y:2").expect("valid");
        assert_eq!(parsed, vec![("a".into(), "http://x:1".into()), ("b".into(), "http://y:2".into())]);
        assert!(parse_initial_cluster("a=http://x:1,bogus").is_err());
        assert!(parse_initial_cluster("=http://x").is_err());
    }
}
