//! Process-level fault injection: real `kvnode` processes on loopback with real data dirs, the
//! shared workload (`workload/mod.rs`: clients pinned to every member sending reads, writes and
//! transactions over a few keys, recorded as a whole-database history), and a seeded nemesis
//! that kills -9 followers and leaders, pauses members with SIGSTOP, restarts them from their data
//! dirs, transfers leadership and adds/removes a member. After healing, the history must be
//! linearizable (kvcheck's whole-database and per-key checks), every acknowledged write readable
//! or superseded, and every member must have served.
//!
//! Knobs: `RAFTKV_FAULTS_SEED` replays a nemesis schedule (the seed is printed on every run),
//! `RAFTKV_SOAK_SECS` sets the workload length (default 20 s) for long soaks.

mod workload;

use raftkv_testkit::free_port;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::MemberAddOptions;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use workload::guarantees::Guarantees;
use workload::{Members, REQUEST_TIMEOUT, Verdict, Workload, connect, env_u64, status};

/// The members' `--election-timeout`.
const ELECTION_TIMEOUT: Duration = Duration::from_millis(200);

/// One `kvnode` process slot: its flags survive restarts, its data dir is reused.
struct Proc {
    name: String,
    data_dir: PathBuf,
    client_url: String,
    peer_url: String,
    metrics_url: String,
    initial_cluster: String,
    existing: bool,
    /// Start with `--force-new-cluster` (the quorum-loss drill's survivor).
    force_new_cluster: bool,
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
            force_new_cluster: false,
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
            .args(["--experimental-watch-progress-notify-interval", "300ms"])
            .args(["--experimental-lease-checkpoint-interval", "1s"])
            .args(self.force_new_cluster.then_some("--force-new-cluster"))
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

    /// Stops the process as an operator would (SIGTERM) and waits for it to exit.
    fn stop(&mut self) {
        self.signal("-TERM");
        if let Some(mut c) = self.child.take() {
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

    /// The founding members, which the workload's clients are pinned to.
    fn founders(&self) -> Members {
        Members::new(self.procs[..3].iter().map(|p| p.client_url.clone()).collect())
    }

    fn names(&self) -> Vec<String> {
        self.procs.iter().map(|p| p.name.clone()).collect()
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

/// One fault; `members` is told which founding member is down (killed or paused) while it is.
async fn nemesis_step(
    cluster: &mut Cluster,
    members: &Members,
    rng: &mut ChaCha8Rng,
    counts: &mut FaultCounts,
) {
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
            members.set_down(victim, true);
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..1200))).await;
            println!("nemesis: restart {}", cluster.procs[victim].name);
            cluster.procs[victim].start();
            members.set_down(victim, false);
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
            members.set_down(victim, true);
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
            println!("nemesis: SIGCONT {}", cluster.procs[victim].name);
            cluster.procs[victim].resume();
            members.set_down(victim, false);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linearizable_under_process_faults() {
    let seed = env_u64("RAFTKV_FAULTS_SEED").unwrap_or_else(rand::random);
    let secs = env_u64("RAFTKV_SOAK_SECS").unwrap_or(20);
    println!("faults_process: seed {seed} (replay with RAFTKV_FAULTS_SEED={seed}), {secs} s of faults");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    let mut cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(30)).await;
    let mut workload = Workload::start(cluster.founders(), seed);
    let guarantees = Guarantees::start(&workload, seed, secs, ELECTION_TIMEOUT).await;

    let mut counts = FaultCounts::default();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
        nemesis_step(&mut cluster, &workload.members, &mut rng, &mut counts).await;
    }
    println!("nemesis: heal");
    cluster.heal();
    workload.members.all_up();
    let heal_at = Instant::now();
    workload.stop().await;
    cluster.wait_leader(Duration::from_secs(30)).await;

    let finals = match workload.final_reads().await {
        Ok(f) => f,
        Err(e) => panic!("seed {seed}: {e}; node logs in {:?}", cluster.keep_logs()),
    };
    let recordings = guarantees.stop(&workload, heal_at).await;
    assert!(counts.total() > 0, "the nemesis injected no fault");
    let faults = format!("{} faults {counts:?}", counts.total());
    let label = "faults_process";
    let log = match workload.conclude(label, seed, &faults, &finals, &cluster.names()) {
        Ok(log) => log,
        Err((verdict, file)) => {
            let logs = match verdict {
                Verdict::TooFewOps(_) => None,
                _ => Some(cluster.keep_logs()),
            };
            panic!("seed {seed}: {verdict:?}; history in {}; node logs in {logs:?}", file.display());
        }
    };
    if let Err(problems) = recordings.verify(label, &log) {
        let history = workload.save(&workload.history(), label, seed);
        panic!(
            "seed {seed}: {:?}; history in {}; node logs in {:?}",
            Verdict::Guarantees(problems),
            history.display(),
            cluster.keep_logs()
        );
    }
}

