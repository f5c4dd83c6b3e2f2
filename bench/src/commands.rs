//! The subcommands: each wires its flags to the modules that do the work and emits a record.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cli::{
    DefragStallArgs, DiskUsageArgs, EndpointArgs, FsyncProbeArgs, LeaseArgs, LoadArgs, PingArgs, PlotArgs,
    ReportArgs, RunArgs, SnapshotSaveArgs, WaitReadyArgs, WatchArgs,
};
use crate::conn::Pool;
use crate::error::BenchError;
use crate::keys::KeySource;
use crate::lease::{LeasePlan, Steps};
use crate::load::{LoadSpec, LoadWorker};
use crate::record::{
    self, DefragRecord, DiskRecord, FloorRecord, LeaseRecord, LoadRecord, Record, RestartRecord, RunRecord,
    SnapshotRecord, StepLatencies, WatchRecord,
};
use crate::rss::RssSampler;
use crate::runner::{self, Plan, Stop};
use crate::watch::WatchPlan;
use crate::workload::{EtcdWorker, Shape};
use crate::{conn, disk, fsync_probe, keys, lease, maintenance, ping, plot, procfs, ready, report, watch};

/// Default measured time when neither `--ops` nor `--duration` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Prints a record as JSON on stdout when asked; the human line always goes to stderr.
fn output(json: bool, human: String, record: Record) -> Result<(), BenchError> {
    eprintln!("{human}");
    if json { record::emit(&record) } else { Ok(()) }
}

/// `kvbench run`.
pub async fn run(args: RunArgs) -> Result<(), BenchError> {
    let shape = Shape {
        workload: args.workload,
        key_space: args.key_space,
        value_size: args.value_size,
        range_len: args.range_len,
        key_order: args.key_order,
    };
    shape.validate()?;
    if args.clients == 0 {
        return Err(BenchError::Config("--clients must be at least 1".into()));
    }
    let timeout = args.endpoints.request_timeout;
    let pool =
        Pool::open(&args.endpoints.endpoints, args.target, usize_of(args.connections)?, timeout).await?;
    let keys = KeySource::new(args.key_order);
    let workers = (0..args.clients)
        .map(|i| Ok(EtcdWorker::new(pool.kv_for(i)?, shape, keys.clone(), args.seed, i)))
        .collect::<Result<Vec<_>, BenchError>>()?;
    let stop = match (args.ops, args.duration) {
        (Some(n), _) => Stop::Ops(n),
        (None, Some(d)) => Stop::Duration(d),
        (None, None) => Stop::Duration(DEFAULT_DURATION),
    };
    let plan = Plan { warmup: args.warmup, stop, op_timeout: timeout, max_duration: args.max_duration };
    let workers = runner::warm_up(workers, &plan).await?;
    let (stats, cpu, _) = runner::measure_with_cpu(workers, &plan, &args.session.server_pids).await?;
    let rss = if args.session.server_pids.is_empty() {
        None
    } else {
        procfs::total_peak_rss_kib(&args.session.server_pids)
    };
    let rec = RunRecord {
        system: args.output.label.clone(),
        workload: args.workload,
        clients: args.clients,
        connections: args.connections,
        target: args.target,
        key_space: args.key_space,
        key_order: args.key_order,
        value_size: args.value_size as u64,
        range_len: args.range_len,
        round: args.session.round,
        seed: args.seed,
        elapsed_s: stats.elapsed.as_secs_f64(),
        ops: stats.ops,
        errors: stats.errors,
        conflicts: stats.conflicts,
        throughput: stats.throughput(),
        latency: stats.latencies.summary(),
        server_peak_rss_kib: rss,
        server_cpu_s: cpu.servers.map(|d| d.as_secs_f64()),
        server_cpu_us_per_op: procfs::micros_per_op(cpu.servers, stats.ops),
        client_cpu_s: cpu.client.map(|d| d.as_secs_f64()),
        client_cpu_us_per_op: procfs::micros_per_op(cpu.client, stats.ops),
        first_error: stats.first_error.clone(),
    };
    let l = &rec.latency;
    let human = format!(
        "{} {} clients={} conns={} target={} keys={}: {:.0} ops/s, p50 {:.3} ms, p99 {:.3} ms, \
         p99.9 {:.3} ms, {} ops, {} errors, {} conflicts in {:.2} s{}{}",
        rec.system,
        rec.workload.name(),
        rec.clients,
        rec.connections,
        rec.target.name(),
        rec.key_order.name(),
        rec.throughput,
        l.p50_ms,
        l.p99_ms,
        l.p999_ms,
        rec.ops,
        rec.errors,
        rec.conflicts,
        rec.elapsed_s,
        rss.map_or(String::new(), |k| format!(", servers' peak RSS {} MiB", k / 1024)),
        cpu_and_error_notes(
            rec.server_cpu_us_per_op,
            rec.client_cpu_us_per_op,
            "op",
            rec.first_error.as_deref()
        ),
    );
    let failed = check(&rec);
    output(args.output.json, human, Record::Run(rec))?;
    checked(args.session.check, failed)
}

