//! What etcd's Lock and Election services are made of (etcd runs its client-side
//! `concurrency` recipes inside the server): transactions and linearizable reads through this
//! member, exactly as a client's would go, and waiting for keys to be deleted with this
//! member's own watch hub.
//!
//! Both services key their waiters as `<name>/<lease id in hex>`; the waiter whose key was
//! created first (lowest create revision) holds the lock or leads the election, and each
//! waiter waits for the deletion of the one created just before it.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, PutRequest, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, TxnRequest, TxnResponse, request_op, response_op,
};
use crate::proto::kvserverpb::internal_request::Request as Write;
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::{Event, KeyValue};
use crate::storage::Outcome;
use crate::watch::{Notice, StartAt, StreamId, WatchHub, WatchRange, WatchSpec};

use super::context::ApiContext;
use super::errors::EtcdError;
use super::lease::LeaseService;

/// The TTL of the lease granted when a Lock or Campaign names none (etcd's session default).
pub const DEFAULT_SESSION_TTL: i64 = 60;

/// Transactions, reads and deletion waits on behalf of the Lock and Election services.
pub struct Recipes {
    ctx: Arc<ApiContext>,
    hub: WatchHub,
    leases: Arc<LeaseService>,
}

impl Recipes {
    pub fn new(ctx: Arc<ApiContext>, hub: WatchHub, leases: Arc<LeaseService>) -> Self {
        Self { ctx, hub, leases }
    }

    /// The header of a response at `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        self.ctx.header(revision)
    }

    /// The lease a waiter's key goes with: the caller's, or for 0 a fresh one of
    /// [`DEFAULT_SESSION_TTL`] that nobody keeps alive (as etcd's server-side session does).
    pub async fn session_lease(&self, lease: i64) -> Result<i64, EtcdError> {
        if lease != 0 {
            return Ok(lease);
        }
        let granted = self.leases.grant(LeaseGrantRequest { ttl: DEFAULT_SESSION_TTL, id: 0 }).await?;
        Ok(granted.id)
    }

    /// Runs a transaction as the KV service would, header included.
    pub async fn txn(&self, txn: TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.ctx.check_quota().await?;
        let applied = self.ctx.propose(Write::Txn(txn)).await?;
        match applied.outcome {
            Outcome::Txn(mut resp) => {
                resp.header = Some(self.ctx.header(applied.revision));
                Ok(resp)
            }
            Outcome::Rejected(e) => Err(EtcdError::from(&e)),
            _ => Err(EtcdError::Internal("unexpected apply result".into())),
        }
    }

    /// Deletes one key, header included.
    pub async fn delete(&self, key: Vec<u8>) -> Result<DeleteRangeResponse, EtcdError> {
        let request = DeleteRangeRequest { key, range_end: Vec::new(), prev_kv: false };
        let applied = self.ctx.propose(Write::DeleteRange(request)).await?;
        match applied.outcome {
            Outcome::DeleteRange(mut resp) => {
                resp.header = Some(self.ctx.header(applied.revision));
                Ok(resp)
            }
            Outcome::Rejected(e) => Err(EtcdError::from(&e)),
            _ => Err(EtcdError::Internal("unexpected apply result".into())),
        }
    }

    /// A linearizable read, header included.
    pub async fn get(&self, request: RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.ctx.linearizable_barrier().await?;
        let mut resp = self.ctx.kv.range(&request).map_err(|e| EtcdError::from(&e))?;
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        resp.header = Some(self.ctx.header(revision));
        Ok(resp)
    }

    /// The key under `prefix` created first: the lock holder or election leader.
    pub async fn first_created(&self, prefix: &[u8]) -> Result<RangeResponse, EtcdError> {
        self.get(by_creation(prefix, SortOrder::Ascend, 0)).await
    }

    /// Waits until every key under `prefix` created at or before `max_create_revision` is
    /// gone; returns the header of the read that found none left.
    pub async fn wait_deletes(
        &self,
        prefix: &[u8],
        max_create_revision: i64,
    ) -> Result<ResponseHeader, EtcdError> {
        loop {
            let last = self.get(by_creation(prefix, SortOrder::Descend, max_create_revision)).await?;
            let header = last.header.unwrap_or_default();
            let Some(kv) = last.kvs.into_iter().next() else { return Ok(header) };
            self.wait_delete(kv.key, header.revision).await?;
        }
    }

    /// Waits for `key`'s deletion at or after `from_revision`.
    async fn wait_delete(&self, key: Vec<u8>, from_revision: i64) -> Result<(), EtcdError> {
        let mut watch = self.watch(WatchRange::Key(key), from_revision).await?;
        loop {
            match watch.next().await? {
                Watched::Events { events, .. } => {
                    if events.iter().any(|e| e.r#type == EventType::Delete as i32) {
                        return Ok(());
                    }
                }
                // History from `from_revision` is gone: whether the key went meanwhile is
                // what the caller's next read tells.
                Watched::Compacted => return Ok(()),
            }
        }
    }

    /// Watches `range` from `from_revision` on this member's hub.
    pub async fn watch(&self, range: WatchRange, from_revision: i64) -> Result<Subscription, EtcdError> {
        let (stream, notices) = self.hub.open().await.map_err(|_| EtcdError::Stopped)?;
        let subscription = Subscription { hub: self.hub.clone(), stream, notices };
        let spec = WatchSpec {
            watch_id: Some(0),
            range,
            start: StartAt::Revision(from_revision),
            no_put: false,
            no_delete: false,
            prev_kv: false,
            progress_notify: false,
        };
        self.hub.create(stream, spec, false).await.map_err(|_| EtcdError::Stopped)?;
        Ok(subscription)
    }
}

