//! Process-level fault injection: real `kvnode` processes on loopback with real data dirs, a
//! concurrent get/put/delete/CAS workload on a few keys recorded as a history, and a seeded nemesis
//! that kills -9 followers and leaders, pauses members with SIGSTOP, restarts them from their data
//! dirs, transfers leadership and adds/removes a member. After healing, the history must be
//! linearizable (kvcheck) and every acknowledged write readable or superseded.
//!
//! Knobs: `RAFTKV_FAULTS_SEED` replays a nemesis schedule (the seed is printed on every run),
//! `RAFTKV_SOAK_SECS` sets the workload length (default 20 s) for long soaks.

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, MemberAddOptions, Txn, TxnOp};
use kvcheck::{CheckOptions, CheckResult, History, HistoryRecorder, Op, Outcome, Output, check};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const KEYS: usize = 5;
const CLIENTS: u64 = 4;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `kvnode` process slot: its flags survive restarts, its data dir is reused.
struct Proc {
    name: String,
    data_dir: PathBuf,
    client_url: String,
    peer_url: String,
    metrics_url: String,
    initial_cluster: String,
    existing: bool,
    child: Option<Child>,
    paused: bool,
    log: PathBuf,
}

impl Proc {
    fn new(dir: &Path, name: &str) -> Self {
        Proc {
            name: name.to_string(),
            data_dir: dir.join(name),
            client_url: format!("http://127.0.0.1:{}", free_port()),
            peer_url: format!("http://127.0.0.1:{}", free_port()),
            metrics_url: format!("http://127.0.0.1:{}", free_port()),
            initial_cluster: String::new(),
            existing: false,
            child: None,
            paused: false,
            log: dir.join(format!("{name}.log")),
        }
    }

