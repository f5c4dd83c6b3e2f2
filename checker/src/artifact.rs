//! Saves a violation's sub-history where a developer (or CI's artifact upload) can find it.
//!
//! The file is a plain [`History`] in JSON, so it can be loaded with
//! [`History::read_json_file`] and checked again after a fix.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::history::{History, HistoryError};

/// Writes `history` to a new, uniquely named file in `dir` (created if missing) and keeps it.
pub(crate) fn write_violation(dir: &Path, history: &History) -> Result<PathBuf, HistoryError> {
    write_json_artifact(dir, history)
}

/// Writes `value` as pretty JSON to a new `kvcheck-violation-*.json` file in `dir` (created if
/// missing), synced, and keeps it.
pub(crate) fn write_json_artifact<T: Serialize>(dir: &Path, value: &T) -> Result<PathBuf, HistoryError> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(value)?;
    let mut file = tempfile::Builder::new().prefix("kvcheck-violation-").suffix(".json").tempfile_in(dir)?;
    file.write_all(json.as_bytes())?;
    file.as_file().sync_all()?;
    let (_, path) = file.keep().map_err(|error| HistoryError::Io(error.error))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Operation, Outcome, Output};

    #[test]
    fn written_file_reads_back_as_the_same_history() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let history = History::new(vec![Operation {
            id: 4,
            client: 2,
            op: Op::Get { key: "k".into() },
            invoke: 10,
            complete: 20,
            outcome: Outcome::Ok(Output::Get { value: Some("v".into()) }),
        }])
        .unwrap();
        let first = write_violation(&nested, &history).unwrap();
        let second = write_violation(&nested, &history).unwrap();
        assert_ne!(first, second);
        assert!(first.starts_with(&nested));
        assert_eq!(History::read_json_file(&first).unwrap(), history);
    }
}
