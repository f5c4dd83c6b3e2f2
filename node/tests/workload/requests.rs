//! The requests the workload clients send, as `kvcheck` whole-database operations: how they are
//! drawn, sent with `etcd-client`, and how each answer becomes a recorded outcome.

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{Client, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp, TxnOpResponse};
use kvcheck::{
    Compare, CompareResult, CompareTarget, DbOp, DbOutcome, DbOutput, KeyRange, KeyValue, Response,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Few keys, so that concurrent operations conflict.
pub const KEYS: usize = 5;
// Key names must sort like their numbers, also `key(KEYS + 1)` (the end of a two-key range).
const _: () = assert!(KEYS <= 8);
/// Every key of the workload starts with this; `[PREFIX, PREFIX_END)` is the whole key space.
pub const PREFIX: &str = "k";
pub const PREFIX_END: &str = "l";
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

pub fn key(i: usize) -> String {
    format!("{PREFIX}{i}")
}

/// Every key of the workload, as a range.
pub fn whole_range() -> KeyRange {
    KeyRange::between(PREFIX, PREFIX_END)
}

/// Error texts that guarantee the request was not applied (see TESTING.md): refused before it
/// was proposed, or its proposal's term ended without it. Anything else may have been applied.
pub const DEFINITE_ERRORS: [&str; 6] = [
    "etcdserver: no leader",
    "etcdserver: not leader",
    "etcdserver: leader changed",
    "etcdserver: too many requests",
    "etcdserver: leadership transfer in progress",
    "etcdserver: re-configuration failed due to not enough started members",
];

/// How a request that got no successful answer ended, with a short reason for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// True when the request definitely was not applied.
    pub definite: bool,
    pub reason: String,
}