/// The end of a summary line: the servers' and kvbench's CPU per `unit` (each left out
/// without a reading), then the first error, if any.
fn cpu_and_error_notes(
    servers_us: Option<f64>,
    client_us: Option<f64>,
    unit: &str,
    first_error: Option<&str>,
) -> String {
    let cpu = |what: &str, us: Option<f64>| {
        us.map_or(String::new(), |us| format!(", {what} CPU {us:.0} µs/{unit}"))
    };
    format!(
        "{}{}{}",
        cpu("servers'", servers_us),
        cpu("client", client_us),
        first_error.map_or(String::new(), |e| format!(" (first error: {e})"))
    )
}

/// The run's result under `--check`: an error if the check found something and was asked for.
fn checked(check: bool, failed: Option<String>) -> Result<(), BenchError> {
    match failed {
        Some(why) if check => Err(BenchError::CheckFailed(why)),
        _ => Ok(()),
    }
}

/// `kvbench watch`.
pub async fn watch(args: WatchArgs) -> Result<(), BenchError> {
    let plan = WatchPlan {
        watchers: args.watchers,
        streams: args.streams,
        placement: args.watch_on,
        rate: args.rate,
        writers: args.writers,
        value_size: args.value_size,
        warmup: args.warmup,
        duration: args.duration,
        drain_timeout: args.drain_timeout,
        request_timeout: args.endpoints.request_timeout,
        server_pids: args.session.server_pids.clone(),
        seed: args.seed,
    };
    let stats = watch::run(&args.endpoints.endpoints, &plan).await?;
    let rec = WatchRecord {
        system: args.output.label.clone(),
        workload: args.workload,
        watchers: args.watchers,
        streams: stats.streams,
        watch_on: args.watch_on,
        writers: args.writers,
        rate: args.rate,
        value_size: args.value_size as u64,
        round: args.session.round,
        elapsed_s: stats.elapsed.as_secs_f64(),
        puts: stats.puts,
        puts_per_s: stats.puts_per_s(),
        put_latency: stats.put_latencies.summary(),
        events: stats.events,
        events_per_s: stats.events_per_s(),
        offered_events_per_s: args.watchers as f64 * stats.puts_per_s(),
        latency: stats.latencies.summary(),
        missing: stats.missing,
        duplicates: stats.duplicates,
        errors: stats.errors,
        server_rss_before_kib: stats.rss_before_kib,
        server_peak_rss_kib: stats.rss_peak_kib,
        server_cpu_s: stats.cpu.servers.map(|d| d.as_secs_f64()),
        server_cpu_us_per_event: procfs::micros_per_op(stats.cpu.servers, stats.events),
        client_cpu_s: stats.cpu.client.map(|d| d.as_secs_f64()),
        client_cpu_us_per_event: procfs::micros_per_op(stats.cpu.client, stats.events),
        first_error: stats.first_error,
    };
    let l = &rec.latency;
    let human = format!(
        "{} {} watchers={} streams={} on={}: {:.0} puts/s (asked {}), {:.0} events/s ({:.1} % of offered), \
         event p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, {} missing, {} duplicates, {} errors in {:.2} s{}{}",
        rec.system,
        rec.workload.name(),
        rec.watchers,
        rec.streams,
        rec.watch_on.name(),
        rec.puts_per_s,
        rec.rate,
        rec.events_per_s,
        100.0 * rec.delivered_share(),
        l.p50_ms,
        l.p99_ms,
        l.p999_ms,
        rec.missing,
        rec.duplicates,
        rec.errors,
        rec.elapsed_s,
        rss_note(rec.server_rss_before_kib, rec.server_peak_rss_kib),
        cpu_and_error_notes(
            rec.server_cpu_us_per_event,
            rec.client_cpu_us_per_event,
            "event",
            rec.first_error.as_deref()
        ),
    );
    let failed = check_watch(&rec);
    output(args.output.json, human, Record::Watch(rec))?;
    checked(args.session.check, failed)
}

