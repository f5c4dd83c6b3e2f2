//! Lease holders under faults, and what their leases must do.
//!
//! Each holder grants a lease of [`LEASE_TTL`] seconds on its home member, puts one key
//! `lease/h<holder>-<lease id>` with it (recorded in the history like any write, so the whole
//! database stays checkable; the server's delete of the key is pinned by the watchers, see
//! [`super::watchers::Pins`]), and keeps the lease alive through the keep-alive stream every
//! [`KEEP_ALIVE_EVERY`], reconnecting to the next member on any error or silence, recording each
//! answer's send time, arrival time and TTL. Some holders stop keeping alive at a seeded instant;
//! the others revoke their lease when the run ends.
//!
//! The verdict ([`check_wait`], [`check_keys`]), with `allowance` = the election timeout + [`SLACK`]:
//! - (a) no lease is gone (a watcher saw its key deleted, or a keep-alive answered TTL 0) before
//!   `sent + TTL - allowance` for a keep-alive sent at `sent` that was answered with TTL > 0,
//!   unless its holder had revoked it;
//! - (b) every lease whose holder stopped (or revoked it) is gone, its key seen deleted, within
//!   `TTL + election timeout + `[`SLACK`] of the later of the stop and the heal (a new leader
//!   restarts lease clocks with an election timeout on top);
//! - (c) once every holder stopped, no key of `[l, m)` is in any member's final read, and no
//!   watcher sees a key of `[l, m)` put again after it saw it deleted (keys are unique per lease).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions};
use kvcheck::{ChangeKind, DbOp, DbOutcome, DbOutput, DbRecorder, KeyValue, Response, StreamItem};
use tokio::sync::watch;

use super::connect;
use super::members::Members;
use super::requests::{Failure, REQUEST_TIMEOUT, classify, revision};
use super::watchers::Pins;

/// TTL of the holders' leases, seconds.
pub const LEASE_TTL: i64 = 5;
/// How often holders send a keep-alive.
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(500);
/// Added to the election timeout in the bounds (scheduling on a loaded 2-core machine, the
/// watch delivering the delete).
pub const SLACK: Duration = Duration::from_secs(2);
/// Client ids of the holders start here.
pub const HOLDER_CLIENTS: u64 = 1_000;

/// One keep-alive answer.
#[derive(Debug, Clone, Copy)]
pub struct KeepAlive {
    pub sent: Instant,
    pub got: Instant,
    pub ttl: i64,
}

/// What one holder did.
#[derive(Debug, Clone)]
pub struct LeaseLog {
    pub holder: String,
    pub lease: Option<i64>,
    pub key: Option<String>,
    /// True once a put of the key was acknowledged.
    pub put_acked: bool,
    pub answers: Vec<KeepAlive>,
    /// When the holder stopped keeping alive on purpose (mid-run), or sent its revoke (at the end).
    pub stopped_at: Option<Instant>,
    pub revoked: bool,
    /// When a keep-alive answered that the lease is gone.
    pub gone_by_keep_alive: Option<Instant>,
}

/// Sends a write with [`REQUEST_TIMEOUT`] and records it.
pub async fn record_write<F>(rec: &DbRecorder, client: u64, op: DbOp, fut: F) -> Result<DbOutput, Failure>
where
    F: std::future::Future<Output = Result<DbOutput, etcd_client::Error>>,
{
    let pending = rec.invoke(client, op);
    let failure = match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(Ok(out)) => {
            rec.complete(pending, DbOutcome::Ok(out.clone()));
            return Ok(out);
        }
        Ok(Err(e)) => classify(&e),
        Err(_) => Failure { definite: false, reason: "client timeout".into() },
    };
    rec.complete(pending, if failure.definite { DbOutcome::Failed } else { DbOutcome::Unknown });
    Err(failure)
}

/// A connection to the member after `home` + `attempt`, skipping members marked down.
pub async fn connect_next(members: &Members, home: usize, attempt: usize) -> Option<(usize, Client)> {
    let member = members.route((home + attempt) % members.len());
    connect(&[members.endpoint(member).to_string()]).await.map(|c| (member, c))
}

