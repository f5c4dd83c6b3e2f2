//! Exhaustive power-cut tests: a seeded workload is cut short at every mutating disk
//! operation in turn, the disk is "crashed" (what was durable, or that plus a random share
//! of the rest, torn), and the reopened log must hold exactly the state after the last
//! acknowledged operation or after the one in flight; and stay usable. The same again with a
//! second power cut at every mutating operation of the recovery itself.

mod common;

use common::{LogImage, SEGMENT_BYTES, entry, image, opts};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wal::{CrashMode, HardState, LogEntry, MemDisk, Wal, WalError};

/// One operation of the workload.
#[derive(Debug, Clone)]
enum Op {
    Append(Option<HardState>, Vec<LogEntry>),
    Compact(u64),
    Install(u64, u64),
    Truncate(u64),
}

impl Op {
    fn run(&self, wal: &mut Wal<MemDisk>) -> Result<(), WalError> {
        match self {
            Op::Append(hs, entries) => wal.append(*hs, entries),
            Op::Compact(index) => wal.compact(*index),
            Op::Install(index, term) => wal.install_snapshot(*index, *term),
            Op::Truncate(index) => wal.truncate_after(*index).map(|_| ()),
        }
    }
}

/// What each operation should do, written independently of the WAL.
fn model_apply(model: &mut LogImage, op: &Op) {
    match op {
        Op::Append(hs, entries) => {
            let fresh: Vec<_> = entries.iter().filter(|e| e.index > model.snapshot.0).cloned().collect();
            if let Some(first) = fresh.first() {
                model.entries.retain(|e| e.index < first.index);
                model.entries.extend(fresh);
            }
            if let Some(hs) = hs {
                model.hard_state = *hs;
            }
        }
        Op::Compact(index) => {
            if *index > model.snapshot.0 {
                let term =
                    model.entries.iter().find(|e| e.index == *index).expect("compact within the log").term;
                model.entries.retain(|e| e.index > *index);
                model.snapshot = (*index, term);
            }
        }
        Op::Install(index, term) => {
            model.entries.clear();
            model.snapshot = (*index, *term);
            model.hard_state.commit = model.hard_state.commit.max(*index);
        }
        Op::Truncate(index) => model.entries.retain(|e| e.index <= *index),
    }
}

/// A seeded workload of `len` operations, valid for the log it builds, with the model state
/// before the first and after each operation.
fn workload(seed: u64, len: usize) -> (Vec<Op>, Vec<LogImage>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut model = LogImage::default();
    let mut states = vec![model.clone()];
    let mut ops = Vec::new();
    let mut term = 1;
    while ops.len() < len {
        let (snap, last) = (model.snapshot.0, model.last_index());
        let size = |rng: &mut ChaCha8Rng| match rng.random_range(0..100) {
            0..85 => rng.random_range(0..200),
            85..95 => rng.random_range(200..1500),
            _ => rng.random_range(SEGMENT_BYTES as usize..2 * SEGMENT_BYTES as usize),
        };
        let hard_state = |rng: &mut ChaCha8Rng, term: u64, last: u64| {
            rng.random_bool(0.4).then(|| HardState {
                term,
                vote: rng.random_range(0..4),
                commit: rng.random_range(0..=last),
            })
        };
        let op = match rng.random_range(0..100) {
            // Appends at the end.
            0..45 => {
                let n = rng.random_range(1..=4);
                let es = (last + 1..=last + n).map(|i| entry(i, term, size(&mut rng))).collect();
                Op::Append(hard_state(&mut rng, term, last), es)
            }
            // A new leader overwrites a suffix (sometimes starting below the snapshot point).
            45..60 if last > snap => {
                term += 1;
                let from = rng.random_range(snap.saturating_sub(1).max(1)..=last);
                let n = rng.random_range(1..=3);
                let es = (from..from + n).map(|i| entry(i, term, size(&mut rng))).collect();
                Op::Append(Some(HardState { term, vote: rng.random_range(0..4), commit: snap }), es)
            }
            60..70 => {
                if rng.random_bool(0.3) {
                    term += 1;
                }
                let hs = HardState { term, vote: rng.random_range(0..4), commit: rng.random_range(0..=last) };
                Op::Append(Some(hs), Vec::new())
            }
            70..84 => Op::Compact(rng.random_range(snap..=last)),
            84..89 => Op::Install(rng.random_range(snap..=last + 5), term),
            89..100 => Op::Truncate(rng.random_range(snap..=last)),
            _ => continue,
        };
        model_apply(&mut model, &op);
        states.push(model.clone());
        ops.push(op);
    }
    (ops, states)
}