/// What a [`Subscription`] yields.
pub enum Watched {
    /// The events of one or more whole revisions, in order, and the revision of the header
    /// they were sent with.
    Events { revision: i64, events: Vec<Event> },
    /// The watch could not start: its first revision was compacted.
    Compacted,
}

/// One internal watcher; its stream is closed when dropped.
pub struct Subscription {
    hub: WatchHub,
    stream: StreamId,
    notices: mpsc::Receiver<Notice>,
}

impl Subscription {
    /// The next events (or the compaction that ended the watch).
    pub async fn next(&mut self) -> Result<Watched, EtcdError> {
        loop {
            match self.notices.recv().await.ok_or(EtcdError::Stopped)? {
                Notice::Events { events, revision, .. } => return Ok(Watched::Events { revision, events }),
                Notice::Compacted { .. } => return Ok(Watched::Compacted),
                Notice::Canceled { .. } | Notice::Refused { .. } => return Err(EtcdError::Stopped),
                Notice::Created { .. } | Notice::Progress { .. } => {}
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let (hub, stream) = (self.hub.clone(), self.stream);
        tokio::spawn(async move { hub.close(stream).await });
    }
}

/// `<prefix><lease id in hex>`, as etcd formats a waiter's key (Go's `%x` of a signed id).
pub fn waiter_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 { format!("-{:x}", lease.unsigned_abs()) } else { format!("{lease:x}") };
    [prefix, hex.as_bytes()].concat()
}

/// `<name>/`, the prefix under which a lock's or election's waiters are keyed.
pub fn waiters_prefix(name: &[u8]) -> Vec<u8> {
    [name, b"/"].concat()
}

/// The end of the range of every key starting with `prefix` (etcd's rule: the prefix with its
/// last byte below 0xff incremented; `"\0"`, every key, if there is none).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The one key under `prefix` first (or last) by creation, optionally only among those
/// created at or before `max_create_revision` (0: all).
fn by_creation(prefix: &[u8], order: SortOrder, max_create_revision: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: order as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision,
        ..Default::default()
    }
}

/// `create_revision(key) = revision`.
pub fn created_at(key: &[u8], revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
    }
}

pub fn op_put(key: &[u8], value: Vec<u8>, lease: i64) -> RequestOp {
    let put = PutRequest { key: key.to_vec(), value, lease, ..Default::default() };
    RequestOp { request: Some(request_op::Request::RequestPut(put)) }
}

pub fn op_get(range: RangeRequest) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestRange(range)) }
}

pub fn op_delete(key: &[u8]) -> RequestOp {
    let delete = DeleteRangeRequest { key: key.to_vec(), ..Default::default() };
    RequestOp { request: Some(request_op::Request::RequestDeleteRange(delete)) }
}

/// A range request for one key.
pub fn one_key(key: &[u8]) -> RangeRequest {
    RangeRequest { key: key.to_vec(), ..Default::default() }
}

/// The first key of the `i`th response of a transaction, if it was a read that found one.
pub fn txn_read(resp: &TxnResponse, i: usize) -> Option<&KeyValue> {
    match resp.responses.get(i)?.response.as_ref()? {
        response_op::Response::ResponseRange(r) => r.kvs.first(),
        _ => None,
    }
}

/// The oldest waiter under `prefix`, as the second read of a lock or campaign transaction.
pub fn first_created_op(prefix: &[u8]) -> RequestOp {
    op_get(by_creation(prefix, SortOrder::Ascend, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiter_keys_are_named_like_etcds() {
        assert_eq!(waiter_key(b"lock/", 0x694d77aa9e38260f), b"lock/694d77aa9e38260f");
        assert_eq!(waiter_key(b"lock/", -26), b"lock/-1a");
        assert_eq!(waiters_prefix(b"my"), b"my/");
    }

    #[test]
    fn prefix_ends_follow_etcds_rule() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), [0]);
        assert_eq!(prefix_end(b""), [0]);
    }
}