/// etcd's disaster-recovery drill, under the workload: a 3-member cluster loses two members for
/// good (killed, data wiped) so it has no quorum; the survivor, the leader at that moment, is
/// stopped and restarted with `--force-new-cluster`; the two come back as new members
/// (learners, promoted) with empty data dirs; the survivor restarts once more without the
/// flag. Every write acknowledged to any client must still be there and the whole history must
/// be linearizable.
///
/// The survivor is the leader because a leader holds every committed entry; writes it had not
/// committed when the others died were never acknowledged, and `--force-new-cluster` discards
/// them (their outcome is unknown to the clients, which the checker allows for). It is stopped
/// with SIGTERM, as an operator would stop it, so its commit index is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quorum_loss_drill_with_force_new_cluster() {
    let seed = env_u64("RAFTKV_FAULTS_SEED").unwrap_or_else(rand::random);
    println!("quorum_loss_drill: seed {seed} (replay with RAFTKV_FAULTS_SEED={seed})");
    let mut cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(30)).await;
    let mut workload = Workload::start(cluster.founders(), seed);
    tokio::time::sleep(Duration::from_secs(4)).await;

    let (survivor, _) = cluster.wait_leader(Duration::from_secs(30)).await;
    let lost: Vec<usize> = (0..3).filter(|&i| i != survivor).collect();
    for &i in &lost {
        println!("drill: kill -9 {} and wipe its data dir", cluster.procs[i].name);
        cluster.procs[i].kill9();
        workload.members.set_down(i, true);
        std::fs::remove_dir_all(&cluster.procs[i].data_dir).unwrap();
    }
    // Alone, the survivor cannot commit; clients keep trying (and fail) meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;

    println!("drill: restart {} with --force-new-cluster", cluster.procs[survivor].name);
    workload.members.set_down(survivor, true);
    cluster.procs[survivor].stop();
    cluster.procs[survivor].force_new_cluster = true;
    cluster.procs[survivor].start();
    workload.members.set_down(survivor, false);
    cluster.wait_leader(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    for &i in &lost {
        add_back(&mut cluster, survivor, i, &lost).await;
        workload.members.set_down(i, false);
    }
    println!("drill: restart {} without the flag", cluster.procs[survivor].name);
    workload.members.set_down(survivor, true);
    cluster.procs[survivor].stop();
    cluster.procs[survivor].force_new_cluster = false;
    cluster.procs[survivor].start();
    workload.members.set_down(survivor, false);
    cluster.wait_leader(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    workload.stop().await;

    let finals = match workload.final_reads().await {
        Ok(f) => f,
        Err(e) => panic!("seed {seed}: {e}; node logs in {:?}", cluster.keep_logs()),
    };
    let faults = format!(
        "quorum lost (survivor {}), forced new cluster, 2 members added back",
        cluster.procs[survivor].name
    );
    if let Err((verdict, file)) =
        workload.conclude("quorum_loss_drill", seed, &faults, &finals, &cluster.names())
    {
        let logs = cluster.keep_logs();
        panic!("seed {seed}: {verdict:?}; history in {}; node logs in {logs:?}", file.display());
    }
}

/// Adds founding member `i` back, with an empty data dir and its old URLs, as a learner of the
/// survivor's cluster, starts it and promotes it once it has caught up.
async fn add_back(cluster: &mut Cluster, survivor: usize, i: usize, lost: &[usize]) {
    let mut c = connect(&[cluster.procs[survivor].client_url.clone()]).await.unwrap();
    let peer_url = cluster.procs[i].peer_url.clone();
    let added = tokio::time::timeout(
        REQUEST_TIMEOUT,
        c.member_add([peer_url], Some(MemberAddOptions::new().with_is_learner())),
    )
    .await
    .unwrap()
    .unwrap();
    let id = added.member().unwrap().id();
    // The cluster now: the survivor, the members already back, and this one.
    let back = lost.iter().take_while(|&&j| j != i);
    let initial: Vec<String> = std::iter::once(survivor)
        .chain(back.copied())
        .chain(std::iter::once(i))
        .map(|j| format!("{}={}", cluster.procs[j].name, cluster.procs[j].peer_url))
        .collect();
    let p = &mut cluster.procs[i];
    p.initial_cluster = initial.join(",");
    p.existing = true;
    println!("drill: member add {} as learner ({id:x}) and start it", p.name);
    p.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout(REQUEST_TIMEOUT, c.member_promote(id)).await {
            Ok(Ok(_)) => break,
            other if Instant::now() > deadline => panic!("{} not promoted within 30 s: {other:?}", p.name),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    println!("drill: promoted {} ({id:x})", p.name);
}