/// Why a watch run fails `--check`, if it does: any error, any missing or duplicated event, or
/// nothing delivered.
fn check_watch(rec: &WatchRecord) -> Option<String> {
    let what = format!("{} {}", rec.system, rec.workload.name());
    if rec.errors > 0 {
        Some(format!("{what}: {} errors", rec.errors))
    } else if rec.missing > 0 || rec.duplicates > 0 {
        Some(format!("{what}: {} missing and {} duplicated events", rec.missing, rec.duplicates))
    } else if rec.puts == 0 || rec.events == 0 || rec.events_per_s <= 0.0 {
        Some(format!("{what}: zero throughput ({} puts, {} events)", rec.puts, rec.events))
    } else {
        None
    }
}

/// Why a run fails `--check`, if it does.
fn check(rec: &RunRecord) -> Option<String> {
    check_ops(&format!("{} {}", rec.system, rec.workload.name()), rec.errors, rec.ops, rec.throughput)
}

/// Why `what`, which had `errors` and completed `ops` at `per_s`, fails `--check`: any error,
/// or nothing done.
fn check_ops(what: &str, errors: u64, ops: u64, per_s: f64) -> Option<String> {
    if errors > 0 {
        Some(format!("{what}: {errors} errors"))
    } else if ops == 0 || per_s <= 0.0 {
        Some(format!("{what}: zero throughput"))
    } else {
        None
    }
}

