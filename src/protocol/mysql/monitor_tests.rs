//! The monitor's decoders on real-shaped, truncated and hostile packets.

use proptest::prelude::*;

use super::*;
use crate::protocol::mysql::scramble::{scramble_native, scramble_sha256};

/// A MariaDB 10.11 greeting with a known nonce.
fn mariadb_greeting() -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(b"5.5.5-10.11.19-MariaDB\0");
    p.extend_from_slice(&7u32.to_le_bytes());
    p.extend_from_slice(b"abcdefgh");
    p.push(0);
    p.extend_from_slice(&0xf7feu16.to_le_bytes());
    p.push(45);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&0x81ffu16.to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&[0x1d, 0, 0, 0]);
    p.extend_from_slice(b"ijklmnopqrst\0");
    p.extend_from_slice(b"mysql_native_password\0");
    p
}

#[test]
fn a_mariadb_greeting_gives_its_nonce_plugin_and_capabilities() {
    let g = greeting(&mariadb_greeting()).unwrap().unwrap();
    assert_eq!(g.version, "5.5.5-10.11.19-MariaDB");
    assert_eq!(g.nonce, b"abcdefghijklmnopqrst");
    assert_eq!(g.plugin, "mysql_native_password");
    assert_eq!(g.capabilities >> 16, 0x81ff);
    assert!(!g.offers_tls());
}

#[test]
fn an_err_packet_instead_of_a_greeting_is_the_servers_refusal() {
    let err = super::super::err_payload(1129, "HY000", "Host '127.0.0.1' is blocked");
    let refused = greeting(&err).unwrap().unwrap_err();
    assert_eq!(refused.code, 1129);
    assert_eq!(refused.message, "Host '127.0.0.1' is blocked");
}

#[test]
fn every_truncated_greeting_is_malformed_or_short_of_nothing_needed() {
    let full = mariadb_greeting();
    for len in 0..full.len() - 22 {
        // Cut before the plugin name: the nonce or the header is missing.
        assert!(greeting(&full[..len]).is_err(), "cut at {len}");
    }
}

#[test]
fn the_scrambles_match_an_independent_implementation() {
    let nonce = b"abcdefghijklmnopqrst";
    for password in ["secret", "pässwörd", "x"] {
        let theirs = mysql_common::scramble::scramble_native(nonce, password.as_bytes()).unwrap();
        assert_eq!(
            scramble_native(nonce, password.as_bytes()),
            theirs.to_vec(),
            "{password}"
        );
        let theirs = mysql_common::scramble::scramble_sha256(nonce, password.as_bytes()).unwrap();
        assert_eq!(
            scramble_sha256(nonce, password.as_bytes()),
            theirs.to_vec(),
            "{password}"
        );
    }
    assert!(scramble_native(nonce, b"").is_empty());
}

#[test]
fn a_handshake_response_carries_user_scramble_and_plugin() {
    let response = handshake_response("monitor", &[1, 2, 3], "mysql_native_password", false);
    assert_eq!(super::super::client_capabilities(&response), Some(MONITOR_CAPABILITIES));
    assert_eq!(super::super::response_plugin(&response), Some("mysql_native_password"));
    assert_eq!(&response[32..40], b"monitor\0");
    assert_eq!(&response[40..44], &[3, 1, 2, 3]);
    let over_tls = handshake_response("monitor", &[], "x", true);
    assert_ne!(super::super::client_capabilities(&over_tls).unwrap() & CLIENT_SSL, 0);
    assert!(super::super::is_ssl_request(&ssl_request()));
}

#[test]
fn auth_replies_are_told_apart() {
    assert_eq!(auth_reply(&[0, 0, 0, 2, 0, 0, 0]), Ok(AuthReply::Ok));
    assert_eq!(auth_reply(&[1, 4]), Ok(AuthReply::More(vec![4])));
    assert_eq!(
        auth_reply(b"\xFEcaching_sha2_password\0nonce\0"),
        Ok(AuthReply::Switch {
            plugin: "caching_sha2_password".into(),
            nonce: b"nonce".to_vec()
        })
    );
    assert!(
        matches!(auth_reply(&super::super::err_payload(1045, "28000", "no")), Ok(AuthReply::Err(e)) if e.code == 1045)
    );
    assert!(auth_reply(b"\xFEno terminator").is_err());
    assert!(auth_reply(&[]).is_err());
    assert!(auth_reply(&[7]).is_err());
}

#[test]
fn column_counts_beyond_the_cap_are_refused_before_anything_is_allocated() {
    assert_eq!(result_head(&[3]), Ok(ResultHead::Columns(3)));
    assert!(result_head(&[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
    assert!(result_head(&[0xFC, 0x01, 0x04]).is_err()); // 1025
    assert!(result_head(&[0xFB]).is_err()); // LOCAL INFILE
    assert_eq!(result_head(&[0, 0, 0, 8, 0, 0, 0]), Ok(ResultHead::Ok { more: true }));
    assert_eq!(result_head(&[0xFF, 1, 2]), Ok(ResultHead::Err));
}

#[test]
fn rows_and_column_definitions_decode_and_refuse_what_does_not_fit() {
    let mut def = Vec::new();
    for part in [&b"def"[..], b"", b"", b"", b"@@read_only", b"@@read_only"] {
        def.push(part.len() as u8);
        def.extend_from_slice(part);
    }
    def.extend_from_slice(&[0x0c, 0x3f, 0, 1, 0, 0, 0, 8, 0x81, 0, 0, 0, 0]);
    assert_eq!(column_name(&def).unwrap(), "@@read_only");
    assert!(column_name(&def[..8]).is_err());

    assert_eq!(text_row(&[1, b'0', 0xFB], 2).unwrap(), vec![Some("0".into()), None]);
    assert!(text_row(&[1, b'0'], 2).is_err(), "too few values");
    assert!(text_row(&[1, b'0', 1, b'1'], 1).is_err(), "bytes left over");
    assert!(text_row(&[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], 1).is_err());
    assert_eq!(eof_status(&[0xFE, 0, 0, 8, 0]), Some(8));
    assert_eq!(
        eof_status(&[0xFE, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        None,
        "a long 0xFE packet is a row"
    );
}

proptest! {
    /// No payload makes a decoder panic.
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), columns in 0usize..80) {
        let _ = greeting(&bytes);
        let _ = auth_reply(&bytes);
        let _ = server_error(&bytes);
        let _ = result_head(&bytes);
        let _ = column_name(&bytes);
        let _ = text_row(&bytes, columns);
        let _ = eof_status(&bytes);
    }
}