/// Runs the workload on `disk` until an operation fails; returns how many succeeded, or
/// `None` if opening failed.
fn run(disk: &MemDisk, ops: &[Op], ctx: &str) -> Option<usize> {
    let mut wal = match Wal::open(disk.clone(), opts()) {
        Ok(wal) => wal,
        Err(WalError::Io { .. }) => return None,
        Err(e) => panic!("{ctx}: opening failed with {e}"),
    };
    for (i, op) in ops.iter().enumerate() {
        match op.run(&mut wal) {
            Ok(()) => {}
            Err(WalError::Io { .. }) => return Some(i),
            Err(e) => panic!("{ctx}: op {i} {op:?} failed with {e}"),
        }
    }
    Some(ops.len())
}

/// An independent copy of a crashed disk (everything on it is durable).
fn copy(disk: &MemDisk) -> MemDisk {
    disk.crash(CrashMode::Durable)
}

struct Counts {
    images: u64,
    recovery_cuts: u64,
}

/// Opens the crashed `disk`, checks it holds one of `allowed`, then appends and reopens.
fn verify(disk: MemDisk, allowed: &[&LogImage], ctx: &str) {
    let mut wal = Wal::open(disk.clone(), opts()).unwrap_or_else(|e| panic!("{ctx}: reopening failed: {e}"));
    let got = image(&wal);
    assert!(
        allowed.contains(&&got),
        "{ctx}: the log after the crash is none of the states allowed\n got: {got:?}\n allowed: {allowed:#?}"
    );
    // The repaired log takes appends, and replays them.
    let last = wal.last_index();
    let term = got.hard_state.term + 1;
    let hs = HardState { term, vote: 1, commit: got.hard_state.commit };
    let more = vec![
        entry(last + 1, term, 10),
        entry(last + 2, term, SEGMENT_BYTES as usize),
        entry(last + 3, term, 0),
    ];
    wal.append(Some(hs), &more).unwrap_or_else(|e| panic!("{ctx}: append after recovery: {e}"));
    let mut want = got;
    model_apply(&mut want, &Op::Append(Some(hs), more));
    drop(wal);
    let ops = disk.mutating_ops();
    let wal = Wal::open(disk.clone(), opts()).unwrap_or_else(|e| panic!("{ctx}: second reopen: {e}"));
    assert_eq!(image(&wal), want, "{ctx}: the second reopen differs");
    assert_eq!(disk.mutating_ops(), ops, "{ctx}: a clean reopen wrote to the disk");
}

/// Recovers `crashed` (one of `allowed` expected), and also with a power cut at each
/// mutating operation of the recovery, followed by a clean recovery.
fn check_recovery(crashed: &MemDisk, allowed: &[&LogImage], seed: u64, ctx: &str, counts: &mut Counts) {
    counts.images += 1;
    let probe = copy(crashed);
    Wal::open(probe.clone(), opts()).unwrap_or_else(|e| panic!("{ctx}: recovery failed: {e}"));
    let recovery_ops = probe.mutating_ops();
    for m in 0..recovery_ops {
        counts.recovery_cuts += 1;
        let disk = copy(crashed);
        disk.fail_after(m);
        match Wal::open(disk.clone(), opts()) {
            Err(WalError::Io { .. }) => {}
            Err(e) => panic!("{ctx}, recovery cut at {m}: {e}"),
            Ok(_) => panic!("{ctx}, recovery cut at {m}: recovery succeeded"),
        }
        for (j, mode) in
            [CrashMode::Durable, CrashMode::Harsh { seed: seed ^ (m << 32) }].into_iter().enumerate()
        {
            verify(disk.crash(mode), allowed, &format!("{ctx}, recovery cut at op {m}, crash {j} {mode:?}"));
        }
    }
    verify(copy(crashed), allowed, ctx);
}