/// One lease holder (see the module docs); `stop_after` is when it stops keeping alive, if it
/// does; it revokes the lease when `stop` turns true.
pub async fn holder(
    index: u64,
    members: Members,
    rec: DbRecorder,
    pins: Pins,
    mut stop: watch::Receiver<bool>,
    stop_after: Option<Duration>,
) -> LeaseLog {
    let started = Instant::now();
    let home = index as usize % members.len();
    let client_id = HOLDER_CLIENTS + index;
    let mut log = LeaseLog {
        holder: format!("h{index}"),
        lease: None,
        key: None,
        put_acked: false,
        answers: Vec::new(),
        stopped_at: None,
        revoked: false,
        gone_by_keep_alive: None,
    };
    let mut attempt = 0;
    // Grant and put, retrying on the next member.
    let (lease, key, mut client) = loop {
        if *stop.borrow() {
            return log;
        }
        attempt += 1;
        let Some((_, mut c)) = connect_next(&members, home, attempt).await else { continue };
        let lease = match log.lease {
            Some(lease) => lease,
            None => match tokio::time::timeout(REQUEST_TIMEOUT, c.lease_grant(LEASE_TTL, None)).await {
                Ok(Ok(r)) => *log.lease.insert(r.id()),
                _ => continue,
            },
        };
        let key = format!("lease/h{index}-{lease:x}");
        log.key = Some(key.clone());
        pins.expect_delete(&key);
        let op = DbOp::Put { key: key.clone(), value: format!("h{index}"), prev_kv: false };
        let put = c.put(key.as_str(), format!("h{index}"), Some(PutOptions::new().with_lease(lease)));
        let fut = async {
            put.await.map(|r| DbOutput {
                revision: revision(r.header()),
                response: Response::Put { prev_kv: None },
            })
        };
        let result = record_write(&rec, client_id, op, fut).await;
        match result {
            Ok(_) => {
                log.put_acked = true;
                break (lease, key, c);
            }
            Err(f) if f.reason.contains("lease not found") => return log,
            Err(_) => {}
        }
    };
    let _ = key;
    let mut tick = tokio::time::interval(KEEP_ALIVE_EVERY);
    'reconnect: loop {
        let Ok(Ok((mut keeper, mut answers))) =
            tokio::time::timeout(REQUEST_TIMEOUT, client.lease_keep_alive(lease)).await
        else {
            attempt += 1;
            match connect_next(&members, home, attempt).await {
                Some((_, c)) => client = c,
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
            continue;
        };
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                log.stopped_at = Some(Instant::now());
                let revoke = tokio::time::timeout(REQUEST_TIMEOUT, client.lease_revoke(lease)).await;
                log.revoked = matches!(revoke, Ok(Ok(_)));
                return log;
            }
            if stop_after.is_some_and(|after| started.elapsed() >= after) {
                log.stopped_at = Some(Instant::now());
                return log;
            }
            let sent = Instant::now();
            // The request goes through a bounded channel: a stalled connection can block it.
            if !matches!(tokio::time::timeout(Duration::from_secs(1), keeper.keep_alive()).await, Ok(Ok(())))
            {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(1), answers.message()).await {
                Ok(Ok(Some(r))) => {
                    let got = Instant::now();
                    log.answers.push(KeepAlive { sent, got, ttl: r.ttl() });
                    if r.ttl() <= 0 {
                        log.gone_by_keep_alive = Some(got);
                        return log;
                    }
                }
                _ => break,
            }
        }
        attempt += 1;
        if let Some((_, c)) = connect_next(&members, home, attempt).await {
            client = c;
        }
        continue 'reconnect;
    }
}

/// The lease verdict's numbers.
#[derive(Debug, Default)]
pub struct LeaseSummary {
    pub leases: usize,
    pub keep_alive_answers: usize,
    pub stopped_mid_run: usize,
    pub revoked: usize,
    /// The longest time from a holder's stop (or revoke) to its lease seen gone.
    pub slowest_expiry: Duration,
    /// The longest time from the later of stop and heal to the lease seen gone: what the bound
    /// (TTL + election timeout + [`SLACK`]) is asserted on.
    pub slowest_bounded: Duration,
}

