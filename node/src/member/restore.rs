//! `kvnode snapshot restore`: a member's data dir made from a backup, as a founding member of
//! a new cluster (etcdutl's meaning). The key space (history, revision, compaction, leases)
//! comes from the backup; the membership, cluster id and log are the new cluster's, exactly as
//! if the member had bootstrapped with the same `--initial-cluster`, so every member restored
//! from the same file with the same flags starts in the same state.
//!
//! The data dir appears only once complete: everything is written into `<data dir>.restoring`
//! and renamed at the end, so an interrupted restore leaves nothing a member would start from.

use std::path::{Path, PathBuf};

use crate::config::{SnapshotRestoreFlags, parse_initial_cluster};
use crate::storage::backup::{BackupError, BackupSummary, Phase};
use crate::storage::{Store, StoreError};

use super::{ConfigError, Founding, Identity, StartError, bootstrap_log};

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("{0}")]
    Storage(#[from] StoreError),
    #[error(
        "--initial-advertise-peer-urls {given:?} differ from {name:?}'s URLs in --initial-cluster {listed:?}"
    )]
    PeerUrls { name: String, given: Vec<String>, listed: Vec<String> },
    #[error("cannot use the data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
}

/// What a restore made.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub data_dir: PathBuf,
    pub identity: Identity,
    pub backup: BackupSummary,
}

/// Restores `flags.file` into a new data dir; `progress` hears of the bytes read.
pub fn restore(
    flags: &SnapshotRestoreFlags,
    progress: impl FnMut(Phase, u64, u64),
) -> Result<RestoreReport, RestoreError> {
    let data_dir = flags.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.kvnode", flags.name)));
    check_peer_urls(flags)?;
    if has_entries(&data_dir)? {
        return Err(BackupError::DataDirExists(data_dir.display().to_string()).into());
    }
    let staging = staging_dir(&data_dir);
    if staging.exists() {
        // Left by an interrupted restore: it never became a data dir.
        std::fs::remove_dir_all(&staging)
            .map_err(|source| RestoreError::DataDir { path: staging.clone(), source })?;
    }
    std::fs::create_dir_all(&staging)
        .map_err(|source| RestoreError::DataDir { path: staging.clone(), source })?;
    let founding = Founding {
        name: &flags.name,
        initial_cluster: &flags.initial_cluster,
        token: &flags.initial_cluster_token,
    };
    let written = write_data_dir(&staging, flags, &founding, progress);
    let (identity, backup) = match written {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if data_dir.exists() {
        std::fs::remove_dir(&data_dir)
            .map_err(|source| RestoreError::DataDir { path: data_dir.clone(), source })?;
    }
    std::fs::rename(&staging, &data_dir)
        .map_err(|source| RestoreError::DataDir { path: data_dir.clone(), source })?;
    Ok(RestoreReport { data_dir, identity, backup })
}

/// Fills the staging dir: the key space from the backup, then the new cluster's log and the
/// member's identity, all made durable.
fn write_data_dir(
    staging: &Path,
    flags: &SnapshotRestoreFlags,
    founding: &Founding<'_>,
    progress: impl FnMut(Phase, u64, u64),
) -> Result<(Identity, BackupSummary), RestoreError> {
    let store = Store::open(staging)?;
    let restored = store.kv().restore_backup(&flags.file, progress)?;
    let identity = bootstrap_log(founding, &store)?;
    store.kv().set_identity(identity.member_id, identity.cluster_id)?;
    store.sync()?;
    Ok((identity, restored.summary))
}

fn staging_dir(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".restoring");
    data_dir.with_file_name(name)
}

fn has_entries(dir: &Path) -> Result<bool, RestoreError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(RestoreError::DataDir { path: dir.to_path_buf(), source }),
    }
}

/// The member's peer URLs must be the ones `--initial-cluster` gives its name, or its id (made
/// from them) would not be the one the others expect.
fn check_peer_urls(flags: &SnapshotRestoreFlags) -> Result<(), RestoreError> {
    let pairs =
        parse_initial_cluster(&flags.initial_cluster).map_err(ConfigError::from).map_err(StartError::from)?;
    let mut listed: Vec<String> =
        pairs.into_iter().filter(|(n, _)| *n == flags.name).map(|(_, u)| u).collect();
    if listed.is_empty() {
        return Err(StartError::from(ConfigError::NameNotInCluster(flags.name.clone())).into());
    }
    let mut given = flags.initial_advertise_peer_urls.clone();
    listed.sort();
    given.sort();
    if listed != given {
        return Err(RestoreError::PeerUrls { name: flags.name.clone(), given, listed });
    }
    Ok(())
}
