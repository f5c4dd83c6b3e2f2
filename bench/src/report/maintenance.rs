//! The restart, size-on-disk, snapshot and defragmentation tables: what a member costs to bring
//! back and to maintain, each system's latest figure and the candidate/baseline ratio.

use std::fmt::Write;

use super::{Memory, Systems, ms, ratio_or_pending};
use crate::maintenance::WritersSeen;
use crate::record::{DefragRecord, DiskRecord, Record, RestartRecord, SnapshotRecord, StopSignal};

/// All three tables; each only when its records exist.
pub fn section(out: &mut String, records: &[Record], systems: &Systems) {
    restart_table(out, records, systems);
    snapshot_table(out, records, systems);
    defrag_table(out, records, systems);
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

fn or_pending<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or("pending".to_string(), f)
}

fn restart_table(out: &mut String, records: &[Record], systems: &Systems) {
    let restarts: Vec<&RestartRecord> =
        records.iter().filter_map(|r| if let Record::Restart(r) = r { Some(r) } else { None }).collect();
    let disks: Vec<&DiskRecord> =
        records.iter().filter_map(|r| if let Record::Disk(r) = r { Some(r) } else { None }).collect();
    if restarts.is_empty() && disks.is_empty() {
        return;
    }
    let (b, c) = (&systems.baseline, &systems.candidate);
    let kill = StopSignal::Kill.describe();
    let term = StopSignal::Term.describe();
    let _ = writeln!(
        out,
        "| system | keys | restart after {kill} → first serializable get (ms) | restart after {term} (ms) | \
         data dir on disk MiB | data dir apparent MiB |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let latest = |system: &str, how: StopSignal| {
        restarts.iter().rev().find(|r| r.system == system && r.stopped_by == how).map(|r| r.ready_ms)
    };
    let mut row = |system: &str| -> [Option<f64>; 3] {
        let (killed, stopped) = (latest(system, StopSignal::Kill), latest(system, StopSignal::Term));
        let disk = disks.iter().rev().find(|d| d.system == system);
        let keys =
            restarts.iter().rev().find(|r| r.system == system).map(|r| r.keys).or(disk.map(|d| d.keys));
        let _ = writeln!(
            out,
            "| {system} | {} | {} | {} | {} | {} |",
            keys.map_or("–".to_string(), |k| k.to_string()),
            or_pending(killed, |v| format!("{v:.0}")),
            or_pending(stopped, |v| format!("{v:.0}")),
            or_pending(disk, |d| mib(d.allocated_bytes)),
            or_pending(disk, |d| mib(d.apparent_bytes)),
        );
        [killed, stopped, disk.map(|d| d.allocated_bytes as f64)]
    };
    let [bk, bs, bd] = row(b);
    let [ck, cs, cd] = row(c);
    let _ = writeln!(
        out,
        "| {c}/{b} | | {} | {} | {} | |\n",
        ratio_or_pending(ck, bk),
        ratio_or_pending(cs, bs),
        ratio_or_pending(cd, bd)
    );
}

fn snapshot_table(out: &mut String, records: &[Record], systems: &Systems) {
    let saves: Vec<&SnapshotRecord> =
        records.iter().filter_map(|r| if let Record::SnapshotSave(r) = r { Some(r) } else { None }).collect();
    if saves.is_empty() {
        return;
    }
    let (b, c) = (&systems.baseline, &systems.candidate);
    let _ = writeln!(
        out,
        "| system | keys | snapshot save → synced file (s) | file MiB | MiB/s | serving member's RSS before → peak during the save MiB |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let mut row = |system: &str| -> [Option<f64>; 2] {
        let save = saves.iter().rev().find(|r| r.system == system);
        let memory = save.map(|s| Memory::fold(&[*s], |s| (s.server_rss_before_kib, s.server_peak_rss_kib)));
        let _ = writeln!(
            out,
            "| {system} | {} | {} | {} | {} | {} |",
            save.map_or("–".to_string(), |s| s.keys.to_string()),
            or_pending(save, |s| format!("{:.2}", s.elapsed_s)),
            or_pending(save, |s| mib(s.bytes)),
            or_pending(save, |s| format!(
                "{:.0}",
                s.bytes as f64 / (1024.0 * 1024.0) / s.elapsed_s.max(1e-9)
            )),
            or_pending(memory, |m| m.cell()),
        );
        [save.map(|s| s.elapsed_s), memory.and_then(|m| m.peak())]
    };
    let [base, base_peak] = row(b);
    let [cand, cand_peak] = row(c);
    let _ = writeln!(
        out,
        "| {c}/{b} | | {} | | | {} |\n",
        ratio_or_pending(cand, base),
        ratio_or_pending(cand_peak, base_peak)
    );
}