/// Waits for and checks (a) and (b) (see the module docs), for holders stopped by now.
pub async fn check_wait(
    logs: &[LeaseLog],
    pins: &Pins,
    heal_at: Instant,
    election_timeout: Duration,
) -> Result<LeaseSummary, Vec<String>> {
    let ttl = Duration::from_secs(LEASE_TTL as u64);
    let allowance = election_timeout + SLACK;
    let mut summary = LeaseSummary::default();
    let mut problems = Vec::new();
    for log in logs {
        let (Some(key), Some(lease)) = (&log.key, log.lease) else { continue };
        summary.leases += 1;
        summary.keep_alive_answers += log.answers.len();
        summary.revoked += usize::from(log.revoked);
        summary.stopped_mid_run += usize::from(log.stopped_at.is_some() && !log.revoked);
        // (b)
        if let Some(stopped) = log.stopped_at {
            let from = stopped.max(heal_at);
            let deadline = from + ttl + election_timeout + SLACK;
            match pins.wait_deleted(key, deadline).await {
                Some(at) => {
                    summary.slowest_expiry = summary.slowest_expiry.max(at.saturating_duration_since(stopped));
                    summary.slowest_bounded = summary.slowest_bounded.max(at.saturating_duration_since(from));
                }
                // The put never took effect (no acknowledged put; the lease is gone).
                None if !log.put_acked && log.gone_by_keep_alive.is_some() => {}
                None => problems.push(format!(
                    "(b) lease {lease:x} of {}: key {key} not seen deleted within TTL {ttl:?} + election timeout \
                     {election_timeout:?} + {SLACK:?} of the later of its stop and the heal",
                    log.holder
                )),
            }
        }
        // (a)
        let Some(gone) = [pins.deleted_at(key), log.gone_by_keep_alive].into_iter().flatten().min() else {
            continue;
        };
        let revoked_from = if log.revoked { log.stopped_at } else { None };
        for answer in log.answers.iter().filter(|a| a.ttl > 0) {
            let promised = answer.sent + Duration::from_secs(answer.ttl as u64);
            let promised = revoked_from.map_or(promised, |r| promised.min(r + allowance));
            if gone + allowance < promised {
                problems.push(format!(
                    "(a) lease {lease:x} of {}: gone {:?} after a keep-alive sent at +{:?} answered TTL {} s",
                    log.holder,
                    gone.saturating_duration_since(answer.sent),
                    answer.sent.saturating_duration_since(logs_start(logs)),
                    answer.ttl
                ));
                break;
            }
        }
    }
    if problems.is_empty() { Ok(summary) } else { Err(problems) }
}

/// (c): every member's final read of `[l, m)` is empty (every lease ended, every lock was let go
/// before it), and no watcher saw a key of `[l, m)` put again after its delete.
pub fn check_keys(logs: &[LeaseLog], finals: &[Vec<KeyValue>], streams: &[&[StreamItem]]) -> Vec<String> {
    let mut problems = Vec::new();
    for (member, kvs) in finals.iter().enumerate() {
        for kv in kvs {
            let lease = logs.iter().find(|l| l.key.as_deref() == Some(kv.key.as_str()));
            problems.push(format!(
                "(c) key {} (holder {:?}) is still in member {member}'s final read",
                kv.key,
                lease.map(|l| &l.holder)
            ));
        }
    }
    for items in streams {
        let mut deleted_at: HashMap<&str, i64> = HashMap::new();
        for item in *items {
            let StreamItem::Events { member, events } = item else { continue };
            for e in events {
                let kv = &e.change.kv;
                if !kv.key.starts_with("lease/") && !kv.key.starts_with("lock/") {
                    continue;
                }
                match e.change.kind {
                    ChangeKind::Delete => {
                        deleted_at.insert(&kv.key, kv.mod_revision);
                    }
                    ChangeKind::Put => {
                        if let Some(at) = deleted_at.get(kv.key.as_str()) {
                            problems.push(format!(
                                "(c) member {member} sent a put of {} at revision {} after its delete at {at}",
                                kv.key, kv.mod_revision
                            ));
                        }
                    }
                }
            }
        }
    }
    problems
}

/// The earliest keep-alive send time, for readable offsets.
fn logs_start(logs: &[LeaseLog]) -> Instant {
    logs.iter().flat_map(|l| l.answers.first()).map(|a| a.sent).min().unwrap_or_else(Instant::now)
}