/// Definite failures: gRPC `InvalidArgument`, or one of [`DEFINITE_ERRORS`] verbatim. Everything
/// else (`etcdserver: request timed out`, `etcdserver: server stopped`, transport errors) is
/// unknown: the request may have been applied.
pub fn classify(err: &etcd_client::Error) -> Failure {
    if let etcd_client::Error::GRpcStatus(s) = err {
        let msg = s.message();
        let definite = s.code() == tonic::Code::InvalidArgument || DEFINITE_ERRORS.contains(&msg);
        return Failure { definite, reason: format!("{:?}: {}", s.code(), truncate(msg)) };
    }
    let text = err.to_string();
    Failure { definite: false, reason: truncate(&text) }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// True if the request may change the store.
pub fn may_write(op: &DbOp) -> bool {
    match op {
        DbOp::Range { .. } => false,
        DbOp::Put { .. } | DbOp::DeleteRange { .. } => true,
        DbOp::Txn { success, failure, .. } => success.iter().chain(failure).any(may_write),
    }
}

/// What a client last saw of a key: value and mod revision (to guard its next transactions).
pub type Seen = HashMap<String, (String, i64)>;

/// Remembers what `op`'s successful response showed of each key.
pub fn remember(seen: &mut Seen, op: &DbOp, response: &Response) {
    match (op, response) {
        (DbOp::Range { range }, Response::Range { kvs, .. }) => {
            seen.retain(|k, _| !range.contains(k));
            for kv in kvs {
                seen.insert(kv.key.clone(), (kv.value.clone(), kv.mod_revision));
            }
        }
        (DbOp::Txn { success, failure, .. }, Response::Txn { succeeded, responses }) => {
            let branch = if *succeeded { success } else { failure };
            for (op, response) in branch.iter().zip(responses) {
                remember(seen, op, response);
            }
        }
        _ => {}
    }
}

fn single(key: &str) -> DbOp {
    DbOp::Range { range: KeyRange::single(key) }
}

fn put(key: &str, value: String) -> DbOp {
    DbOp::Put { key: key.to_string(), value, prev_kv: false }
}

fn guard(key: &str, target: CompareTarget, result: CompareResult) -> Compare {
    Compare { key: key.to_string(), target, result }
}

/// Two distinct random keys.
fn two_keys(rng: &mut ChaCha8Rng) -> (String, String) {
    let a = rng.random_range(0..KEYS);
    let b = (a + rng.random_range(1..KEYS)) % KEYS;
    (key(a), key(b))
}

/// The next request of a client: 25% single-key read, 12% range read (8% the whole key space,
/// 4% two adjacent keys), 23% put, 4% delete, 2% delete of two adjacent keys, 18% compare-and-set
/// (on the value last seen, or on absence), 10% two-key transaction guarded by the first key's
/// mod revision (sometimes deleting a third key; its failure branch reads every key), 6%
/// read-only transaction reading two keys at once. Values are unique: `c<client>-<seq>[-a|-b]`.
pub fn next_op(rng: &mut ChaCha8Rng, seen: &Seen, client: u64, seq: u64) -> DbOp {
    let i = rng.random_range(0..KEYS);
    let k = key(i);
    let value = format!("c{client}-{seq}");
    match rng.random_range(0..100) {
        0..25 => single(&k),
        25..33 => DbOp::Range { range: whole_range() },
        33..37 => DbOp::Range { range: KeyRange::between(k, key(i + 2)) },
        37..60 => put(&k, value),
        60..64 => DbOp::DeleteRange { range: KeyRange::single(k) },
        64..66 => DbOp::DeleteRange { range: KeyRange::between(k, key(i + 2)) },
        66..84 => {
            let target = match seen.get(&k) {
                Some((v, _)) if rng.random_bool(0.8) => CompareTarget::Value(v.clone()),
                _ => CompareTarget::Version(0),
            };
            DbOp::Txn {
                compare: vec![guard(&k, target, CompareResult::Equal)],
                success: vec![put(&k, value)],
                failure: vec![single(&k)],
            }
        }
        84..94 => {
            let (a, b) = two_keys(rng);
            let compare = match seen.get(&a) {
                Some((_, m)) if rng.random_bool(0.7) => {
                    guard(&a, CompareTarget::ModRevision(*m), CompareResult::Equal)
                }
                _ => guard(&a, CompareTarget::Version(1), CompareResult::Less),
            };
            let mut success = vec![put(&a, format!("{value}-a")), put(&b, format!("{value}-b"))];
            let c = key(rng.random_range(0..KEYS));
            if c != a && c != b && rng.random_bool(0.3) {
                success.push(DbOp::DeleteRange { range: KeyRange::single(c) });
            }
            DbOp::Txn { compare: vec![compare], success, failure: vec![DbOp::Range { range: whole_range() }] }
        }
        _ => {
            let (a, b) = two_keys(rng);
            DbOp::Txn {
                compare: vec![guard(&a, CompareTarget::CreateRevision(0), CompareResult::Greater)],
                success: vec![single(&a), single(&b)],
                failure: vec![single(&b)],
            }
        }
    }
}

fn get_options(range: &KeyRange) -> Option<GetOptions> {
    match range.range_end.as_deref() {
        None => None,
        Some("\0") => Some(GetOptions::new().with_from_key()),
        Some(end) => Some(GetOptions::new().with_range(end)),
    }
}

fn delete_options(range: &KeyRange) -> Option<DeleteOptions> {
    match range.range_end.as_deref() {
        None => None,
        Some("\0") => Some(DeleteOptions::new().with_from_key()),
        Some(end) => Some(DeleteOptions::new().with_range(end)),
    }
}

fn etcd_compare(c: &Compare) -> etcd_client::Compare {
    let op = match c.result {
        CompareResult::Equal => CompareOp::Equal,
        CompareResult::NotEqual => CompareOp::NotEqual,
        CompareResult::Less => CompareOp::Less,
        CompareResult::Greater => CompareOp::Greater,
    };
    let key = c.key.as_str();
    match &c.target {
        CompareTarget::Value(v) => etcd_client::Compare::value(key, op, v.as_str()),
        CompareTarget::Version(v) => etcd_client::Compare::version(key, op, *v),
        CompareTarget::CreateRevision(r) => etcd_client::Compare::create_revision(key, op, *r),
        CompareTarget::ModRevision(r) => etcd_client::Compare::mod_revision(key, op, *r),
    }
}

fn txn_op(op: &DbOp) -> TxnOp {
    match op {
        DbOp::Range { range } => TxnOp::get(range.key.as_str(), get_options(range)),
        DbOp::Put { key, value, .. } => TxnOp::put(key.as_str(), value.as_str(), None),
        DbOp::DeleteRange { range } => TxnOp::delete(range.key.as_str(), delete_options(range)),
        DbOp::Txn { .. } => TxnOp::txn(etcd_txn(op)),
    }
}

fn etcd_txn(op: &DbOp) -> Txn {
    let DbOp::Txn { compare, success, failure } = op else { unreachable!("not a transaction") };
    Txn::new()
        .when(compare.iter().map(etcd_compare).collect::<Vec<_>>())
        .and_then(success.iter().map(txn_op).collect::<Vec<_>>())
        .or_else(failure.iter().map(txn_op).collect::<Vec<_>>())
}

pub fn key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

pub fn range_response(r: &etcd_client::GetResponse) -> Response {
    Response::Range { kvs: r.kvs().iter().map(key_value).collect(), count: r.count().max(0) as u64 }
}

pub fn txn_response(r: &etcd_client::TxnResponse) -> Response {
    let responses = r
        .op_responses()
        .iter()
        .map(|op| match op {
            TxnOpResponse::Get(g) => range_response(g),
            TxnOpResponse::Put(_) => Response::Put { prev_kv: None },
            TxnOpResponse::Delete(d) => Response::DeleteRange { deleted: d.deleted().max(0) as u64 },
            TxnOpResponse::Txn(t) => txn_response(t),
        })
        .collect();
    Response::Txn { succeeded: r.succeeded(), responses }
}

/// The header revision; 0 (which the checker rejects as impossible) when the header is missing.
pub fn revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

/// Sends `op` with [`REQUEST_TIMEOUT`]: the outcome to record, and for a request without a
/// successful answer the reason. Reads that fail changed nothing (`Failed`); a write's error is
/// classified by [`classify`]; a write that timed out is `Unknown`.
pub async fn execute(c: &mut Client, op: &DbOp) -> (DbOutcome, Option<String>) {
    let fut = async {
        match op {
            DbOp::Range { range } => c
                .get(range.key.as_str(), get_options(range))
                .await
                .map(|r| DbOutput { revision: revision(r.header()), response: range_response(&r) }),
            DbOp::Put { key, value, .. } => c.put(key.as_str(), value.as_str(), None).await.map(|r| {
                DbOutput { revision: revision(r.header()), response: Response::Put { prev_kv: None } }
            }),
            DbOp::DeleteRange { range } => {
                c.delete(range.key.as_str(), delete_options(range)).await.map(|r| DbOutput {
                    revision: revision(r.header()),
                    response: Response::DeleteRange { deleted: r.deleted().max(0) as u64 },
                })
            }
            DbOp::Txn { .. } => c
                .txn(etcd_txn(op))
                .await
                .map(|r| DbOutput { revision: revision(r.header()), response: txn_response(&r) }),
        }
    };
    let failure = match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(Ok(out)) => return (DbOutcome::Ok(out), None),
        Ok(Err(e)) => classify(&e),
        Err(_) => Failure { definite: false, reason: format!("client timeout ({REQUEST_TIMEOUT:?})") },
    };
    let outcome = if failure.definite || !may_write(op) { DbOutcome::Failed } else { DbOutcome::Unknown };
    (outcome, Some(failure.reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code, msg: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, msg))
    }

    #[test]
    fn only_the_listed_errors_are_definite() {
        for msg in DEFINITE_ERRORS {
            assert!(classify(&status(tonic::Code::Unavailable, msg)).definite, "{msg}");
        }
        assert!(classify(&status(tonic::Code::InvalidArgument, "etcdserver: key is not provided")).definite);
        for msg in ["etcdserver: request timed out", "etcdserver: server stopped", "etcdserver: no leader!"] {
            assert!(!classify(&status(tonic::Code::Unavailable, msg)).definite, "{msg}");
        }
        let transport = etcd_client::Error::InvalidArgs("connection reset".into());
        assert!(!classify(&transport).definite);
    }
}
