//! MySQL packet decoding on captured, truncated and hostile bytes.

use super::*;

/// A MariaDB 10.11 greeting, as captured (auth data zeroed).
fn greeting() -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(b"5.5.5-10.11.19-MariaDB\0");
    p.extend_from_slice(&7u32.to_le_bytes()); // connection id
    p.extend_from_slice(&[0; 8]); // auth data 1
    p.push(0); // filler
    p.extend_from_slice(&0xf7feu16.to_le_bytes()); // caps, lower (no CLIENT_SSL)
    p.push(45); // charset
    p.extend_from_slice(&2u16.to_le_bytes()); // status
    p.extend_from_slice(&0x81ffu16.to_le_bytes()); // caps, upper
    p.push(21);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&[0x1d, 0, 0, 0]); // MariaDB extended caps
    p.extend_from_slice(&[0; 13]);
    p.extend_from_slice(b"mysql_native_password\0");
    p
}

#[test]
fn greeting_ssl_flag_is_set_and_cleared_in_place() {
    let mut g = greeting();
    let before = greeting_capabilities(&g).unwrap();
    assert_eq!(before & CLIENT_SSL, 0);
    assert_eq!(before >> 16, 0x81ff);
    set_greeting_ssl(&mut g, true).unwrap();
    assert_eq!(greeting_capabilities(&g).unwrap(), before | CLIENT_SSL);
    set_greeting_ssl(&mut g, false).unwrap();
    assert_eq!(g, greeting(), "only the one bit changed");
}

#[test]
fn bad_greetings_are_errors_never_panics() {
    assert!(greeting_capabilities(&[]).is_err());
    assert!(greeting_capabilities(&[9, b'x', 0]).is_err(), "protocol 9");
    assert!(greeting_capabilities(&[10, b'x', b'y']).is_err(), "no NUL");
    let g = greeting();
    for end in 0..g.len() {
        let _ = greeting_capabilities(&g[..end]);
        let _ = set_greeting_ssl(&mut g[..end].to_vec(), true);
    }
    // version 1 + "5.5.5-10.11.19-MariaDB\0" 23 + id 4 + auth 8 + filler 1 = 37.
    assert!(greeting_capabilities(&g[..38]).is_err(), "half a capability field");
    assert_eq!(
        greeting_capabilities(&g[..39]),
        Ok(0xf7fe),
        "the upper half is optional"
    );
}

#[test]
fn ssl_request_is_told_from_a_response() {
    let mut response = vec![0u8; 32];
    response[..4].copy_from_slice(&(CLIENT_PROTOCOL_41 | 0x000a_0000).to_le_bytes());
    response.extend_from_slice(b"root\0\0");
    assert!(!is_ssl_request(&response));
    let request = ssl_request_for(&response).unwrap();
    assert!(is_ssl_request(&request));
    assert_eq!(
        client_capabilities(&request).unwrap(),
        CLIENT_PROTOCOL_41 | 0x000a_0000 | CLIENT_SSL
    );
    assert_eq!(&request[4..], &response[4..32]);
    assert!(!is_ssl_request(&request[..31]));
    assert_eq!(ssl_request_for(&response[..31]), None);
    set_client_ssl(&mut response, true);
    set_client_ssl(&mut response, false);
    assert_eq!(client_capabilities(&response), Some(CLIENT_PROTOCOL_41 | 0x000a_0000));
}

#[test]
fn packets_frame_and_decode() {
    let packet = Packet {
        seq: 2,
        payload: b"\x00\x00\x00\x02\x00\x00\x00".to_vec(),
    };
    let bytes = packet.encode();
    assert_eq!(&bytes[..4], &[7, 0, 0, 2]);
    assert!(packet.ends_login());
    assert_eq!(decode(&bytes[..3]), Decode::Incomplete);
    assert_eq!(decode(&bytes[..10]), Decode::Incomplete);
    let mut two = bytes.clone();
    two.extend_from_slice(&bytes);
    assert_eq!(decode(&two), Decode::Done((packet, 11)));
    assert_eq!(
        decode(&[0xff, 0xff, 0xff, 0]),
        Decode::Invalid("login packet too large")
    );
    assert_eq!(header([1, 1, 1, 9]), (0x010101, 9));
}

fn response(caps: u32, auth: &[u8], db: Option<&str>, plugin: &str) -> Vec<u8> {
    let mut p = vec![0u8; 32];
    p[..4].copy_from_slice(&caps.to_le_bytes());
    p.extend_from_slice(b"app\0");
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 || caps & CLIENT_SECURE_CONNECTION != 0 {
        p.push(auth.len() as u8);
        p.extend_from_slice(auth);
    } else {
        p.extend_from_slice(auth);
        p.push(0);
    }
    if let Some(db) = db {
        p.extend_from_slice(db.as_bytes());
        p.push(0);
    }
    p.extend_from_slice(plugin.as_bytes());
    p.push(0);
    p
}

#[test]
fn the_response_names_its_plugin() {
    let base = CLIENT_PROTOCOL_41 | CLIENT_PLUGIN_AUTH;
    for caps in [
        base | CLIENT_SECURE_CONNECTION,
        base | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | CLIENT_SECURE_CONNECTION,
        base,
    ] {
        let p = response(caps, b"\x01\x02scramble", None, "mysql_native_password");
        assert_eq!(response_plugin(&p), Some("mysql_native_password"), "{caps:#x}");
        let p = response(
            caps | CLIENT_CONNECT_WITH_DB,
            b"secret",
            Some("appdb"),
            "sha256_password",
        );
        assert_eq!(response_plugin(&p), Some("sha256_password"), "{caps:#x}");
    }
    let p = response(CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION, b"x", None, "ignored");
    assert_eq!(response_plugin(&p), None, "no CLIENT_PLUGIN_AUTH");
    let p = response(base | CLIENT_SECURE_CONNECTION, b"x", None, "dialog");
    for end in 0..p.len() {
        let _ = response_plugin(&p[..end]);
    }
    assert_eq!(lenenc(&[0xfc, 0x01, 0x02]), Some((0x0201, &[][..])));
    assert_eq!(lenenc(&[0xfe, 1]), None);
    assert_eq!(lenenc(&[0xff]), None);
}

#[test]
fn auth_switches_and_full_auth_are_recognised() {
    assert_eq!(auth_switch_plugin(b"\xfedialog\0\x04Password: "), Some("dialog"));
    assert_eq!(auth_switch_plugin(b"\xfeclient_ed25519\0salt"), Some("client_ed25519"));
    assert_eq!(auth_switch_plugin(b"\xfe"), None);
    assert_eq!(auth_switch_plugin(b"\x00\x00"), None);
    assert!(is_full_auth_request(&[1, 4]));
    assert!(!is_full_auth_request(&[1, 3]), "fast auth success");
}

#[test]
fn err_packets_carry_code_state_and_message() {
    let p = err_payload(ER_SECURE_TRANSPORT_REQUIRED, "HY000", "TLS required");
    assert_eq!(&p[..4], &[0xFF, 0x57, 0x0c, b'#']);
    assert_eq!(&p[4..9], b"HY000");
    assert_eq!(&p[9..], b"TLS required");
    assert!(Packet { seq: 2, payload: p }.is_err());
}
