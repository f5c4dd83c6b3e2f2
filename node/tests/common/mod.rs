//! Helpers shared by the storage test suites: a store in a temp dir that applies requests at
//! consecutive log indexes, and request builders.
#![allow(dead_code)]

use kvnode::proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp,
    TxnRequest, compare, request_op,
};
use kvnode::proto::kvserverpb::{InternalRequest, internal_request::Request};
use kvnode::proto::mvccpb::KeyValue;
use kvnode::storage::{ApplyResult, KvError, Outcome, Store};
use tempfile::TempDir;

/// A store on real files that applies at consecutive log indexes.
pub struct Harness {
    pub dir: TempDir,
    pub store: Store,
    pub next_index: u64,
}

impl Harness {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        Harness { dir, store, next_index: 1 }
    }

    pub fn apply(&mut self, req: Request) -> ApplyResult {
        let index = self.next_index;
        self.next_index += 1;
        self.store
            .kv()
            .apply(index, &InternalRequest { id: index, request: Some(req), ..Default::default() })
            .unwrap()
    }

    pub fn put(&mut self, key: &str, value: &str) -> i64 {
        let r = self.apply(Request::Put(put(key, value)));
        assert!(matches!(r.outcome, Outcome::Put(_)), "{:?}", r.outcome);
        r.revision
    }

    pub fn delete(&mut self, key: &str, range_end: &str) -> i64 {
        let r = self.apply(Request::DeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: false,
        }));
        match r.outcome {
            Outcome::DeleteRange(d) => d.deleted,
            other => panic!("{other:?}"),
        }
    }

    /// Applies and expects a refusal.
    pub fn rejected(&mut self, req: Request) -> KvError {
        match self.apply(req).outcome {
            Outcome::Rejected(e) => e,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    pub fn compact(&mut self, revision: i64) -> Outcome {
        self.apply(Request::Compaction(CompactionRequest { revision, physical: true })).outcome
    }

    pub fn range(&self, req: RangeRequest) -> Result<RangeResponse, KvError> {
        self.store.kv().range(&req)
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.range(get(key)).unwrap().kvs.into_iter().next()
    }

    pub fn get_at(&self, key: &str, revision: i64) -> Result<Option<KeyValue>, KvError> {
        Ok(self.range(RangeRequest { revision, ..get(key) })?.kvs.into_iter().next())
    }

    pub fn keys(&self, req: RangeRequest) -> Vec<String> {
        self.range(req).unwrap().kvs.iter().map(|kv| String::from_utf8(kv.key.clone()).unwrap()).collect()
    }

    pub fn revision(&self) -> i64 {
        self.store.kv().current_revision().unwrap()
    }
}

pub fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

pub fn get(key: &str) -> RangeRequest {
    RangeRequest { key: key.into(), ..Default::default() }
}

pub fn range(key: &str, end: &str) -> RangeRequest {
    RangeRequest { key: key.into(), range_end: end.into(), ..Default::default() }
}

pub fn op_put(key: &str, value: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestPut(put(key, value))) }
}

pub fn op_get(key: &str) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestRange(get(key))) }
}

pub fn op_delete(key: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end: end.into(),
            prev_kv: true,
        })),
    }
}

pub fn op_txn(t: TxnRequest) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestTxn(t)) }
}

pub fn cmp(
    key: &str,
    target: compare::CompareTarget,
    result: compare::CompareResult,
    operand: compare::TargetUnion,
) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        range_end: vec![],
        target_union: Some(operand),
    }
}

pub fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> Request {
    Request::Txn(TxnRequest::new(compare, success, failure))
}

pub fn value(kv: &KeyValue) -> String {
    String::from_utf8(kv.value.clone()).unwrap()
}