    fn start(&mut self) {
        let log = File::options().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kvnode"))
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.client_url, "--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url, "--initial-advertise-peer-urls", &self.peer_url])
            .args(["--listen-metrics-urls", &self.metrics_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", if self.existing { "existing" } else { "new" }])
            .args(["--initial-cluster-token", "faults"])
            .args(["--heartbeat-interval", "20", "--election-timeout", "200"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.paused = false;
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    fn pause(&mut self) {
        self.signal("-STOP");
        self.paused = true;
    }

    fn resume(&mut self) {
        self.signal("-CONT");
        self.paused = false;
    }

    fn up(&self) -> bool {
        self.child.is_some() && !self.paused
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.paused {
            self.resume();
        }
        self.kill9();
    }
}

async fn connect(endpoints: &[String]) -> Option<Client> {
    let opts = ConnectOptions::new().with_connect_timeout(Duration::from_millis(500));
    tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(endpoints, Some(opts))).await.ok()?.ok()
}

/// (member id of the answering process, leader id it reports).
async fn status(endpoint: &str) -> Option<(u64, u64)> {
    let mut c = connect(&[endpoint.to_string()]).await?;
    let s = tokio::time::timeout(Duration::from_secs(1), c.status()).await.ok()?.ok()?;
    Some((s.header()?.member_id(), s.leader()))
}

struct Cluster {
    /// Dropped (deleted) on success; kept by [`Cluster::keep_logs`] when the test fails.
    tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    procs: Vec<Proc>,
    /// Index of the member added by the nemesis and its id, while it is in the cluster.
    extra: Option<(usize, u64)>,
}

impl Cluster {
    fn start(n: usize) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut procs: Vec<Proc> = (0..n).map(|i| Proc::new(&dir, &format!("n{i}"))).collect();
        let initial =
            procs.iter().map(|p| format!("{}={}", p.name, p.peer_url)).collect::<Vec<_>>().join(",");
        for p in &mut procs {
            p.initial_cluster = initial.clone();
            p.start();
        }
        Cluster { tmp: Some(tmp), dir, procs, extra: None }
    }

    /// Keeps the data dirs and node logs for a post-mortem and returns where they are.
    fn keep_logs(&mut self) -> PathBuf {
        if let Some(t) = self.tmp.take() {
            let _ = t.keep();
        }
        self.dir.clone()
    }

    fn endpoints(&self) -> Vec<String> {
        self.procs.iter().map(|p| p.client_url.clone()).collect()
    }

    /// The index of the process that says it leads, if one does now.
    async fn leader(&self) -> Option<(usize, u64)> {
        for (i, p) in self.procs.iter().enumerate() {
            if !p.up() {
                continue;
            }
            if let Some((me, leader)) = status(&p.client_url).await
                && me == leader
                && leader != 0
            {
                return Some((i, me));
            }
        }
        None
    }

    async fn wait_leader(&mut self, within: Duration) -> (usize, u64) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader().await {
                return l;
            }
            if Instant::now() >= deadline {
                panic!("no leader within {within:?}; node logs in {:?}", self.keep_logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn member_id(&self, i: usize) -> Option<u64> {
        status(&self.procs[i].client_url).await.map(|(me, _)| me)
    }

    fn heal(&mut self) {
        for p in &mut self.procs {
            if p.paused {
                p.resume();
            }
        }
        let extra = self.extra.map(|(i, _)| i);
        for (i, p) in self.procs.iter_mut().enumerate() {
            let removed = i >= 3 && Some(i) != extra;
            if p.child.is_none() && !removed {
                p.start();
            }
        }
    }
}

/// What the nemesis did, for the report.
#[derive(Default, Debug)]
struct FaultCounts {
    kill_follower: u32,
    kill_leader: u32,
    pause: u32,
    transfer: u32,
    member_add: u32,
    member_remove: u32,
}

impl FaultCounts {
    fn total(&self) -> u32 {
        self.kill_follower
            + self.kill_leader
            + self.pause
            + self.transfer
            + self.member_add
            + self.member_remove
    }
}

async fn nemesis_step(cluster: &mut Cluster, rng: &mut ChaCha8Rng, counts: &mut FaultCounts) {
    let choice = rng.random_range(0..6u32);
    let Some((leader, leader_id)) = cluster.leader().await else {
        return;
    };
    // The original members are the fault targets; the extra member only comes and goes.
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader && cluster.procs[i].up()).collect();
    match choice {
        0 | 1 => {
            let victim = if choice == 0 && !followers.is_empty() {
                counts.kill_follower += 1;
                followers[rng.random_range(0..followers.len())]
            } else {
                counts.kill_leader += 1;
                leader
            };
            println!("nemesis: kill -9 {}", cluster.procs[victim].name);
            cluster.procs[victim].kill9();
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..1200))).await;
            println!("nemesis: restart {}", cluster.procs[victim].name);
            cluster.procs[victim].start();
        }
        2 => {
            let victim = if rng.random_bool(0.5) || followers.is_empty() {
                leader
            } else {
                followers[rng.random_range(0..followers.len())]
            };
            counts.pause += 1;
            println!("nemesis: SIGSTOP {}", cluster.procs[victim].name);
            cluster.procs[victim].pause();
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
            println!("nemesis: SIGCONT {}", cluster.procs[victim].name);
            cluster.procs[victim].resume();
        }
        3 => {
            if followers.is_empty() {
                return;
            }
            let target = followers[rng.random_range(0..followers.len())];
            let Some(target_id) = cluster.member_id(target).await else { return };
            counts.transfer += 1;
            println!("nemesis: move leader {} -> {}", cluster.procs[leader].name, cluster.procs[target].name);
            if let Some(mut c) = connect(&[cluster.procs[leader].client_url.clone()]).await {
                let r = tokio::time::timeout(Duration::from_secs(3), c.move_leader(target_id)).await;
                println!("nemesis: move leader result {:?}", r.map(|r| r.map(|_| ())));
            }
        }
        _ => membership_step(cluster, leader_id, counts).await,
    }
}

/// Adds a learner (started with `--initial-cluster-state existing`) and promotes it, or removes
/// the previously added member and stops its process.
async fn membership_step(cluster: &mut Cluster, _leader_id: u64, counts: &mut FaultCounts) {
    let Some(mut c) = connect(&cluster.endpoints()).await else { return };
    if let Some((i, id)) = cluster.extra {
        println!("nemesis: member remove {}", cluster.procs[i].name);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout(REQUEST_TIMEOUT, c.member_remove(id)).await {
                Ok(Ok(_)) => break,
                Ok(Err(e)) if e.to_string().contains("member not found") => break,
                other => println!("nemesis: member remove: {other:?}"),
            }
            if Instant::now() > deadline {
                println!("nemesis: member remove gave up; the member stays");
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        counts.member_remove += 1;
        cluster.extra = None;
        cluster.procs[i].kill9();
        return;
    }
    let idx = cluster.procs.len();
    let mut p = Proc::new(&cluster.dir, &format!("n{idx}"));
    let added = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        c.member_add([p.peer_url.clone()], Some(MemberAddOptions::new().with_is_learner())),
    )
    .await
    {
        Ok(Ok(r)) => r,
        other => {
            println!("nemesis: member add failed: {other:?}");
            return;
        }
    };
    let Some(id) = added.member().map(|m| m.id()) else { return };
    counts.member_add += 1;
    let mut initial: Vec<String> = (0..3).map(|i| format!("n{i}={}", cluster.procs[i].peer_url)).collect();
    initial.push(format!("{}={}", p.name, p.peer_url));
    p.initial_cluster = initial.join(",");
    p.existing = true;
    println!("nemesis: member add {} as learner ({id:x}) and start it", p.name);
    p.start();
    cluster.procs.push(p);
    cluster.extra = Some((idx, id));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Ok(_)) = tokio::time::timeout(REQUEST_TIMEOUT, c.member_promote(id)).await {
            println!("nemesis: promoted {:x}", id);
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("nemesis: promotion of {id:x} did not happen within 10 s; it stays a learner");
}

/// Definite errors: the request was rejected before it could be proposed.
fn classify(err: &etcd_client::Error) -> Outcome {
    if let etcd_client::Error::GRpcStatus(s) = err {
        let msg = s.message();
        let definite = s.code() == tonic::Code::InvalidArgument
            || msg == "etcdserver: no leader"
            || msg == "etcdserver: not leader";
        if definite {
            return Outcome::Failed;
        }
    }
    Outcome::Unknown
}

async fn run_op(c: &mut Client, op: &Op) -> Outcome {
    let fut = async {
        match op {
            Op::Get { key } => c.get(key.as_str(), None).await.map(|r| Output::Get {
                value: r.kvs().first().map(|kv| kv.value_str().unwrap().to_string()),
            }),
            Op::Put { key, value } => c.put(key.as_str(), value.as_str(), None).await.map(|_| Output::Put),
            Op::Delete { key } => {
                c.delete(key.as_str(), None).await.map(|r| Output::Delete { existed: Some(r.deleted() > 0) })
            }
            Op::Cas { key, expected, value } => {
                let cmp = match expected {
                    Some(e) => Compare::value(key.as_str(), CompareOp::Equal, e.as_str()),
                    None => Compare::version(key.as_str(), CompareOp::Equal, 0),
                };
                let txn = Txn::new().when([cmp]).and_then([TxnOp::put(key.as_str(), value.as_str(), None)]);
                c.txn(txn).await.map(|r| Output::Cas { succeeded: r.succeeded() })
            }
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(Ok(out)) => Outcome::Ok(out),
        Ok(Err(e)) => {
            let o = classify(&e);
            // A read that failed for any reason changed nothing.
            if matches!(op, Op::Get { .. }) { Outcome::Failed } else { o }
        }
        Err(_) if matches!(op, Op::Get { .. }) => Outcome::Failed,
        Err(_) => Outcome::Unknown,
    }
}

async fn client_loop(
    id: u64,
    endpoints: Vec<String>,
    rec: HistoryRecorder,
    stop: Arc<AtomicBool>,
    seed: u64,
    ops: Arc<AtomicU64>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (id * 0x9e37_79b9));
    let mut last_seen: HashMap<String, String> = HashMap::new();
    let mut client = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if client.is_none() {
            client = connect(&endpoints).await;
            if client.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let Some(c) = client.as_mut() else { continue };
        seq += 1;
        let key = format!("k{}", rng.random_range(0..KEYS));
        let value = format!("c{id}-{seq}");
        let op = match rng.random_range(0..100) {
            0..40 => Op::Get { key },
            40..70 => Op::Put { key, value },
            70..75 => Op::Delete { key },
            _ => {
                let expected = if rng.random_bool(0.2) { None } else { last_seen.get(&key).cloned() };
                Op::Cas { key, expected, value }
            }
        };
        let pending = rec.invoke(id, op.clone());
        let outcome = run_op(c, &op).await;
        if let (Op::Get { key }, Outcome::Ok(Output::Get { value: Some(v) })) = (&op, &outcome) {
            last_seen.insert(key.clone(), v.clone());
        }
        let failed = !matches!(outcome, Outcome::Ok(_));
        rec.complete(pending, outcome);
        ops.fetch_add(1, Ordering::Relaxed);
        if failed {
            // A fresh connection lets the client move off a dead or paused member.
            client = None;
        }
    }
}

/// The value each write leaves in the key, if it takes effect.
fn written_value(op: &Op) -> Option<Option<&str>> {
    match op {
        Op::Put { value, .. } | Op::Cas { value, .. } => Some(Some(value)),
        Op::Delete { .. } => Some(None),
        Op::Get { .. } => None,
    }
}

/// Every acknowledged write is either what the final read returns or superseded by a write that
/// was not known to finish before it started. Returns the offending keys' descriptions.
fn lost_writes(history: &History, finals: &HashMap<String, Option<String>>) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, final_value) in finals {
        let ops: Vec<_> = history.operations().iter().filter(|o| o.op.key() == key).collect();
        // Writes that may have produced the final value.
        let producers: Vec<_> = ops
            .iter()
            .filter(|o| {
                let applied = match (&o.op, &o.outcome) {
                    (_, Outcome::Failed) => false,
                    (Op::Cas { .. }, Outcome::Ok(Output::Cas { succeeded })) => *succeeded,
                    (_, Outcome::Unknown) | (_, Outcome::Ok(_)) => true,
                };
                applied && written_value(&o.op).is_some_and(|v| v == final_value.as_deref())
            })
            .collect();
        let acked_writes: Vec<_> = ops
            .iter()
            .filter(|o| match (&o.op, &o.outcome) {
                (Op::Cas { .. }, Outcome::Ok(Output::Cas { succeeded })) => *succeeded,
                (Op::Put { .. } | Op::Delete { .. }, Outcome::Ok(_)) => true,
                _ => false,
            })
            .collect();
        if final_value.is_none() && producers.is_empty() {
            if let Some(w) = acked_writes.first() {
                problems.push(format!("{key}: absent at the end, but write #{} was acknowledged", w.id));
            }
            continue;
        }
        // Some producer must not have completed before an acknowledged write was invoked.
        let latest_acked_invoke = acked_writes.iter().map(|o| o.invoke).max();
        let ok = match latest_acked_invoke {
            None => !producers.is_empty() || final_value.is_none(),
            Some(t) => producers.iter().any(|p| matches!(p.outcome, Outcome::Unknown) || p.complete >= t),
        };
        if !ok {
            problems.push(format!(
                "{key}: final value {final_value:?} was overwritten by an acknowledged write invoked at {t:?}",
                t = latest_acked_invoke
            ));
        }
    }
    problems
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizable_under_process_faults() {
    let seed = env_u64("RAFTKV_FAULTS_SEED").unwrap_or_else(rand::random);
    let secs = env_u64("RAFTKV_SOAK_SECS").unwrap_or(20);
    println!("faults_process: seed {seed} (replay with RAFTKV_FAULTS_SEED={seed}), {secs} s of faults");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    let mut cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(30)).await;
    let rec = HistoryRecorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client_loop(id, cluster.endpoints(), rec.clone(), stop.clone(), seed, ops.clone()))
        })
        .collect();

    let mut counts = FaultCounts::default();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
        nemesis_step(&mut cluster, &mut rng, &mut counts).await;
    }
    println!("nemesis: heal");
    cluster.heal();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    cluster.wait_leader(Duration::from_secs(30)).await;

    // Final linearizable reads of every key, recorded in the history too.
    let mut finals = HashMap::new();
    let mut reader = connect(&cluster.endpoints()).await.unwrap();
    for k in 0..KEYS {
        let key = format!("k{k}");
        let op = Op::Get { key: key.clone() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pending = rec.invoke(CLIENTS, op.clone());
            let outcome = run_op(&mut reader, &op).await;
            if let Outcome::Ok(Output::Get { value }) = &outcome {
                finals.insert(key.clone(), value.clone());
                rec.complete(pending, outcome);
                break;
            }
            rec.complete(pending, Outcome::Failed);
            if Instant::now() >= deadline {
                panic!("final read of {key} kept failing; node logs in {:?}", cluster.keep_logs());
            }
            reader = connect(&cluster.endpoints()).await.unwrap_or(reader);
        }
    }

    let history = rec.history();
    let unknown = history.operations().iter().filter(|o| o.outcome == Outcome::Unknown).count();
    let failed = history.operations().iter().filter(|o| o.outcome == Outcome::Failed).count();
    println!(
        "faults_process: seed {seed}: {} operations ({unknown} unknown, {failed} failed), {} faults {counts:?}",
        ops.load(Ordering::Relaxed),
        counts.total()
    );
    assert!(counts.total() > 0, "the nemesis injected no fault");
    let ok_ops = history.operations().iter().filter(|o| matches!(o.outcome, Outcome::Ok(_))).count();
    assert!(ok_ops > 50, "too few successful operations ({ok_ops}) for a meaningful check");

    let report = check(&history, CheckOptions::default().with_time_budget(Duration::from_secs(90)));
    println!("faults_process: {report}");
    match &report.result {
        CheckResult::Ok => {}
        CheckResult::Violation(v) => {
            if let Some(p) = v.artifact_path() {
                println!("faults_process: minimal failing history in {}", p.display());
            }
            panic!("seed {seed}: not linearizable:\n{v}\nnode logs in {:?}", cluster.keep_logs());
        }
        other => panic!("seed {seed}: check gave no verdict: {other:?}"),
    }
    let lost = lost_writes(&history, &finals);
    if !lost.is_empty() {
        panic!("seed {seed}: acknowledged writes lost: {lost:?}; node logs in {:?}", cluster.keep_logs());
    }
}
