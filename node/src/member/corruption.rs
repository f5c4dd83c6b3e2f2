//! Corruption checks between members (etcd's `--experimental-initial-corrupt-check` and
//! `--experimental-corrupt-check-time`).
//!
//! Members that applied the same entries hold the same history, so their HashKV at a revision
//! is equal when they compacted at the same revision. A difference means one copy went wrong
//! (a damaged disk, a bug): serving it would hand out wrong data. The periodic check runs on
//! the leader, which asks every member its HashKV at the leader's revision and raises a
//! CORRUPT alarm for each one that differs; the alarm goes through the log, and every member
//! then refuses reads and writes until an operator clears it. The initial check runs as a
//! member starts: if a peer's history differs from its own, it refuses to start.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::api::ApiContext;
use crate::peer_client::PeerDialer;
use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::{AlarmRequest, AlarmType, HashKvRequest};
use crate::proto::kvserverpb::internal_request::Request;
use crate::storage::KvError;

/// How long a member has to answer with its hash.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the initial check refuses to start the member.
#[derive(Debug, thiserror::Error)]
pub enum CorruptionError {
    #[error(
        "found data inconsistency with peers: this member's history hashes to {local:08x} at revision {revision}, member {peer:x}'s to {remote:08x}"
    )]
    Mismatch { peer: u64, revision: i64, local: u32, remote: u32 },
    #[error("cannot hash this member's history: {0}")]
    Local(#[from] KvError),
}

/// One member whose history differs from this one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mismatch {
    peer: u64,
    revision: i64,
    local: u32,
    remote: u32,
}

/// The members (other than this one) whose HashKV at this member's current revision differs
/// from this member's, among those that answered with the same compaction revision.
async fn mismatches(ctx: &ApiContext, dialer: &PeerDialer) -> Result<Vec<Mismatch>, KvError> {
    let mine = ctx.kv.hash_kv(0)?;
    let mut found = Vec::new();
    for member in ctx.kv.members()?.into_iter().filter(|m| m.id != ctx.member_id) {
        let mut client = match dialer.member(member.id) {
            Ok(c) => c,
            Err(e) => {
                debug!(peer = format!("{:x}", member.id), error = %e, "corruption check: cannot dial");
                continue;
            }
        };
        let asked = client.hash_kv(HashKvRequest { revision: mine.hash_revision });
        let theirs = match tokio::time::timeout(ASK_TIMEOUT, asked).await {
            Ok(Ok(answer)) => answer.into_inner(),
            // Unreachable, behind this revision, or compacted past it: nothing to compare.
            Ok(Err(status)) => {
                debug!(peer = format!("{:x}", member.id), %status, "corruption check: no comparable hash");
                continue;
            }
            Err(_) => continue,
        };
        if theirs.compact_revision == mine.compact_revision && theirs.hash != mine.hash {
            found.push(Mismatch {
                peer: member.id,
                revision: mine.hash_revision,
                local: mine.hash,
                remote: theirs.hash,
            });
        }
    }
    Ok(found)
}

/// The check a member makes before serving: refuses to start when a peer's history differs.
pub async fn initial_check(ctx: &ApiContext, dialer: &PeerDialer) -> Result<(), CorruptionError> {
    match mismatches(ctx, dialer).await?.first() {
        Some(m) => Err(CorruptionError::Mismatch {
            peer: m.peer,
            revision: m.revision,
            local: m.local,
            remote: m.remote,
        }),
        None => {
            info!("initial corruption check passed");
            Ok(())
        }
    }
}

/// Every `every`, while this member leads, compares every member's history with its own and
/// raises a CORRUPT alarm for each that differs.
pub async fn run_periodic(
    ctx: Arc<ApiContext>,
    dialer: Arc<PeerDialer>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if !ctx.node.status().is_leader {
            continue;
        }
        let found = match mismatches(&ctx, &dialer).await {
            Ok(found) => found,
            Err(e) => {
                warn!(error = %e, "corruption check: cannot hash this member's history");
                continue;
            }
        };
        for m in found {
            error!(
                peer = format!("{:x}", m.peer),
                revision = m.revision,
                local = format!("{:08x}", m.local),
                remote = format!("{:08x}", m.remote),
                "corruption check: a member's history differs from the leader's; raising CORRUPT"
            );
            let raise = AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: m.peer,
                alarm: AlarmType::Corrupt as i32,
            };
            if let Err(e) = ctx.propose(Request::Alarm(raise)).await {
                warn!(error = %e, "could not raise the CORRUPT alarm");
            }
        }
    }
}
