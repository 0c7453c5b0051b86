//! The bodies of the fuzz targets (`fuzz/fuzz_targets/`), one per decoder of
//! untrusted bytes, here so that `cargo test` replays the kept corpora and crash
//! inputs on stable Rust (`tests/fuzz_corpus.rs`). Each takes any bytes and must
//! return without panicking; where a decoder yields a value, what is derived from
//! it is exercised too, as the proxy would.

use crate::protocol::mysql::{self, monitor};
use crate::protocol::proxy_header::{self, Accept, Version};
use crate::protocol::{http, mongo, Decode};

/// A target's body: any bytes in, no panic.
pub type Body = fn(&[u8]);

/// Every target by name (the directory names under `fuzz/corpus/`).
pub const TARGETS: [(&str, Body); 8] = [
    ("mysql_packets", mysql_packets),
    ("mysql_monitor", mysql_monitor),
    ("mongo_op_msg", mongo_op_msg),
    ("mongo_replies", mongo_replies),
    ("redis_resp", redis_resp),
    ("http_head", http_head),
    ("der", der),
    ("proxy_header", proxy_header),
];

/// The `mysql` listener's connection phase: packets framed from a buffer as the login
/// relay reads them, each asked what the relay asks of it.
pub fn mysql_packets(data: &[u8]) {
    let mut rest = data;
    while let Decode::Done((packet, used)) = mysql::decode(rest) {
        rest = &rest[used..];
        let mut payload = packet.payload.clone();
        let _ = mysql::greeting_capabilities(&payload);
        let _ = mysql::set_greeting_ssl(&mut payload, true);
        let _ = mysql::client_capabilities(&payload);
        let _ = mysql::is_ssl_request(&payload);
        let _ = mysql::response_plugin(&payload);
        let _ = mysql::ssl_request_for(&payload);
        let _ = mysql::auth_switch_plugin(&payload);
        let _ = mysql::is_full_auth_request(&payload);
        let _ = (packet.ends_login(), packet.is_err());
        mysql::set_client_ssl(&mut payload, false);
    }
}

/// The MySQL probe's client: every reply decoder; the first byte picks a column count.
pub fn mysql_monitor(data: &[u8]) {
    let columns = data.first().map_or(0, |&b| usize::from(b));
    let _ = monitor::greeting(data);
    let _ = monitor::auth_reply(data);
    let _ = monitor::server_error(data);
    let _ = monitor::result_head(data);
    let _ = monitor::column_name(data);
    let _ = monitor::text_row(data, columns);
    let _ = monitor::eof_status(data);
}

/// A MongoDB reply: OP_MSG framing (with the nesting bound), then `hello`'s fields.
pub fn mongo_op_msg(data: &[u8]) {
    if let Decode::Done((doc, _)) = mongo::decode_op_msg(data) {
        let hello = mongo::parse_hello(&doc);
        let _ = hello.claim();
    }
}

/// A `mongo`-mode session's reply watch, fed the bytes in pieces of every size from
/// the first byte's value (1 to 256), both ways.
pub fn mongo_replies(data: &[u8]) {
    let piece = usize::from(data.first().copied().unwrap_or(0)) + 1;
    let mut watch = mongo::replies::Replies::default();
    for chunk in data.chunks(piece) {
        let _ = watch.not_primary(chunk);
        watch.client(chunk);
        let _ = watch.idle();
    }
}

/// A Redis check's replies: RESP values one after another, and `INFO` text classified
/// as the probe does.
pub fn redis_resp(data: &[u8]) {
    let mut rest = data;
    let mut texts = Vec::new();
    while let Decode::Done((value, used)) = crate::protocol::resp::decode(rest) {
        rest = &rest[used..];
        if let crate::protocol::resp::Value::Bulk(Some(bytes)) = value {
            texts.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = crate::health::probe::classify_redis(&text, &text);
    for pair in texts.windows(2) {
        let _ = crate::health::probe::classify_redis(&pair[0], &pair[1]);
    }
}

/// An HTTP check's response head, and the body search.
pub fn http_head(data: &[u8]) {
    if let Decode::Done(head) = http::decode_response_head(data) {
        let body = data.get(head.head_len..).unwrap_or_default();
        let _ = http::contains(body, b"ok");
    }
}

/// A certificate's validity, read from DER.
pub fn der(data: &[u8]) {
    let _ = crate::tls::der::validity(data);
}

/// A PROXY protocol header as a listener with `accept_proxy` reads it, and the
/// addresses it names sent on in both versions, as `send_proxy` would.
pub fn proxy_header(data: &[u8]) {
    let _ = proxy_header::need(data);
    for accept in [Accept::V1, Accept::V2, Accept::Any] {
        if let Decode::Done(header) = proxy_header::decode(data, accept) {
            for version in [Version::V1, Version::V2] {
                let again = proxy_header::encode(version, header.addresses);
                let _ = proxy_header::decode(&again, Accept::Any);
            }
        }
    }
}
