use proptest::prelude::*;

use super::*;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn done(buf: &[u8], accept: Accept) -> Header {
    match decode(buf, accept) {
        Decode::Done(header) => header,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn invalid(buf: &[u8], accept: Accept) -> &'static str {
    match decode(buf, accept) {
        Decode::Invalid(reason) => reason,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

/// Every strict prefix of `header` is incomplete, and `need` never asks past its end.
fn prefixes_are_incomplete(header: &[u8], accept: Accept) {
    for cut in 0..header.len() {
        let prefix = &header[..cut];
        assert_eq!(decode(prefix, accept), Decode::Incomplete, "cut at {cut}");
        let left = header.len() - cut;
        match need(prefix) {
            Need::Exactly(n) => assert!(n >= 1 && n <= left, "cut {cut}: exactly {n} of {left}"),
            Need::Line(max) => assert!(max >= 1, "cut {cut}"),
        }
    }
}

#[test]
fn v1_lines_decode_with_their_addresses() {
    let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET /";
    let header = done(line, Accept::V1);
    assert_eq!(header.len, 45, "the client's bytes start after CRLF");
    assert_eq!(
        header.addresses,
        Some((addr("192.0.2.7:56324"), addr("198.51.100.1:443")))
    );
    let six = done(b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n", Accept::Any);
    assert_eq!(six.addresses, Some((addr("[2001:db8::1]:65535"), addr("[::1]:0"))));
    let unknown = done(b"PROXY UNKNOWN whatever follows\r\n", Accept::V1);
    assert_eq!((unknown.addresses, unknown.len), (None, 32));
    prefixes_are_incomplete(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n", Accept::V1);
}

#[test]
fn malformed_v1_lines_are_refused() {
    for line in [
        &b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n"[..],
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443 9\r\n",
        b"PROXY TCP4 192.0.2.300 198.51.100.1 1 2\r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        b"PROXY TCP6 192.0.2.7 198.51.100.1 1 2\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 065 2\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 2\r\n",
        b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n",
        b"PROXY\r\n",
    ] {
        assert!(!invalid(line, Accept::V1).is_empty());
    }
    assert_eq!(invalid(b"GET / HTTP/1.1\r\n", Accept::Any), "no PROXY protocol header");
    assert_eq!(invalid(b"PRONTO", Accept::V1), "no PROXY protocol header");
    let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
    assert_eq!(invalid(&long, Accept::V1), "v1 header longer than 107 bytes");
    assert_eq!(
        invalid(b"PROXY UNKNOWN\r\n", Accept::V2),
        "a v1 header where only v2 is accepted"
    );
}

#[test]
fn v2_headers_round_trip_for_both_families_and_local() {
    let cases = [
        Some((addr("192.0.2.7:56324"), addr("198.51.100.1:443"))),
        Some((addr("[2001:db8::7]:1"), addr("[2001:db8::1]:3306"))),
        None,
    ];
    for addresses in cases {
        let bytes = encode(Version::V2, addresses);
        let mut stream = bytes.clone();
        stream.extend(b"\x16\x03\x01 client hello");
        let header = done(&stream, Accept::Any);
        assert_eq!((header.addresses, header.len), (addresses, bytes.len()));
        prefixes_are_incomplete(&bytes, Accept::V2);
        let v1 = encode(Version::V1, addresses);
        assert_eq!(done(&v1, Accept::V1).addresses, addresses);
    }
    // Mixed families: the IPv4 end is mapped into IPv6.
    let mixed = done(
        &encode(Version::V2, Some((addr("192.0.2.7:5"), addr("[::1]:6")))),
        Accept::V2,
    );
    assert_eq!(mixed.addresses, Some((addr("[::ffff:192.0.2.7]:5"), addr("[::1]:6"))));
    assert_eq!(encode(Version::V1, None), b"PROXY UNKNOWN\r\n");
}

/// A v2 PROXY header for TCP4 with `tlvs` after the addresses.
fn v2_with(tlvs: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend([0x21, 0x11]);
    out.extend(((12 + tlvs.len()) as u16).to_be_bytes());
    out.extend([192, 0, 2, 7, 198, 51, 100, 1, 0x12, 0x34, 0x01, 0xbb]);
    out.extend(tlvs);
    out
}

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend((value.len() as u16).to_be_bytes());
    out.extend(value);
    out
}

#[test]
fn v2_tlvs_are_read_and_checked() {
    let ssl = [&[0x01, 0, 0, 0, 0][..], &tlv(0x21, b"TLSv1.3")].concat();
    let tlvs = [
        tlv(0x02, b"db.example.org"),
        tlv(0x01, b"h2"),
        tlv(0x05, b"abc"),
        tlv(0x20, &ssl),
        tlv(0x04, &[0; 3]),
        tlv(0x30, b"netns"),
    ]
    .concat();
    let header = done(&v2_with(&tlvs), Accept::V2);
    assert_eq!(header.authority.as_deref(), Some("db.example.org"));
    assert_eq!(header.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(header.unique_id.as_deref(), Some(&b"abc"[..]));
    assert!(header.client_tls);

    // CRC32C over the whole header with its own field zeroed.
    let mut with_crc = v2_with(&tlv(0x03, &[0; 4]));
    let crc = crc32c(&with_crc);
    let at = with_crc.len() - 4;
    with_crc[at..].copy_from_slice(&crc.to_be_bytes());
    done(&with_crc, Accept::V2);
    with_crc[at] ^= 1;
    assert_eq!(invalid(&with_crc, Accept::V2), "v2 header fails its CRC32C");

    assert_eq!(
        invalid(&v2_with(&[0x02, 0, 9, b'x']), Accept::V2),
        "v2 TLV longer than the header"
    );
    assert_eq!(invalid(&v2_with(&[0x02, 0]), Accept::V2), "v2 TLV cut short");
    assert_eq!(
        invalid(&v2_with(&tlv(0x05, &[1; 129])), Accept::V2),
        "v2 unique id longer than 128 bytes"
    );
    assert_eq!(
        invalid(&v2_with(&tlv(0x20, &[1, 0])), Accept::V2),
        "v2 SSL TLV cut short"
    );
    assert_eq!(
        invalid(&v2_with(&tlv(0x02, &[0xff])), Accept::V2),
        "v2 authority not UTF-8"
    );
}

#[test]
fn v2_headers_that_can_never_be_valid_are_refused() {
    let good = encode(Version::V2, Some((addr("192.0.2.7:1"), addr("192.0.2.8:2"))));
    let with = |at: usize, byte: u8| {
        let mut bad = good.clone();
        bad[at] = byte;
        bad
    };
    assert_eq!(invalid(&with(12, 0x11), Accept::V2), "v2 header of an unknown version");
    assert_eq!(
        invalid(&with(12, 0x22), Accept::V2),
        "v2 header with an unknown command"
    );
    assert_eq!(invalid(&with(13, 0x41), Accept::V2), "v2 header with an unknown family");
    assert_eq!(invalid(&with(5, b'x'), Accept::V2), "no PROXY protocol header");
    assert_eq!(
        invalid(&with(15, 4), Accept::V2),
        "v2 address block shorter than its family needs"
    );
    let oversized = [&good[..14], &[0x06, 0x00]].concat();
    assert_eq!(invalid(&oversized, Accept::V2), "v2 header longer than 1536 bytes");
    assert_eq!(invalid(&good, Accept::V1), "a v2 header where only v1 is accepted");
    // UDP and UNIX families are valid; their addresses are not used.
    let udp = with(13, 0x12);
    assert_eq!(done(&udp, Accept::V2).addresses, None);
    // LOCAL with addresses: they are ignored.
    assert_eq!(done(&with(12, 0x20), Accept::V2).addresses, None);
}

#[test]
fn crc32c_matches_the_check_value() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
}

proptest! {
    #[test]
    fn decoding_any_bytes_never_panics_and_agrees_with_its_own_length(bytes in proptest::collection::vec(any::<u8>(), 0..200), v2 in any::<bool>()) {
        // Half the cases start like a real header, so the decoder gets past the signature.
        let mut buf = if v2 { V2_SIGNATURE.to_vec() } else { b"PROXY ".to_vec() };
        buf.extend(&bytes);
        for input in [&bytes[..], &buf[..]] {
            if let Decode::Done(header) = decode(input, Accept::Any) {
                prop_assert!(header.len <= input.len());
                prop_assert_eq!(decode(&input[..header.len], Accept::Any), Decode::Done(header));
            }
        }
    }
}

#[test]
fn haproxys_v2_header_with_crc32c_and_unique_id_decodes() {
    // Recorded from HAProxy 2.6 (`send-proxy-v2 proxy-v2-options crc32c,unique-id`,
    // see `switchyard-drill record-corpus`), with the client's "hello\r\n" after it.
    let hex = "0d0a0d0a000d0a515549540a2111003f7f0000017f000001e6a036350300040dd59c1b05002937463030303030313a\
               453641305f37463030303030313a333633355f36423046374444335f3030303368656c6c6f0d0a";
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let header = done(&bytes, Accept::V2);
    assert_eq!(&bytes[header.len..], b"hello\r\n");
    assert_eq!(header.addresses.unwrap().0, addr("127.0.0.1:59040"));
    assert_eq!(
        header.unique_id.as_deref(),
        Some(&b"7F000001:E6A0_7F000001:3635_6B0F7DD3_0003"[..])
    );
    let mut corrupted = bytes.clone();
    corrupted[40] ^= 0x01; // inside the unique id
    assert_eq!(invalid(&corrupted, Accept::V2), "v2 header fails its CRC32C");
}
