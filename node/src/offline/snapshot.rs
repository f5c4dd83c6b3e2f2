//! `kvnode snapshot status` and `kvnode snapshot restore`.

use std::fmt::Write as _;

use crate::config::{SnapshotCommand, SnapshotStatusFlags, StatusFormat};
use crate::member::restore::{self, RestoreError};
use crate::storage::backup::{self, BackupError, BackupSummary};

use super::progress::{Progress, human_bytes};

/// Why a snapshot command failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Backup(#[from] BackupError),
    #[error("{0}")]
    Restore(#[from] RestoreError),
}

/// Runs a snapshot command; returns what to print on stdout.
pub fn run(command: &SnapshotCommand) -> Result<String, SnapshotError> {
    match command {
        SnapshotCommand::Status(flags) => status(flags),
        SnapshotCommand::Restore(flags) => {
            let mut progress = Progress::new("restoring");
            let report = restore::restore(flags, |phase, done, total| progress.report(phase, done, total));
            progress.finish();
            let report = report?;
            Ok(format!(
                "restored revision {} ({} keys, hash {:08x}) into {} as member {:x} of cluster {:x}\n",
                report.backup.revision,
                report.backup.keys,
                report.backup.hash_kv,
                report.data_dir.display(),
                report.identity.member_id,
                report.identity.cluster_id,
            ))
        }
    }
}

fn status(flags: &SnapshotStatusFlags) -> Result<String, SnapshotError> {
    let mut progress = Progress::new("reading");
    let summary = backup::inspect(&flags.file, |phase, done, total| progress.report(phase, done, total));
    progress.finish();
    Ok(render_status(&summary?, flags.write_out))
}

/// etcdutl's `snapshot status` output: hash, revision, total keys, total size.
pub fn render_status(s: &BackupSummary, format: StatusFormat) -> String {
    let size = human_bytes(s.size);
    match format {
        StatusFormat::Simple => format!("{:08x}, {}, {}, {}\n", s.hash_kv, s.revision, s.keys, size),
        StatusFormat::Json => format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{},\"compactRevision\":{},\"historyEntries\":{},\"leases\":{},\"clusterId\":\"{:x}\",\"memberId\":\"{:x}\",\"version\":\"{}\"}}\n",
            s.hash_kv,
            s.revision,
            s.keys,
            s.size,
            s.compact_revision,
            s.history_entries,
            s.leases,
            s.cluster_id,
            s.member_id,
            s.server_version.escape_default(),
        ),
        StatusFormat::Table => {
            let cells = [format!("{:08x}", s.hash_kv), s.revision.to_string(), s.keys.to_string(), size];
            let heads = ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"];
            let widths: Vec<usize> =
                heads.iter().zip(&cells).map(|(h, c)| h.len().max(c.len()) + 2).collect();
            let rule: String = widths.iter().fold(String::from("+"), |mut acc, w| {
                acc.push_str(&"-".repeat(*w));
                acc.push('+');
                acc
            });
            let row = |values: &[&str]| {
                values.iter().zip(&widths).fold(String::from("|"), |mut acc, (v, w)| {
                    let _ = write!(acc, " {v:^width$} |", width = w - 2);
                    acc
                })
            };
            let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
            format!("{rule}\n{}\n{rule}\n{}\n{rule}\n", row(&heads), row(&cells))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> BackupSummary {
        BackupSummary {
            revision: 12,
            compact_revision: -1,
            applied_index: 30,
            cluster_id: 0xabc,
            member_id: 0xdef,
            server_version: "3.5.13".into(),
            created_unix: 0,
            keys: 20,
            history_entries: 25,
            leases: 1,
            hash_kv: 0xfe01cf57,
            size: 25_120,
        }
    }

    #[test]
    fn status_prints_like_etcdutl() {
        assert_eq!(render_status(&summary(), StatusFormat::Simple), "fe01cf57, 12, 20, 25.1 kB\n");
        let table = render_status(&summary(), StatusFormat::Table);
        assert!(table.contains("|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |"), "{table}");
        assert!(table.contains("| fe01cf57 |    12    |     20     |  25.1 kB   |"), "{table}");
        let json = render_status(&summary(), StatusFormat::Json);
        assert!(
            json.starts_with("{\"hash\":4261531479,\"revision\":12,\"totalKey\":20,\"totalSize\":25120"),
            "{json}"
        );
    }
}