/// `kvbench lease`.
pub async fn lease(args: LeaseArgs) -> Result<(), BenchError> {
    let plan = LeasePlan {
        workload: args.workload,
        clients: args.clients,
        connections: args.connections,
        target: args.target,
        ttl: args.ttl,
        value_size: args.value_size,
        warmup: args.warmup,
        duration: args.duration,
        request_timeout: args.endpoints.request_timeout,
        server_pids: args.session.server_pids.clone(),
        seed: args.seed,
    };
    let stats = lease::run(&args.endpoints.endpoints, &plan).await?;
    let (run, cpu, memory) = (&stats.run, stats.cpu, stats.memory);
    let rec = LeaseRecord {
        system: args.output.label.clone(),
        workload: args.workload,
        clients: args.clients,
        connections: args.connections,
        target: args.target,
        ttl: args.ttl,
        value_size: args.value_size as u64,
        round: args.session.round,
        elapsed_s: run.elapsed.as_secs_f64(),
        ops: run.ops,
        ops_per_s: run.throughput(),
        latency: run.latencies.summary(),
        steps: stats.steps.as_ref().map(step_latencies),
        errors: run.errors + stats.cleanup.errors,
        server_rss_before_kib: memory.before_kib,
        server_peak_rss_kib: memory.peak_kib,
        server_cpu_s: cpu.servers.map(|d| d.as_secs_f64()),
        server_cpu_us_per_op: procfs::micros_per_op(cpu.servers, run.ops),
        client_cpu_s: cpu.client.map(|d| d.as_secs_f64()),
        client_cpu_us_per_op: procfs::micros_per_op(cpu.client, run.ops),
        first_error: run.first_error.clone().or(stats.cleanup.first_error),
    };
    let (l, unit) = (&rec.latency, rec.workload.ops());
    let steps = rec.steps.as_ref().map_or(String::new(), |s| {
        format!(
            " (grant p50 {:.3} / p99 {:.3}, put {:.3} / {:.3}, revoke {:.3} / {:.3} ms)",
            s.grant.p50_ms, s.grant.p99_ms, s.put.p50_ms, s.put.p99_ms, s.revoke.p50_ms, s.revoke.p99_ms
        )
    });
    let human = format!(
        "{} {} clients={} conns={} target={} ttl={}: {:.0} {unit}/s, p50 {:.3} ms, p99 {:.3} ms, \
         p99.9 {:.3} ms{steps}, {} {unit}, {} errors in {:.2} s{}{}",
        rec.system,
        rec.workload.name(),
        rec.clients,
        rec.connections,
        rec.target.name(),
        rec.ttl,
        rec.ops_per_s,
        l.p50_ms,
        l.p99_ms,
        l.p999_ms,
        rec.ops,
        rec.errors,
        rec.elapsed_s,
        rss_note(rec.server_rss_before_kib, rec.server_peak_rss_kib),
        cpu_and_error_notes(
            rec.server_cpu_us_per_op,
            rec.client_cpu_us_per_op,
            "op",
            rec.first_error.as_deref()
        ),
    );
    let failed =
        check_ops(&format!("{} {}", rec.system, rec.workload.name()), rec.errors, rec.ops, rec.ops_per_s);
    output(args.output.json, human, Record::Lease(rec))?;
    checked(args.session.check, failed)
}

/// The percentiles of each step of the cycles.
fn step_latencies(steps: &Steps) -> StepLatencies {
    StepLatencies { grant: steps.grant.summary(), put: steps.put.summary(), revoke: steps.revoke.summary() }
}

/// `, servers' RSS B → peak P MiB`, or nothing without both readings.
fn rss_note(before_kib: Option<u64>, peak_kib: Option<u64>) -> String {
    let mib = |kib: u64| kib as f64 / 1024.0;
    match (before_kib, peak_kib) {
        (Some(before), Some(peak)) => {
            format!(", servers' RSS {:.0} → peak {:.0} MiB", mib(before), mib(peak))
        }
        _ => String::new(),
    }
}

/// `kvbench load`.
pub async fn load(args: LoadArgs) -> Result<(), BenchError> {
    if args.clients == 0 || args.batch == 0 {
        return Err(BenchError::Config("--clients and --batch must be at least 1".into()));
    }
    let spec = LoadSpec { keys: args.keys, batch: args.batch, value_size: args.value_size };
    let timeout = args.endpoints.request_timeout;
    let pool =
        Pool::open(&args.endpoints.endpoints, args.target, usize_of(args.connections)?, timeout).await?;
    let next = Arc::new(AtomicU64::new(0));
    let workers = (0..args.clients)
        .map(|i| Ok(LoadWorker::new(pool.kv_for(i)?, spec, next.clone(), i)))
        .collect::<Result<Vec<_>, BenchError>>()?;
    let plan = Plan {
        warmup: Duration::ZERO,
        stop: Stop::Ops(spec.batches()),
        op_timeout: timeout,
        max_duration: Duration::from_secs(3600),
    };
    let stats = runner::run(workers, plan).await?;
    let rec = LoadRecord {
        system: args.output.label.clone(),
        keys: args.keys,
        elapsed_s: stats.elapsed.as_secs_f64(),
        errors: stats.errors,
    };
    let human = format!(
        "{}: loaded {} keys in {:.1} s ({:.0} keys/s), {} failed txns{}",
        rec.system,
        rec.keys,
        rec.elapsed_s,
        rec.keys as f64 / rec.elapsed_s.max(f64::EPSILON),
        rec.errors,
        stats.first_error.as_ref().map_or(String::new(), |e| format!(" (first error: {e})")),
    );
    let errors = rec.errors;
    output(args.output.json, human, Record::Load(rec))?;
    if errors > 0 {
        return Err(BenchError::CheckFailed(format!("load had {errors} failed txns")));
    }
    Ok(())
}

