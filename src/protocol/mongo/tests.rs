use bson::{doc, DateTime};

use bson::oid::ObjectId;

use super::*;

/// A hello reply as a MongoDB 7.0 primary sends it (fields trimmed to the ones that
/// vary; captured shape from a replica-set member).
fn primary_reply() -> Document {
    doc! {
        "topologyVersion": { "processId": ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap(), "counter": 6i64 },
        "hosts": ["127.0.0.1:27101", "127.0.0.1:27102", "127.0.0.1:27103"],
        "setName": "rs0",
        "setVersion": 1,
        "isWritablePrimary": true,
        "secondary": false,
        "primary": "127.0.0.1:27101",
        "me": "127.0.0.1:27101",
        "electionId": ObjectId::parse_str("7fffffff0000000000000002").unwrap(),
        "lastWrite": { "lastWriteDate": DateTime::from_millis(1_764_000_000_000) },
        "maxWireVersion": 21,
        "ok": 1.0,
    }
}

fn frame(body: &Document) -> Vec<u8> {
    let mut message = encode_op_msg(7, body);
    message[12..16].copy_from_slice(&OP_MSG.to_le_bytes());
    message
}

#[test]
fn parses_a_primary() {
    let hello = parse_hello(&primary_reply());
    assert!(hello.ok && hello.writable_primary && !hello.secondary);
    assert_eq!(hello.set_name.as_deref(), Some("rs0"));
    let claim = hello.claim();
    assert_eq!(claim.election_id.as_deref(), Some("7fffffff0000000000000002"));
    assert_eq!(claim.set_version, Some(1));
    assert_eq!(hello.hosts.len(), 3);
    assert_eq!(hello.last_write_ms, Some(1_764_000_000_000));
}

#[test]
fn parses_legacy_ismaster_secondary_and_arbiter() {
    let hello = parse_hello(&doc! { "ismaster": false, "secondary": true, "setName": "rs0", "ok": 1 });
    assert!(!hello.writable_primary && hello.secondary);
    let arbiter = parse_hello(&doc! { "ismaster": false, "arbiterOnly": true, "ok": 1 });
    assert!(arbiter.arbiter);
    let standalone = parse_hello(&doc! { "ismaster": true, "ok": 1 });
    assert!(standalone.writable_primary && standalone.set_name.is_none());
}

#[test]
fn error_replies_keep_their_message() {
    let hello = parse_hello(&doc! { "ok": 0.0, "errmsg": "no such command: 'hello'", "code": 59 });
    assert!(!hello.ok);
    assert_eq!(hello.error, Some(("no such command: 'hello'".into(), 59)));
}

#[test]
fn round_trips_through_op_msg_and_every_truncation_is_incomplete() {
    let bytes = frame(&primary_reply());
    match decode_op_msg(&bytes) {
        Decode::Done((body, used)) => {
            assert_eq!(used, bytes.len());
            assert_eq!(parse_hello(&body), parse_hello(&primary_reply()));
        }
        other => panic!("{other:?}"),
    }
    for cut in 0..bytes.len() {
        assert_eq!(decode_op_msg(&bytes[..cut]), Decode::Incomplete, "cut at {cut}");
    }
}

#[test]
fn malformed_messages_are_invalid() {
    let good = frame(&primary_reply());
    let mut wrong_opcode = good.clone();
    wrong_opcode[12..16].copy_from_slice(&1i32.to_le_bytes());
    let mut huge = good.clone();
    huge[0..4].copy_from_slice(&i32::MAX.to_le_bytes());
    let mut negative = good.clone();
    negative[0..4].copy_from_slice(&(-5i32).to_le_bytes());
    let mut bad_section = good.clone();
    bad_section[21..25].copy_from_slice(&1_000_000i32.to_le_bytes());
    let mut bad_bson = good.clone();
    let last = bad_bson.len() - 1;
    bad_bson[last] = 7; // a document must end with 0
    let mut flags = good.clone();
    flags[16] = 2; // moreToCome: never asked for
    for (name, bytes) in [
        ("opcode", wrong_opcode),
        ("huge", huge),
        ("negative", negative),
        ("section", bad_section),
        ("bson", bad_bson),
        ("flags", flags),
    ] {
        assert!(matches!(decode_op_msg(&bytes), Decode::Invalid(_)), "{name}");
    }
}

#[test]
fn mistyped_fields_are_ignored_not_fatal() {
    let hello = parse_hello(&doc! { "ok": 1, "setName": 5, "hosts": "x", "electionId": "nope", "setVersion": "2" });
    assert!(hello.ok);
    assert_eq!(hello.set_name, None);
    assert!(hello.hosts.is_empty());
    assert_eq!((hello.claim().election_id, hello.claim().set_version), (None, None));
}

/// A BSON document `{"a": {"a": ... {} ...}}` nested `depth` levels, built as bytes
/// (bson's own writer recurses too).
fn nested(depth: usize) -> Vec<u8> {
    // Each level: i32 length, 0x03 'a' 0x00, the inner document, 0x00.
    let mut doc = vec![5, 0, 0, 0, 0];
    for _ in 1..depth {
        let len = (4 + 3 + doc.len() + 1) as i32;
        let mut outer = len.to_le_bytes().to_vec();
        outer.extend_from_slice(&[0x03, b'a', 0]);
        outer.extend_from_slice(&doc);
        outer.push(0);
        doc = outer;
    }
    doc
}

/// An OP_MSG reply whose body is `body` (raw BSON bytes).
fn frame_raw(body: &[u8]) -> Vec<u8> {
    let length = (16 + 4 + 1 + body.len()) as i32;
    let mut out = length.to_le_bytes().to_vec();
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&OP_MSG.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0]);
    out.extend_from_slice(body);
    out
}

#[test]
fn a_reply_nested_thousands_deep_is_invalid_not_a_stack_overflow() {
    let deep = frame_raw(&nested(12_000));
    assert!(deep.len() > 80_000);
    assert!(matches!(decode_op_msg(&deep), Decode::Invalid(_)));
    // The limit itself still parses.
    let at_limit = frame_raw(&nested(MAX_DEPTH));
    assert!(matches!(decode_op_msg(&at_limit), Decode::Done(_)));
    assert!(matches!(
        decode_op_msg(&frame_raw(&nested(MAX_DEPTH + 1))),
        Decode::Invalid(_)
    ));
}
