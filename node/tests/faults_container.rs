//! Container-level fault injection: 3- and 5-member raftkv clusters as Docker containers from
//! the locally built `raftkv/kvnode` image (see `container/mod.rs` for the layout), the shared
//! workload (`workload/mod.rs`: clients pinned to every member, whole-database history), and a
//! seeded nemesis: the
//! leader partitioned from the majority, a majority/minority split, a bridge partition, one
//! member isolated from the network, `docker kill` + restart with its volume, pause/unpause.
//! After healing: a leader must be recovered, the history linearizable (kvcheck's whole-database
//! and per-key checks), every acknowledged write readable or superseded, and every member must
//! have served.
//!
//! Plain `cargo test` prints `SKIPPED: ...` and passes when Docker, the image or root is
//! missing; `RAFTKV_REQUIRE_DOCKER=1` (set by `scripts/test.sh`) makes that a failure.
//! Knobs: `RAFTKV_FAULTS_SEED` replays a schedule (the seed is printed), `RAFTKV_SOAK_SECS`
//! sets the fault phase per cluster size (default 20 s), `RAFTKV_IMAGE` the image.

mod container;
mod workload;

use std::time::{Duration, Instant};

use container::DockerCluster;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use workload::guarantees::Guarantees;
use workload::{Members, Verdict, Workload, env_u64, status};

/// The members' `--election-timeout` (see `container/mod.rs`).
const ELECTION_TIMEOUT: Duration = Duration::from_millis(500);

/// The two container tests share the engine and the machine: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the nemesis did, for the report.
#[derive(Default, Debug)]
struct FaultCounts {
    leader_partitioned: u32,
    majority_split: u32,
    bridge: u32,
    isolate_one: u32,
    kill_restart: u32,
    pause: u32,
}

impl FaultCounts {
    fn total(&self) -> u32 {
        self.leader_partitioned
            + self.majority_split
            + self.bridge
            + self.isolate_one
            + self.kill_restart
            + self.pause
    }
}

/// The member that says it leads, among those the host can reach.
async fn leader(cluster: &DockerCluster) -> Option<usize> {
    for (i, m) in cluster.members.iter().enumerate() {
        if m.paused || m.disconnected {
            continue;
        }
        if let Some((me, leader)) = status(&m.client_endpoint()).await
            && me == leader
            && leader != 0
        {
            return Some(i);
        }
    }
    None
}