/// `kvbench leader`.
pub async fn leader(args: EndpointArgs) -> Result<(), BenchError> {
    // Asked right after a member restarted, the cluster may still be electing (the restart
    // test kills member 3, which may have led): ask again until a member answers as leader.
    let deadline = std::time::Instant::now() + LEADER_WAIT;
    loop {
        match conn::leader(&args.endpoints, args.request_timeout).await {
            Ok(leader) => {
                println!("{leader}");
                return Ok(());
            }
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(LEADER_RETRY).await,
        }
    }
}

/// How long `kvbench leader` waits for an election: several election timeouts of the harness's
/// clusters (1 s, randomized up to 2 s).
const LEADER_WAIT: Duration = Duration::from_secs(15);
const LEADER_RETRY: Duration = Duration::from_millis(100);

/// `kvbench wait-ready`.
pub async fn wait_ready(args: WaitReadyArgs) -> Result<(), BenchError> {
    let probe = ready::Probe {
        key: args.key_index.map(keys::key),
        linearizable: args.linearizable,
        interval: Duration::from_millis(args.interval_ms),
        timeout: args.timeout,
    };
    let waited = ready::wait_all(&args.endpoints, &probe).await?;
    let ready_ms = match args.started_at_ns {
        Some(start) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            now.saturating_sub(start) as f64 / 1e6
        }
        None => waited.as_secs_f64() * 1000.0,
    };
    let rec = RestartRecord {
        system: args.output.label.clone(),
        keys: args.keys,
        ready_ms,
        stopped_by: args.stopped_by,
    };
    let human = format!("{}: {} ready after {:.0} ms", rec.system, args.endpoints.join(","), ready_ms);
    output(args.output.json, human, Record::Restart(rec))
}

/// `kvbench snapshot-save`.
pub async fn snapshot_save(args: SnapshotSaveArgs) -> Result<(), BenchError> {
    let memory = RssSampler::start(&args.server_pids);
    let saved = maintenance::snapshot_save(&args.endpoint, &args.out, args.timeout).await?;
    let memory = memory.finish().await?;
    let rec = SnapshotRecord {
        system: args.output.label.clone(),
        keys: args.keys,
        bytes: saved.bytes,
        elapsed_s: saved.elapsed.as_secs_f64(),
        server_rss_before_kib: memory.before_kib,
        server_peak_rss_kib: memory.peak_kib,
    };
    let human = format!(
        "{}: snapshot of {} saved, {:.1} MiB in {:.2} s{}",
        rec.system,
        args.endpoint,
        rec.bytes as f64 / (1024.0 * 1024.0),
        rec.elapsed_s,
        rss_note(rec.server_rss_before_kib, rec.server_peak_rss_kib),
    );
    output(args.output.json, human, Record::SnapshotSave(rec))
}

/// `kvbench defrag-stall`.
pub async fn defrag_stall(args: DefragStallArgs) -> Result<(), BenchError> {
    let plan = maintenance::DefragPlan {
        writers: args.writers,
        settle: args.settle,
        key_space: args.keys,
        value_size: args.value_size,
        request_timeout: args.request_timeout,
    };
    let stall = maintenance::defrag_stall(&args.endpoint, &args.others, plan).await?;
    let rec =
        DefragRecord { system: args.output.label.clone(), keys: args.keys, writers: args.writers, stall };
    let group = |name: &str, w: &maintenance::WritersSeen| {
        format!(
            "{name}: puts {:.0}/s before, {:.0}/s during, longest in flight during it {:.0} ms, {} failed{}",
            w.puts_per_s_before,
            w.puts_per_s_during,
            w.during.max_ms,
            w.errors,
            w.first_error.as_ref().map_or(String::new(), |e| format!(" (first: {e})"))
        )
    };
    let mut human = format!(
        "{}: defrag of {} took {:.0} ms ({:.0} → {:.0} MiB); {}",
        rec.system,
        args.endpoint,
        rec.stall.defrag_ms,
        rec.stall.db_size_before as f64 / (1024.0 * 1024.0),
        rec.stall.db_size_after as f64 / (1024.0 * 1024.0),
        group("its writers", &rec.stall.member),
    );
    if let Some(others) = &rec.stall.others {
        human.push_str(&format!("; {}", group("the other members' writers", others)));
    }
    let errors = rec.stall.member.errors + rec.stall.others.as_ref().map_or(0, |o| o.errors);
    output(args.output.json, human, Record::Defrag(rec))?;
    if args.check && errors > 0 {
        return Err(BenchError::CheckFailed(format!("{errors} puts failed around the defragmentation")));
    }
    Ok(())
}

