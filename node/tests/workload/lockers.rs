//! Lockers under faults: clientv3's mutex recipe, every step that writes recorded.
//!
//! A locker on its home member grants a lease of [`LOCK_TTL`] seconds (kept alive in the
//! background while it wants the lock), then:
//! 1. creates its key `lock/m/<lease id>` with the lease by a transaction guarded on the key's
//!    create revision being 0 (the failure branch reads the key; a retry after an unknown outcome
//!    is harmless) — the key's create revision is its place in the queue;
//! 2. waits until no key of `lock/m/` with a lower create revision is left (the last such key's
//!    delete, seen by a watch from the read's revision + 1);
//! 3. reads its own key (recorded): present, it holds the lock from that read's header revision
//!    (etcd's `Mutex.Lock` checks the same, so a session that expired while waiting is not taken
//!    for a holder);
//! 4. holds it briefly, then deletes its key (recorded) and revokes the lease; or, now and then,
//!    "crashes": stops keeping the lease alive and walks away, so the lease's expiry releases it.
//!
//! After the run, each acquisition's release is the revision that deleted its key in the checked
//! history's revision log, and `kvcheck::check_lock_fencing` checks the tenures by revision.

use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, WatchOptions,
};
use kvcheck::{CompareResult, CompareTarget, DbOp, DbOutput, DbRecorder, KeyRange, Response, Revision};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;

use super::leases::{connect_next, record_write};
use super::members::Members;
use super::requests::{REQUEST_TIMEOUT, range_response, revision, txn_response};
use super::watchers::Pins;

/// TTL of a locker's lease, seconds.
pub const LOCK_TTL: i64 = 3;
/// The lock's prefix.
pub const LOCK_PREFIX: &str = "lock/m/";
/// Client ids of the lockers start here.
pub const LOCKER_CLIENTS: u64 = 2_000;

/// One acquisition, as the locker saw it.
#[derive(Debug, Clone)]
pub struct Held {
    pub holder: String,
    pub key: String,
    pub create_revision: Revision,
    pub acquired_at: Revision,
}

/// What one locker did.
#[derive(Debug, Default, Clone)]
pub struct LockerLog {
    pub held: Vec<Held>,
    pub sessions: usize,
    pub crashed: usize,
    /// Sessions whose key was gone (lease expired) when the wait ended.
    pub expired_while_waiting: usize,
}

/// Keeps `lease` alive every 500 ms until `alive` turns false, reconnecting on errors.
async fn keep_alive(members: Members, home: usize, lease: i64, mut alive: watch::Receiver<bool>) {
    let mut attempt = 0;
    while *alive.borrow() {
        attempt += 1;
        let Some((_, mut c)) = connect_next(&members, home, attempt).await else { continue };
        let Ok(Ok((mut keeper, mut answers))) =
            tokio::time::timeout(REQUEST_TIMEOUT, c.lease_keep_alive(lease)).await
        else {
            continue;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = alive.changed() => {}
            }
            if !*alive.borrow() {
                return;
            }
            // The request goes through a bounded channel: a stalled connection can block it.
            if !matches!(tokio::time::timeout(Duration::from_secs(1), keeper.keep_alive()).await, Ok(Ok(())))
            {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(1), answers.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                Ok(Ok(Some(_))) => return,
                _ => break,
            }
        }
    }
}

/// One locker (see the module docs), until `stop` turns true.
pub async fn locker(
    index: u64,
    members: Members,
    rec: DbRecorder,
    pins: Pins,
    stop: watch::Receiver<bool>,
    seed: u64,
) -> LockerLog {
    let home = index as usize % members.len();
    let client_id = LOCKER_CLIENTS + index;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (0x10c0 + index));
    let mut log = LockerLog::default();
    let mut attempt = 0;
    while !*stop.borrow() {
        attempt += 1;
        let Some((_, mut c)) = connect_next(&members, home, attempt).await else { continue };
        let Ok(Ok(grant)) = tokio::time::timeout(REQUEST_TIMEOUT, c.lease_grant(LOCK_TTL, None)).await else {
            continue;
        };
        let lease = grant.id();
        log.sessions += 1;
        let (alive_tx, alive_rx) = watch::channel(true);
        let keeper = tokio::spawn(keep_alive(members.clone(), home, lease, alive_rx));
        let key = format!("{LOCK_PREFIX}{lease:x}");
        let holder = format!("l{index}");
        let outcome =
            session(&mut c, &members, home, &mut attempt, &rec, client_id, &pins, &key, lease, &stop).await;
        let crash = rng.random_bool(0.1);
        if let Some((create_revision, acquired_at)) = outcome {
            log.held.push(Held { holder: holder.clone(), key: key.clone(), create_revision, acquired_at });
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
        } else if !*stop.borrow() {
            log.expired_while_waiting += 1;
        }
        if crash && !*stop.borrow() {
            log.crashed += 1;
            let _ = alive_tx.send(false);
            let _ = keeper.await;
            continue;
        }
        // Unlock: delete the key (until an answer says it is gone), then revoke the lease.
        pins.unpin(&key);
        let mut deleted = false;
        for _ in 0..10 {
            let op = DbOp::DeleteRange { range: KeyRange::single(&key) };
            let fut = async {
                c.delete(key.as_str(), None).await.map(|r| DbOutput {
                    revision: revision(r.header()),
                    response: Response::DeleteRange { deleted: r.deleted().max(0) as u64 },
                })
            };
            if record_write(&rec, client_id, op, fut).await.is_ok() {
                deleted = true;
                break;
            }
            attempt += 1;
            if let Some((_, next)) = connect_next(&members, home, attempt).await {
                c = next;
            }
        }
        let _ = alive_tx.send(false);
        let _ = keeper.await;
        if deleted {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, c.lease_revoke(lease)).await;
        }
    }
    log
}

