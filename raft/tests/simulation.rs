//! Deterministic simulation of the Raft core under faults (see `sim`).
//!
//! `cargo test -p raftkv-raft --test simulation` runs the default seed range. Environment:
//! - `RAFT_SIM_SEEDS=N`: how many seeds (default 500), starting at `RAFT_SIM_FIRST_SEED` (0);
//! - `RAFT_SIM_SEED=S`: run only seed S, printing its trace;
//! - `RAFT_SIM_STEPS=N`: fault-phase steps per seed (default 2500).

mod sim;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sim::{Outcome, SimOptions, run_seed};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

const DEFAULT_STEPS: u64 = 2500;

fn replay_command(seed: u64, steps: u64) -> String {
    format!(
        "RAFT_SIM_SEED={seed} RAFT_SIM_STEPS={steps} cargo test -p raftkv-raft --test simulation -- simulate_seeds --nocapture"
    )
}

#[test]
fn simulate_seeds() {
    let steps = env_u64("RAFT_SIM_STEPS").unwrap_or(DEFAULT_STEPS);
    if let Some(seed) = env_u64("RAFT_SIM_SEED") {
        match run_seed(&SimOptions { seed, steps, verbose: true }) {
            Ok(o) => println!("seed {seed}: ok {o:?}"),
            Err(e) => panic!("{e}\nreplay: {}", replay_command(seed, steps)),
        }
        return;
    }
    let first = env_u64("RAFT_SIM_FIRST_SEED").unwrap_or(0);
    let count = env_u64("RAFT_SIM_SEEDS").unwrap_or(500);
    let next = AtomicU64::new(first);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let totals = Mutex::new(Outcome::default());
    let started = Instant::now();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= first + count {
                        return;
                    }
                    match run_seed(&SimOptions { seed, steps, verbose: false }) {
                        Ok(o) => totals.lock().unwrap().add(&o),
                        Err(e) => {
                            let first_line = e.lines().next().unwrap_or_default().to_string();
                            eprintln!("{first_line}\nreplay: {}", replay_command(seed, steps));
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{first_line}\n  replay: {}", replay_command(seed, steps)));
                        }
                    }
                }
            });
        }
    });
    let t = totals.lock().unwrap();
    println!(
        "{count} seeds from {first} ({steps} fault steps each) in {:.1?}: {} steps, {} leaders elected, \
         {} entries applied, {} reads confirmed, {} conf changes, {} crashes, {} snapshots installed; \
         clients: {} proposals acknowledged ({} forwarded), {} reported failed ({} refused by a leader)",
        started.elapsed(),
        t.steps,
        t.leaders,
        t.applied,
        t.reads,
        t.conf_changes,
        t.crashes,
        t.snapshots_installed,
        t.acked,
        t.acked_forwarded,
        t.failed,
        t.refused
    );
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} seeds failed:\n{}", failures.len(), failures.join("\n"));
}

/// Seeds on which the simulator finds bugs the core once had, each fixed since. A seed pins
/// a whole run (fault regime, schedule, messages), so these replay failing scenarios. They
/// were derived by putting each bug back into the core and keeping seeds that then fail;
/// should the simulator's use of its RNG change, derive them again the same way. The two
/// forwarding bugs go back in the shape the core had then: a non-leader refuses
/// (`NotLeader`) any batch `forwarded_seen` does not hold, and for the step-down bug `reset`
/// also clears `forwarded_seen` whatever the term (that clearing alone changes nothing while
/// a non-leader drops every batch). Bugs the current simulator only hits far out in the seed
/// space are pinned by deterministic unit tests instead (see `raft::tests`:
/// `snap_install_waits_until_driver_applied_what_it_was_handed`,
/// `conf_node_removed_while_campaigning_never_takes_office`,
/// `conf_removed_leader_informs_new_voters_before_stepping_down`).
const REGRESSION_SEEDS: &[(u64, &str)] = &[
    (
        201,
        "voter left behind by a removed leader waited forever for its vote (commit hint in vote responses)",
    ),
    (
        266,
        "voter left behind by a removed leader waited forever for its vote (commit hint in vote responses)",
    ),
    (3445, "duplicated no-news answers each started an endless append exchange (message storm)"),
    (3044, "duplicated no-news answers each started an endless append exchange (message storm)"),
    (1504, "a late copy of a forwarded batch the leader had appended was refused after it stepped down"),
    (4337, "a leader restarted within its term refused a late copy of a batch it had appended before"),
    (
        5407,
        "the liveness check failed a learner catching up one entry per round trip (one-entry messages, one in \
         flight): slow, not stuck (a check bug, not a core bug)",
    ),
];

#[test]
fn regression_seeds() {
    for &(seed, bug) in REGRESSION_SEEDS {
        if let Err(e) = run_seed(&SimOptions { seed, steps: DEFAULT_STEPS, verbose: false }) {
            panic!("regression of \"{bug}\":\n{e}\nreplay: {}", replay_command(seed, DEFAULT_STEPS));
        }
    }
}