async fn wait_leader(cluster: &DockerCluster, within: Duration) -> Option<usize> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(l) = leader(cluster).await {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn names(cluster: &DockerCluster, ids: &[usize]) -> String {
    ids.iter().map(|&i| cluster.members[i].name.as_str()).collect::<Vec<_>>().join(",")
}

/// One fault: inject, hold for a while under the workload, heal. While it holds, `members` has
/// the members that cannot serve marked down: killed, paused, disconnected, or on the minority
/// side of a partition (a bridge partition leaves every member a majority it reaches).
async fn nemesis_step(
    cluster: &mut DockerCluster,
    members: &Members,
    rng: &mut ChaCha8Rng,
    counts: &mut FaultCounts,
) -> Result<(), String> {
    let n = cluster.members.len();
    let current = leader(cluster).await;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let hold = Duration::from_millis(rng.random_range(1000..3000));
    let down: Vec<usize> = match rng.random_range(0..6u32) {
        0 => {
            // The leader (with a follower when n = 5) on the minority side.
            let Some(l) = current else { return Ok(()) };
            let mut minority = vec![l];
            minority.extend(order.iter().copied().filter(|&i| i != l).take((n - 1) / 2 - 1));
            let majority: Vec<usize> = (0..n).filter(|i| !minority.contains(i)).collect();
            println!(
                "nemesis: partition leader side [{}] | [{}]",
                names(cluster, &minority),
                names(cluster, &majority)
            );
            cluster.partition(&minority, &majority)?;
            counts.leader_partitioned += 1;
            minority
        }
        1 => {
            let (minority, majority) = order.split_at((n - 1) / 2);
            println!("nemesis: split [{}] | [{}]", names(cluster, minority), names(cluster, majority));
            cluster.partition(minority, majority)?;
            counts.majority_split += 1;
            minority.to_vec()
        }
        2 => {
            // Two sides that cannot talk, and one member both sides reach.
            let bridge = order[0];
            let rest = &order[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            println!(
                "nemesis: bridge [{}] <-> {} <-> [{}]",
                names(cluster, a),
                cluster.members[bridge].name,
                names(cluster, b)
            );
            cluster.partition(a, b)?;
            counts.bridge += 1;
            Vec::new()
        }
        3 => {
            let victim = order[0];
            println!("nemesis: docker network disconnect {}", cluster.members[victim].name);
            cluster.disconnect(victim)?;
            counts.isolate_one += 1;
            vec![victim]
        }
        4 => {
            let victim = match current {
                Some(l) if rng.random_bool(0.5) => l,
                _ => order[0],
            };
            println!("nemesis: docker kill {}", cluster.members[victim].name);
            cluster.kill(victim)?;
            counts.kill_restart += 1;
            vec![victim]
        }
        _ => {
            let victim = match current {
                Some(l) if rng.random_bool(0.5) => l,
                _ => order[0],
            };
            println!("nemesis: docker pause {}", cluster.members[victim].name);
            cluster.pause(victim)?;
            counts.pause += 1;
            vec![victim]
        }
    };
    for &i in &down {
        members.set_down(i, true);
    }
    tokio::time::sleep(hold).await;
    println!("nemesis: heal");
    let healed = cluster.heal();
    members.all_up();
    healed
}

async fn run_suite(n: usize) {
    if let Some(why) = container::unavailable() {
        assert!(
            std::env::var("RAFTKV_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "RAFTKV_REQUIRE_DOCKER=1 but the container suite cannot run: {why}"
        );
        println!("SKIPPED: container fault suite ({n} members): {why}");
        return;
    }
    let _serial = SERIAL.lock().await;
    let seed = env_u64("RAFTKV_FAULTS_SEED").unwrap_or_else(rand::random);
    let secs = env_u64("RAFTKV_SOAK_SECS").unwrap_or(20);
    let label = format!("faults_container_{n}");
    println!(
        "{label}: seed {seed} (replay with RAFTKV_FAULTS_SEED={seed}), {secs} s of faults, image {}",
        container::image()
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ n as u64);
    let name = format!("kvf{n}-{}", std::process::id());
    let mut cluster = DockerCluster::start(n, &name).unwrap();
    if wait_leader(&cluster, Duration::from_secs(60)).await.is_none() {
        panic!("{label}: no leader after start; container logs in {:?}", cluster.keep_logs());
    }
    let mut workload = Workload::start(Members::new(cluster.endpoints()), seed);
    let guarantees = Guarantees::start(&workload, seed, secs, ELECTION_TIMEOUT).await;

    let mut counts = FaultCounts::default();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..1500))).await;
        if let Err(e) = nemesis_step(&mut cluster, &workload.members, &mut rng, &mut counts).await {
            panic!("{label}: seed {seed}: nemesis failed: {e}; container logs in {:?}", cluster.keep_logs());
        }
    }
    cluster.heal().unwrap();
    let heal_at = Instant::now();
    // Clients keep going across the heal, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    workload.stop().await;
    if wait_leader(&cluster, Duration::from_secs(30)).await.is_none() {
        panic!(
            "{label}: seed {seed}: no leader 30 s after healing; container logs in {:?}",
            cluster.keep_logs()
        );
    }
    let finals = match workload.final_reads().await {
        Ok(f) => f,
        Err(e) => panic!("{label}: seed {seed}: {e}; container logs in {:?}", cluster.keep_logs()),
    };
    let recordings = guarantees.stop(&workload, heal_at).await;
    assert!(counts.total() > 0, "the nemesis injected no fault");
    let names: Vec<String> = cluster.members.iter().map(|m| m.name.clone()).collect();
    let faults = format!("{} faults {counts:?}", counts.total());
    let log = match workload.conclude(&label, seed, &faults, &finals, &names) {
        Ok(log) => log,
        Err((verdict, file)) => {
            let logs = match verdict {
                Verdict::TooFewOps(_) => None,
                _ => Some(cluster.keep_logs()),
            };
            panic!(
                "{label}: seed {seed}: {verdict:?}; history in {}; container logs in {logs:?}",
                file.display()
            );
        }
    };
    if let Err(problems) = recordings.verify(&label, &log) {
        let history = workload.save(&workload.history(), &label, seed);
        panic!(
            "{label}: seed {seed}: {:?}; history in {}; container logs in {:?}",
            Verdict::Guarantees(problems),
            history.display(),
            cluster.keep_logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_containers_linearizable_under_faults() {
    run_suite(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_containers_linearizable_under_faults() {
    run_suite(5).await;
}
