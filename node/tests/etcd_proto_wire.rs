//! Wire facts of the etcd v3 protos, checked byte by byte: if a field number or a package name
//! drifted, etcd clients would silently misread raftkv, so these bytes are written out by hand
//! from the protobuf encoding rules (tag = field_number << 3 | wire_type).

use kvnode::proto::etcdserverpb::{
    self, Compare, RangeRequest, ResponseHeader, TxnRequest, compare, range_request,
};
use kvnode::proto::{authpb, mvccpb};
use prost::Message;

#[test]
fn range_request_uses_etcd_field_numbers() {
    let req = RangeRequest {
        key: b"foo".to_vec(),
        range_end: b"fop".to_vec(),
        limit: 10,
        revision: 5,
        sort_order: range_request::SortOrder::Descend as i32,
        sort_target: range_request::SortTarget::Mod as i32,
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 1,
        max_mod_revision: 2,
        min_create_revision: 3,
        max_create_revision: 4,
    };
    let expected: Vec<u8> = vec![
        0x0a, 3, b'f', b'o', b'o', // 1: key (length-delimited)
        0x12, 3, b'f', b'o', b'p', // 2: range_end
        0x18, 10, // 3: limit
        0x20, 5, // 4: revision
        0x28, 2, // 5: sort_order = DESCEND
        0x30, 3, // 6: sort_target = MOD
        0x38, 1, // 7: serializable
        0x40, 1, // 8: keys_only
        0x48, 1, // 9: count_only
        0x50, 1, // 10: min_mod_revision
        0x58, 2, // 11: max_mod_revision
        0x60, 3, // 12: min_create_revision
        0x68, 4, // 13: max_create_revision
    ];
    assert_eq!(req.encode_to_vec(), expected);
    assert_eq!(RangeRequest::decode(expected.as_slice()).unwrap(), req);
}

#[test]
fn response_header_decodes_etcd_bytes() {
    let bytes = [0x08, 7, 0x10, 8, 0x18, 9, 0x20, 10];
    let header = ResponseHeader::decode(bytes.as_slice()).unwrap();
    assert_eq!(header, ResponseHeader { cluster_id: 7, member_id: 8, revision: 9, raft_term: 10 });
}

#[test]
fn compare_range_end_is_field_64_and_target_union_is_a_oneof() {
    let cmp = Compare {
        result: compare::CompareResult::NotEqual as i32,
        target: compare::CompareTarget::Value as i32,
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        target_union: Some(compare::TargetUnion::Value(b"v".to_vec())),
    };
    let expected: Vec<u8> = vec![
        0x08, 3, // 1: result = NOT_EQUAL
        0x10, 3, // 2: target = VALUE
        0x1a, 1, b'k', // 3: key
        0x3a, 1, b'v', // 7: value (member of target_union)
        0x82, 0x04, 1, b'l', // 64: range_end, tag 514 as a two-byte varint
    ];
    assert_eq!(cmp.encode_to_vec(), expected);
    let txn = TxnRequest::new(vec![cmp], vec![], vec![]);
    let mut prefixed = vec![0x0a, expected.len() as u8];
    prefixed.extend_from_slice(&expected);
    assert_eq!(txn.encode_to_vec(), prefixed);
}

#[test]
fn key_value_and_event_use_mvccpb_numbers() {
    let kv = mvccpb::KeyValue {
        key: b"a".to_vec(),
        create_revision: 2,
        mod_revision: 3,
        version: 4,
        value: b"b".to_vec(),
        lease: 6,
    };
    let kv_bytes: Vec<u8> = vec![0x0a, 1, b'a', 0x10, 2, 0x18, 3, 0x20, 4, 0x2a, 1, b'b', 0x30, 6];
    assert_eq!(kv.encode_to_vec(), kv_bytes);
    let ev = mvccpb::Event { r#type: mvccpb::event::EventType::Delete as i32, kv: Some(kv), prev_kv: None };
    let mut ev_bytes = vec![0x08, 1, 0x12, kv_bytes.len() as u8];
    ev_bytes.extend_from_slice(&kv_bytes);
    assert_eq!(ev.encode_to_vec(), ev_bytes);
}

#[test]
fn watch_response_events_are_field_11() {
    let resp = etcdserverpb::WatchResponse { events: vec![mvccpb::Event::default()], ..Default::default() };
    assert_eq!(resp.encode_to_vec(), vec![0x5a, 0]);
}

#[test]
fn auth_permission_type_is_field_1() {
    let perm = authpb::Permission {
        perm_type: authpb::permission::Type::Readwrite as i32,
        key: b"k".to_vec(),
        range_end: vec![],
    };
    assert_eq!(perm.encode_to_vec(), vec![0x08, 2, 0x12, 1, b'k']);
}

#[test]
fn services_have_etcd_full_names() {
    assert_eq!(etcdserverpb::kv_server::SERVICE_NAME, "etcdserverpb.KV");
    assert_eq!(etcdserverpb::watch_server::SERVICE_NAME, "etcdserverpb.Watch");
    assert_eq!(etcdserverpb::lease_server::SERVICE_NAME, "etcdserverpb.Lease");
    assert_eq!(etcdserverpb::cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
    assert_eq!(etcdserverpb::maintenance_server::SERVICE_NAME, "etcdserverpb.Maintenance");
    assert_eq!(etcdserverpb::auth_server::SERVICE_NAME, "etcdserverpb.Auth");
}

#[test]
fn member_uses_etcd_numbers() {
    let m = etcdserverpb::Member {
        id: 1,
        name: "n".into(),
        peer_ur_ls: vec!["p".into()],
        client_ur_ls: vec!["c".into()],
        is_learner: true,
    };
    assert_eq!(m.encode_to_vec(), vec![0x08, 1, 0x12, 1, b'n', 0x1a, 1, b'p', 0x22, 1, b'c', 0x28, 1]);
}