/// Cuts the power at every mutating operation of the workload of `seed`.
fn power_cut_everywhere(seed: u64, len: usize, harsh_seeds: u64) {
    let (ops, states) = workload(seed, len);
    let total = {
        let disk = MemDisk::new();
        assert_eq!(run(&disk, &ops, &format!("seed {seed}, no power cut")), Some(ops.len()));
        let wal = Wal::open(disk.clone(), opts()).unwrap();
        assert_eq!(&image(&wal), states.last().unwrap(), "seed {seed}: the workload without a power cut");
        assert!(wal.segment_count() >= 1);
        disk.mutating_ops()
    };
    let mut counts = Counts { images: 0, recovery_cuts: 0 };
    for n in 0..total {
        let disk = MemDisk::new();
        disk.fail_after(n);
        let ctx = format!("seed {seed}, power cut at op {n} of {total}");
        let done = run(&disk, &ops, &ctx);
        // Before the cut, all `done` operations returned: the state after them, or after the
        // one in flight (none if opening failed: it only creates the empty log).
        let allowed: Vec<&LogImage> = match done {
            None => vec![&states[0]],
            Some(done) => {
                assert!(done < ops.len(), "{ctx}: no operation failed");
                vec![&states[done], &states[done + 1]]
            }
        };
        let mut modes = vec![CrashMode::Durable];
        modes.extend((0..harsh_seeds).map(|k| CrashMode::Harsh { seed: seed * 1_000_003 + n * 101 + k }));
        for mode in modes {
            let crashed = disk.crash(mode);
            let seed = match mode {
                CrashMode::Harsh { seed } => seed,
                CrashMode::Durable => n,
            };
            check_recovery(&crashed, &allowed, seed, &format!("{ctx}, crash {mode:?}"), &mut counts);
        }
    }
    println!(
        "seed {seed}: {} operations, {total} power-cut points, {} crashed images, {} power cuts during recovery",
        ops.len(),
        counts.images,
        counts.recovery_cuts
    );
}

#[test]
fn power_cut_at_every_operation_seed_1() {
    power_cut_everywhere(1, 150, 3);
}

#[test]
fn power_cut_at_every_operation_seed_2() {
    power_cut_everywhere(2, 150, 3);
}

#[test]
fn power_cut_at_every_operation_seed_3_longer() {
    power_cut_everywhere(3, 300, 2);
}

/// The workload itself exercises what it should (a guard against a generator that drifts).
#[test]
fn the_workload_covers_every_kind_of_operation() {
    for seed in [1, 2] {
        let (ops, _) = workload(seed, 150);
        let count = |f: fn(&Op) -> bool| ops.iter().filter(|op| f(op)).count();
        let big = |op: &Op| matches!(op, Op::Append(_, es) if es.iter().any(|e| e.data.len() > SEGMENT_BYTES as usize));
        assert!(count(big) >= 3, "seed {seed}: too few appends larger than a segment");
        assert!(count(|op| matches!(op, Op::Compact(_))) >= 10, "seed {seed}");
        assert!(count(|op| matches!(op, Op::Install(..))) >= 3, "seed {seed}");
        assert!(count(|op| matches!(op, Op::Truncate(_))) >= 5, "seed {seed}");
        assert!(count(|op| matches!(op, Op::Append(Some(_), es) if es.is_empty())) >= 5, "seed {seed}");
    }
}