/// `kvbench fsync-probe`.
pub fn fsync_probe(args: FsyncProbeArgs) -> Result<(), BenchError> {
    let latencies = fsync_probe::probe(&args.dir, args.count, args.block_size, args.spin)?;
    let cpus = if args.spin { "CPUs kept busy" } else { "CPUs idle" };
    let rec = FloorRecord {
        subject: format!("{}, {cpus}", args.dir.display()),
        samples: latencies.count(),
        latency: latencies.summary(),
    };
    let human = format!(
        "fdatasync {} B in {}: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms ({} samples)",
        args.block_size,
        rec.subject,
        rec.latency.p50_ms,
        rec.latency.p99_ms,
        rec.latency.p999_ms,
        rec.samples
    );
    output(args.json, human, Record::Fsync(rec))
}

/// `kvbench ping`.
pub async fn ping(args: PingArgs) -> Result<(), BenchError> {
    let server = ping::EchoServer::start()?;
    let latencies = ping::measure(server.addr(), args.count, args.warmup, args.payload).await?;
    server.stop().await?;
    let rec = FloorRecord {
        subject: format!("127.0.0.1, {} B payload", args.payload),
        samples: latencies.count(),
        latency: latencies.summary(),
    };
    let human = format!(
        "loopback gRPC echo ({}): p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms ({} samples)",
        rec.subject, rec.latency.p50_ms, rec.latency.p99_ms, rec.latency.p999_ms, rec.samples
    );
    output(args.json, human, Record::Ping(rec))
}

/// `kvbench disk-usage`.
pub fn disk_usage(args: DiskUsageArgs) -> Result<(), BenchError> {
    let usage = disk::usage(&args.dir)?;
    let rec = DiskRecord {
        system: args.output.label.clone(),
        keys: args.keys,
        allocated_bytes: usage.allocated,
        apparent_bytes: usage.apparent,
    };
    let human = format!(
        "{}: {} holds {:.1} MiB on disk ({:.1} MiB apparent)",
        rec.system,
        args.dir.display(),
        usage.allocated as f64 / 1048576.0,
        usage.apparent as f64 / 1048576.0
    );
    output(args.output.json, human, Record::Disk(rec))
}

/// `kvbench free-ports`.
pub fn free_ports(count: usize) -> Result<(), BenchError> {
    let ports = crate::ports::free_ports(count)?;
    println!("{}", ports.iter().map(u16::to_string).collect::<Vec<_>>().join(" "));
    Ok(())
}

/// `kvbench report`.
pub fn report(args: ReportArgs) -> Result<(), BenchError> {
    let file = std::fs::File::open(&args.input).map_err(|e| BenchError::io(&args.input, e))?;
    let records = record::read_all(std::io::BufReader::new(file))?;
    let systems = report::Systems { baseline: args.baseline, candidate: args.candidate };
    print!("{}", report::render(&records, &systems));
    Ok(())
}