/// Steps 1–3: `Some((create revision, acquired at))` if the locker holds the lock.
#[allow(clippy::too_many_arguments)]
async fn session(
    c: &mut etcd_client::Client,
    members: &Members,
    home: usize,
    attempt: &mut usize,
    rec: &DbRecorder,
    client_id: u64,
    pins: &Pins,
    key: &str,
    lease: i64,
    stop: &watch::Receiver<bool>,
) -> Option<(Revision, Revision)> {
    // 1. Create the key.
    pins.expect_delete(key);
    let op = DbOp::Txn {
        compare: vec![kvcheck::Compare {
            key: key.to_string(),
            target: CompareTarget::CreateRevision(0),
            result: CompareResult::Equal,
        }],
        success: vec![DbOp::Put { key: key.to_string(), value: String::new(), prev_kv: false }],
        failure: vec![DbOp::Range { range: KeyRange::single(key) }],
    };
    let create_revision = loop {
        if *stop.borrow() {
            return None;
        }
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, "", Some(PutOptions::new().with_lease(lease)))])
            .or_else([TxnOp::get(key, None)]);
        let fut = async {
            c.txn(txn).await.map(|r| DbOutput { revision: revision(r.header()), response: txn_response(&r) })
        };
        match record_write(rec, client_id, op.clone(), fut).await {
            Ok(DbOutput { revision, response: Response::Txn { succeeded: true, .. } }) => break revision,
            Ok(DbOutput { response: Response::Txn { responses, .. }, .. }) => {
                match responses.first() {
                    Some(Response::Range { kvs, .. }) if !kvs.is_empty() => break kvs[0].create_revision,
                    // The key is gone: the lease expired.
                    _ => return None,
                }
            }
            Ok(_) => return None,
            Err(f) if f.reason.contains("lease not found") => return None,
            Err(_) => {
                *attempt += 1;
                if let Some((_, next)) = connect_next(members, home, *attempt).await {
                    *c = next;
                }
            }
        }
    };
    // 2. Wait for the predecessors' keys to go.
    loop {
        if *stop.borrow() {
            return None;
        }
        let options = GetOptions::new()
            .with_prefix()
            .with_max_create_revision(create_revision - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(1);
        let got = match tokio::time::timeout(REQUEST_TIMEOUT, c.get(LOCK_PREFIX, Some(options))).await {
            Ok(Ok(r)) => r,
            _ => {
                *attempt += 1;
                if let Some((_, next)) = connect_next(members, home, *attempt).await {
                    *c = next;
                }
                continue;
            }
        };
        let Some(predecessor) = got.kvs().first() else { break };
        let from = revision(got.header()) + 1;
        let options = WatchOptions::new().with_start_revision(from);
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(REQUEST_TIMEOUT, c.watch(predecessor.key().to_vec(), Some(options))).await
        else {
            continue;
        };
        // Until the delete, a break of the stream, or a stop; then look again.
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                m = stream.message() => match m {
                    Ok(Some(r)) if r.events().iter().any(|e| e.event_type() == etcd_client::EventType::Delete) => break,
                    Ok(Some(r)) if !r.canceled() => {}
                    _ => break,
                },
                _ = tick.tick() => if *stop.borrow() { return None },
            }
        }
    }
    // 3. Still the owner? Read the own key (recorded).
    let op = DbOp::Range { range: KeyRange::single(key) };
    let pending = rec.invoke(client_id, op);
    match tokio::time::timeout(REQUEST_TIMEOUT, c.get(key, None)).await {
        Ok(Ok(r)) => {
            let out = DbOutput { revision: revision(r.header()), response: range_response(&r) };
            rec.complete(pending, kvcheck::DbOutcome::Ok(out.clone()));
            let present = matches!(&out.response, Response::Range { kvs, .. } if kvs.iter().any(|kv| kv.create_revision == create_revision));
            present.then_some((create_revision, out.revision))
        }
        _ => {
            rec.complete(pending, kvcheck::DbOutcome::Failed);
            None
        }
    }
}
