//! Allocation-free encoding of the records written on every put: the same bytes prost would
//! produce for `mvccpb::KeyValue` / `mvccpb::Event`, built from borrowed slices so the value is
//! never copied into an owned message first.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use crate::proto::mvccpb::{self, event::EventType};

use super::error::StoreError;

/// A borrowed key-value in the shape of `mvccpb::KeyValue`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KvRef<'a> {
    pub key: &'a [u8],
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: &'a [u8],
    pub lease: i64,
}

fn put_bytes(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    if !bytes.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(bytes.len() as u64, buf);
        buf.extend_from_slice(bytes);
    }
}

fn put_i64(tag: u32, v: i64, buf: &mut Vec<u8>) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v.cast_unsigned(), buf);
    }
}

fn bytes_len(tag: u32, bytes: &[u8]) -> usize {
    if bytes.is_empty() { 0 } else { key_len(tag) + encoded_len_varint(bytes.len() as u64) + bytes.len() }
}

fn i64_len(tag: u32, v: i64) -> usize {
    if v == 0 { 0 } else { key_len(tag) + encoded_len_varint(v.cast_unsigned()) }
}

fn key_len(tag: u32) -> usize {
    prost::encoding::key_len(tag)
}

impl KvRef<'_> {
    fn encoded_len(&self) -> usize {
        bytes_len(1, self.key)
            + i64_len(2, self.create_revision)
            + i64_len(3, self.mod_revision)
            + i64_len(4, self.version)
            + bytes_len(5, self.value)
            + i64_len(6, self.lease)
    }

    /// Appends the `mvccpb::KeyValue` encoding.
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        put_bytes(1, self.key, buf);
        put_i64(2, self.create_revision, buf);
        put_i64(3, self.mod_revision, buf);
        put_i64(4, self.version, buf);
        put_bytes(5, self.value, buf);
        put_i64(6, self.lease, buf);
    }

    /// Appends the `mvccpb::Event { type, kv: self }` encoding.
    pub(crate) fn encode_event(&self, ty: EventType, buf: &mut Vec<u8>) {
        put_i64(1, ty as i64, buf);
        encode_key(2, WireType::LengthDelimited, buf);
        encode_varint(self.encoded_len() as u64, buf);
        self.encode(buf);
    }
}

/// Decodes a `KV` table value and puts the table key back into it.
pub(crate) fn decode_kv(key: &[u8], stored: &[u8]) -> Result<mvccpb::KeyValue, StoreError> {
    let mut kv =
        <mvccpb::KeyValue as prost::Message>::decode(stored).map_err(|e| StoreError::decode("kv", e))?;
    kv.key = key.to_vec();
    Ok(kv)
}

/// Decodes a `REVS` table value.
pub(crate) fn decode_event(stored: &[u8]) -> Result<mvccpb::Event, StoreError> {
    <mvccpb::Event as prost::Message>::decode(stored).map_err(|e| StoreError::decode("revs", e))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn matches_prost_encoding() {
        let cases = [
            KvRef { key: b"k", create_revision: 1, mod_revision: 2, version: 3, value: b"v", lease: 4 },
            KvRef { key: b"", create_revision: 0, mod_revision: 0, version: 0, value: b"", lease: 0 },
            KvRef {
                key: b"key",
                create_revision: i64::MAX,
                mod_revision: 300,
                version: 1,
                value: &[7; 300],
                lease: -1,
            },
        ];
        for c in cases {
            let owned = mvccpb::KeyValue {
                key: c.key.to_vec(),
                create_revision: c.create_revision,
                mod_revision: c.mod_revision,
                version: c.version,
                value: c.value.to_vec(),
                lease: c.lease,
            };
            let mut buf = Vec::new();
            c.encode(&mut buf);
            assert_eq!(buf, owned.encode_to_vec());
            assert_eq!(c.encoded_len(), buf.len());
            for ty in [EventType::Put, EventType::Delete] {
                let ev = mvccpb::Event { r#type: ty as i32, kv: Some(owned.clone()), prev_kv: None };
                let mut buf = Vec::new();
                c.encode_event(ty, &mut buf);
                assert_eq!(buf, ev.encode_to_vec());
            }
        }
    }
}
