//! etcd's `TxnRequest`, with a decoder whose nesting bound is etcd's rule, not prost's.
//!
//! A transaction may hold transactions (`RequestOp.request_txn`), and prost stops decoding
//! after 100 nested messages: two per level of transactions, one more for the Raft entry that
//! wraps a request. With generated code, a client's transaction 50 levels deep was refused with
//! `INTERNAL failed to decode Protobuf message`, and one 49 deep was accepted by gRPC, committed,
//! and then could not be decoded at apply on any member. etcd (Go) decodes any depth and
//! refuses more than `--max-txn-ops` levels with `etcdserver: too many operations in txn
//! request`; so does this decoder: the nesting it follows is bounded by [`MAX_NESTING`] and
//! counted here, prost's own budget being reset at each level. A transaction nested deeper is
//! not decoded further but marked ([`TxnRequest::too_deep`]), so validation refuses it with
//! etcd's error instead of the decoder failing, and the stack never grows without bound.

use std::cell::Cell;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType, message, skip_field};
use prost::{DecodeError, Message};

use super::etcdserverpb::{Compare, RequestOp};

/// Deepest nesting of transactions this decoder follows (etcd's default `--max-txn-ops` is
/// 128, which bounds nesting at 128 levels; a larger flag is capped here).
pub const MAX_NESTING: u32 = 256;

thread_local! {
    /// Transaction levels being decoded on this thread right now.
    static NESTING: Cell<u32> = const { Cell::new(0) };
}

/// One level entered; left when dropped, on every path out of the decoder.
struct Level;

impl Level {
    fn enter() -> (Self, u32) {
        let depth = NESTING.with(|n| {
            let d = n.get() + 1;
            n.set(d);
            d
        });
        (Level, depth)
    }
}

impl Drop for Level {
    fn drop(&mut self) {
        NESTING.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// A transaction: compares, and the operations of the branch that runs (etcd's fields 1–3).
#[derive(Clone, PartialEq, Default, Debug)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
    /// Not on the wire: an operation below this one nested deeper than [`MAX_NESTING`] and was
    /// skipped while decoding. Validation refuses such a request.
    pub too_deep: bool,
}

impl TxnRequest {
    /// A transaction of these compares and branches.
    pub fn new(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> Self {
        Self { compare, success, failure, too_deep: false }
    }
}

impl Message for TxnRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        message::encode_repeated(1, &self.compare, buf);
        message::encode_repeated(2, &self.success, buf);
        message::encode_repeated(3, &self.failure, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let ops = match tag {
            1 => return message::merge_repeated(wire_type, &mut self.compare, buf, ctx),
            2 => &mut self.success,
            3 => &mut self.failure,
            _ => return skip_field(wire_type, tag, buf, ctx),
        };
        let (_level, depth) = Level::enter();
        if depth > MAX_NESTING {
            self.too_deep = true;
            // Skipping a length-delimited field only moves past it: no recursion.
            return skip_field(wire_type, tag, buf, ctx);
        }
        // A fresh budget for prost: the nesting is bounded by the count above instead.
        message::merge_repeated(wire_type, ops, buf, DecodeContext::default())
    }

    fn encoded_len(&self) -> usize {
        message::encoded_len_repeated(1, &self.compare)
            + message::encoded_len_repeated(2, &self.success)
            + message::encoded_len_repeated(3, &self.failure)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// The gateway's JSON form (`{"compare":[...],"success":[...],"failure":[...]}`), as the
/// generated messages around it have theirs; empty lists are left out, `null` reads as empty.
impl serde::Serialize for TxnRequest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let fields = [self.compare.is_empty(), self.success.is_empty(), self.failure.is_empty()]
            .iter()
            .filter(|empty| !**empty)
            .count();
        let mut s = serializer.serialize_struct("etcdserverpb.TxnRequest", fields)?;
        if !self.compare.is_empty() {
            s.serialize_field("compare", &self.compare)?;
        }
        if !self.success.is_empty() {
            s.serialize_field("success", &self.success)?;
        }
        if !self.failure.is_empty() {
            s.serialize_field("failure", &self.failure)?;
        }
        s.end()
    }
}

impl<'de> serde::Deserialize<'de> for TxnRequest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// serde_json's recursion limit bounds the nesting a JSON transaction can have, so a
        /// deep one is an error, never a stack overflow.
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Json {
            #[serde(default)]
            compare: Option<Vec<Compare>>,
            #[serde(default)]
            success: Option<Vec<RequestOp>>,
            #[serde(default)]
            failure: Option<Vec<RequestOp>>,
        }
        let j = Json::deserialize(deserializer)?;
        Ok(TxnRequest::new(
            j.compare.unwrap_or_default(),
            j.success.unwrap_or_default(),
            j.failure.unwrap_or_default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{PutRequest, request_op};

    /// A transaction `levels` deep: each level holds the next, the innermost a put.
    pub(crate) fn nested(levels: u32) -> TxnRequest {
        let put = RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        };
        let mut txn = TxnRequest::new(vec![], vec![put], vec![]);
        for _ in 1..levels {
            let op = RequestOp { request: Some(request_op::Request::RequestTxn(txn)) };
            txn = TxnRequest::new(vec![], vec![op], vec![]);
        }
        txn
    }

    #[test]
    fn deep_transactions_round_trip_past_prost_s_limit() {
        for levels in [1, 49, 50, 128, 200, MAX_NESTING] {
            let txn = nested(levels);
            let bytes = txn.encode_to_vec();
            let back = TxnRequest::decode(bytes.as_slice()).expect("decodes");
            assert_eq!(back, txn, "{levels} levels");
            assert!(!back.too_deep);
        }
    }

    #[test]
    fn deeper_than_the_bound_is_marked_not_failed() {
        let bytes = nested(MAX_NESTING + 50).encode_to_vec();
        let back = TxnRequest::decode(bytes.as_slice()).expect("decodes");
        let mut t = &back;
        let mut marked = back.too_deep;
        while let Some(RequestOp { request: Some(request_op::Request::RequestTxn(inner)) }) =
            t.success.first()
        {
            marked |= inner.too_deep;
            t = inner;
        }
        assert!(marked, "the level past the bound is marked");
        assert_eq!(NESTING.with(Cell::get), 0, "every level was left");
    }
}