fn defrag_table(out: &mut String, records: &[Record], systems: &Systems) {
    let defrags: Vec<&DefragRecord> =
        records.iter().filter_map(|r| if let Record::Defrag(r) = r { Some(r) } else { None }).collect();
    if defrags.is_empty() {
        return;
    }
    let (b, c) = (&systems.baseline, &systems.candidate);
    let _ = writeln!(
        out,
        "| system | keys | writers | db size before → after MiB | defrag (ms) | its puts/s before → during | \
         its put p99 before (ms) | its longest put in flight during (ms) | its failed puts | \
         other members' puts/s before → during | their failed puts |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    let rates = |w: &WritersSeen| format!("{:.0} → {:.0}", w.puts_per_s_before, w.puts_per_s_during);
    let mut row = |system: &str| -> [Option<f64>; 2] {
        let found = defrags.iter().rev().find(|r| r.system == system);
        let d = found.map(|r| &r.stall);
        let others = d.and_then(|d| d.others.as_ref());
        let _ = writeln!(
            out,
            "| {system} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            found.map_or("–".to_string(), |r| r.keys.to_string()),
            found.map_or("–".to_string(), |r| r.writers.to_string()),
            or_pending(d, |d| format!("{} → {}", mib(d.db_size_before), mib(d.db_size_after))),
            or_pending(d, |d| format!("{:.0}", d.defrag_ms)),
            or_pending(d, |d| rates(&d.member)),
            or_pending(d, |d| ms(d.member.before.p99_ms)),
            or_pending(d, |d| ms(d.member.during.max_ms)),
            or_pending(d, |d| d.member.errors.to_string()),
            others.map_or("–".to_string(), rates),
            others.map_or("–".to_string(), |o| o.errors.to_string()),
        );
        [d.map(|d| d.defrag_ms), d.map(|d| d.member.during.max_ms)]
    };
    let [bd, bm] = row(b);
    let [cd, cm] = row(c);
    let _ = writeln!(
        out,
        "| {c}/{b} | | | | {} | | | {} | | | |\n",
        ratio_or_pending(cd, bd),
        ratio_or_pending(cm, bm)
    );
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use super::super::tests::systems;
    use super::*;
    use crate::maintenance::DefragStall;
    use crate::stats::LatencySummary;

    #[test]
    fn restart_rows_split_by_how_the_member_stopped() {
        let records = vec![
            Record::Restart(RestartRecord {
                system: "etcd".into(),
                keys: 100_000,
                ready_ms: 400.0,
                stopped_by: StopSignal::Kill,
            }),
            Record::Restart(RestartRecord {
                system: "etcd".into(),
                keys: 100_000,
                ready_ms: 300.0,
                stopped_by: StopSignal::Term,
            }),
            Record::Restart(RestartRecord {
                system: "raftkv".into(),
                keys: 100_000,
                ready_ms: 150.0,
                stopped_by: StopSignal::Term,
            }),
            Record::Disk(DiskRecord {
                system: "etcd".into(),
                keys: 100_000,
                allocated_bytes: 100 << 20,
                apparent_bytes: 120 << 20,
            }),
        ];
        let text = render(&records, &systems());
        assert!(text.contains("| etcd | 100000 | 400 | 300 | 100.0 | 120.0 |"), "{text}");
        assert!(text.contains("| raftkv | 100000 | pending | 150 | pending | pending |"), "{text}");
        assert!(text.contains("| raftkv/etcd | | pending | 0.50 | pending | |"), "{text}");
        assert!(!text.contains("snapshot save"), "no snapshot records, no table: {text}");
    }

    #[test]
    fn snapshot_rows_without_memory_readings() {
        let save = |system: &str, rss: Option<u64>| {
            Record::SnapshotSave(SnapshotRecord {
                system: system.into(),
                keys: 10,
                bytes: 1 << 20,
                elapsed_s: 1.0,
                server_rss_before_kib: None,
                server_peak_rss_kib: rss,
            })
        };
        let text = render(&[save("etcd", None), save("raftkv", Some(50 * 1024))], &systems());
        assert!(text.contains("| etcd | 10 | 1.00 | 1.0 | 1 | – → – |"), "{text}");
        assert!(text.contains("| raftkv | 10 | 1.00 | 1.0 | 1 | – → 50 |"), "{text}");
        assert!(text.contains("| raftkv/etcd | | 1.00 | | | pending |"), "{text}");
        let text = render(&[save("raftkv", None)], &systems());
        assert!(text.contains("| etcd | – | pending | pending | pending | pending |"), "{text}");
    }

    #[test]
    fn snapshot_and_defrag_tables() {
        let defrag = |system: &str, defrag_ms: f64, max_ms: f64| {
            Record::Defrag(DefragRecord {
                system: system.into(),
                keys: 1_000_000,
                writers: 8,
                stall: DefragStall {
                    defrag_ms,
                    db_size_before: 1 << 30,
                    db_size_after: 512 << 20,
                    member: WritersSeen {
                        puts_per_s_before: 5000.0,
                        puts_per_s_during: 12.0,
                        before: LatencySummary { p99_ms: 3.0, ..LatencySummary::default() },
                        during: LatencySummary { max_ms, ..LatencySummary::default() },
                        errors: 1,
                        first_error: Some("etcdserver: request timed out".into()),
                    },
                    others: (system == "raftkv").then(|| WritersSeen {
                        puts_per_s_before: 4000.0,
                        puts_per_s_during: 3900.0,
                        ..WritersSeen::default()
                    }),
                },
            })
        };
        let records = vec![
            Record::SnapshotSave(SnapshotRecord {
                system: "etcd".into(),
                keys: 1_000_000,
                bytes: 400 << 20,
                elapsed_s: 4.0,
                server_rss_before_kib: Some(600 * 1024),
                server_peak_rss_kib: Some(1000 * 1024),
            }),
            Record::SnapshotSave(SnapshotRecord {
                system: "raftkv".into(),
                keys: 1_000_000,
                bytes: 300 << 20,
                elapsed_s: 2.0,
                server_rss_before_kib: Some(200 * 1024),
                server_peak_rss_kib: Some(250 * 1024),
            }),
            defrag("etcd", 2000.0, 1990.0),
            defrag("raftkv", 1000.0, 1100.0),
        ];
        let text = render(&records, &systems());
        assert!(text.contains("| etcd | 1000000 | 4.00 | 400.0 | 100 | 600 → 1000 |"), "{text}");
        assert!(text.contains("| raftkv | 1000000 | 2.00 | 300.0 | 150 | 200 → 250 |"), "{text}");
        assert!(text.contains("| raftkv/etcd | | 0.50 | | | 0.25 |"), "{text}");
        assert!(
            text.contains(
                "| raftkv | 1000000 | 8 | 1024.0 → 512.0 | 1000 | 5000 → 12 | 3.000 | 1100.000 | 1 | 4000 → 3900 | 0 |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| etcd | 1000000 | 8 | 1024.0 → 512.0 | 2000 | 5000 → 12 | 3.000 | 1990.000 | 1 | – | – |"
            ),
            "{text}"
        );
        assert!(text.contains("| raftkv/etcd | | | | 0.50 | | | 0.55 | | | |"), "{text}");
    }
}