/// `kvbench plot`: writes the SVG files and prints each one's path on stdout.
pub fn plot(args: PlotArgs) -> Result<(), BenchError> {
    let file = std::fs::File::open(&args.input).map_err(|e| BenchError::io(&args.input, e))?;
    let records = record::read_all(std::io::BufReader::new(file))?;
    let options = plot::PlotOptions {
        systems: report::Systems { baseline: args.baseline, candidate: args.candidate },
        latency_clients: args.latency_clients,
    };
    let written = plot::write_all(&records, &options, &args.out_dir)?;
    if written.is_empty() {
        eprintln!("kvbench plot: {} holds no run to draw", args.input.display());
    }
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

fn usize_of(n: u64) -> Result<usize, BenchError> {
    usize::try_from(n).map_err(|_| BenchError::Config(format!("{n} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::Target;
    use crate::stats::LatencySummary;
    use crate::workload::Workload;

    fn rec(ops: u64, errors: u64) -> RunRecord {
        RunRecord {
            system: "etcd".into(),
            workload: Workload::Put,
            clients: 1,
            connections: 1,
            target: Target::All,
            key_space: 1,
            key_order: crate::keys::KeyOrder::Random,
            value_size: 1,
            range_len: 1,
            round: 1,
            seed: 1,
            elapsed_s: 1.0,
            ops,
            errors,
            conflicts: 0,
            throughput: ops as f64,
            latency: LatencySummary::default(),
            server_peak_rss_kib: None,
            server_cpu_s: None,
            server_cpu_us_per_op: None,
            client_cpu_s: None,
            client_cpu_us_per_op: None,
            first_error: None,
        }
    }

    #[test]
    fn watch_check_fails_on_missing_duplicated_or_no_events() {
        use crate::watch::WatchWorkload;
        let ok = WatchRecord::example("raftkv", WatchWorkload::WatchFanout);
        assert_eq!(check_watch(&ok), None);
        assert_eq!(ok.delivered_share(), 1.0);
        let missing = WatchRecord { missing: 3, ..ok.clone() };
        assert!(check_watch(&missing).unwrap().contains("3 missing and 0 duplicated"));
        let dup = WatchRecord { duplicates: 1, ..ok.clone() };
        assert!(check_watch(&dup).unwrap().contains("1 duplicated"));
        let broken = WatchRecord { errors: 2, ..ok.clone() };
        assert!(check_watch(&broken).unwrap().contains("2 errors"));
        let silent = WatchRecord { events: 0, events_per_s: 0.0, ..ok.clone() };
        assert!(check_watch(&silent).unwrap().contains("zero throughput"));
        let idle = WatchRecord { puts: 0, offered_events_per_s: 0.0, ..ok };
        assert!(check_watch(&idle).unwrap().contains("zero throughput"));
        assert_eq!(idle.delivered_share(), 0.0);
    }

    #[test]
    fn check_fails_on_errors_or_zero_throughput() {
        assert_eq!(check(&rec(10, 0)), None);
        assert!(check(&rec(10, 1)).unwrap().contains("1 errors"));
        assert!(check(&rec(0, 0)).unwrap().contains("zero throughput"));
        assert_eq!(check_ops("raftkv lease-cycle", 0, 10, 5.0), None);
        assert_eq!(
            check_ops("raftkv lease-cycle", 2, 10, 5.0).as_deref(),
            Some("raftkv lease-cycle: 2 errors")
        );
        assert!(check_ops("etcd lease-keepalive", 0, 10, 0.0).unwrap().contains("zero throughput"));
    }

    #[test]
    fn summaries_end_with_the_cpu_readings_there_are_and_the_first_error() {
        assert_eq!(
            cpu_and_error_notes(Some(150.4), Some(20.0), "op", Some("boom")),
            ", servers' CPU 150 µs/op, client CPU 20 µs/op (first error: boom)"
        );
        assert_eq!(cpu_and_error_notes(None, Some(2.0), "event", None), ", client CPU 2 µs/event");
    }

    #[test]
    fn memory_notes_need_both_readings() {
        assert_eq!(rss_note(Some(2048), Some(3584)), ", servers' RSS 2 → peak 4 MiB");
        assert_eq!(rss_note(None, Some(3584)), "");
    }
}
