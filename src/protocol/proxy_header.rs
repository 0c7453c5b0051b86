//! PROXY protocol headers, versions 1 (text) and 2 (binary), as HAProxy's
//! specification defines them: [`decode`] reads the header a trusted load balancer
//! puts before a connection's first byte; [`encode`] writes the one we put before
//! ours. Bounded: a v1 line is at most [`V1_MAX`] bytes, a v2 header at most
//! [`V2_MAX`]; the reader asks [`need`] how much it may consume so that it never
//! reads past the header into the client's own bytes.
//!
//! v2 details handled: the LOCAL command (a balancer's own health check: the
//! connection's real addresses stand), families other than TCP over IPv4/IPv6
//! (valid, addresses ignored), and the TLVs: each one's length is checked against
//! the header's, CRC32C is verified when present, ALPN, authority (the client's
//! SNI), the unique id and the SSL TLV (with its sub-TLVs) are kept or validated.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::Decode;

/// The twelve bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included (the specification's limit).
pub const V1_MAX: usize = 107;
/// The longest v2 header we accept: 16 fixed bytes and up to 1,520 of addresses
/// and TLVs (a balancer sends far less; the specification allows 65,535).
pub const V2_MAX: usize = 1536;

/// Which versions a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Only the text version.
    V1,
    /// Only the binary version.
    V2,
    /// Either, told apart by the first byte.
    Any,
}

/// Which version to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `PROXY TCP4 …\r\n`.
    V1,
    /// The binary header.
    V2,
}

/// A decoded header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// The header's length: the connection's own bytes start here.
    pub len: usize,
    /// The original client and the address it connected to; `None` for v2 LOCAL, v1
    /// UNKNOWN and families without addresses (the connection's own then stand).
    pub addresses: Option<Addresses>,
    /// v2 `PP2_TYPE_AUTHORITY`: the host name the client asked for (its SNI).
    pub authority: Option<String>,
    /// v2 `PP2_TYPE_ALPN`.
    pub alpn: Option<Vec<u8>>,
    /// v2 `PP2_TYPE_UNIQUE_ID`.
    pub unique_id: Option<Vec<u8>>,
    /// v2 `PP2_TYPE_SSL`: the client's connection to the balancer was TLS.
    pub client_tls: bool,
}

/// How many more bytes the reader may consume without reading past the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Exactly this many.
    Exactly(usize),
    /// Up to and including the next `\n`, at most this many.
    Line(usize),
}

/// What to read next, given the bytes so far (for which [`decode`] said
/// `Incomplete`).
pub fn need(buf: &[u8]) -> Need {
    match buf.first() {
        None => Need::Exactly(1),
        Some(b'P') => Need::Line(V1_MAX.saturating_sub(buf.len()).max(1)),
        Some(_) if buf.len() < 16 => Need::Exactly(16 - buf.len()),
        Some(_) => {
            let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
            Need::Exactly(total.saturating_sub(buf.len()).max(1))
        }
    }
}

/// Decodes a header from the start of `buf`, of a version `accept` allows.
pub fn decode(buf: &[u8], accept: Accept) -> Decode<Header> {
    let Some(&first) = buf.first() else {
        return Decode::Incomplete;
    };
    match (first, accept) {
        (b'P', Accept::V1 | Accept::Any) => decode_v1(buf),
        (b'\r', Accept::V2 | Accept::Any) => decode_v2(buf),
        (b'P', Accept::V2) => Decode::Invalid("a v1 header where only v2 is accepted"),
        (b'\r', Accept::V1) => Decode::Invalid("a v2 header where only v1 is accepted"),
        _ => Decode::Invalid("no PROXY protocol header"),
    }
}

fn decode_v1(buf: &[u8]) -> Decode<Header> {
    const PREFIX: &[u8] = b"PROXY ";
    let head = &buf[..buf.len().min(PREFIX.len())];
    if !PREFIX.starts_with(head) {
        return Decode::Invalid("no PROXY protocol header");
    }
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Decode::Invalid("v1 header longer than 107 bytes")
        } else {
            Decode::Incomplete
        };
    };
    if end + 1 > V1_MAX {
        return Decode::Invalid("v1 header longer than 107 bytes");
    }
    let Some(line) = buf[..end].strip_suffix(b"\r") else {
        return Decode::Invalid("v1 header not ended by CRLF");
    };
    let Ok(line) = std::str::from_utf8(&line[PREFIX.len().min(line.len())..]) else {
        return Decode::Invalid("v1 header not ASCII");
    };
    let len = end + 1;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    if family == "UNKNOWN" {
        // The receiver ignores the rest of an UNKNOWN line.
        return Decode::Done(Header {
            len,
            ..Header::default()
        });
    }
    let parsed = (|| {
        let (src, dst) = (fields.next()?, fields.next()?);
        let (sport, dport) = (port(fields.next()?)?, port(fields.next()?)?);
        if fields.next().is_some() {
            return None;
        }
        let (src, dst): (IpAddr, IpAddr) = match family {
            "TCP4" => (
                src.parse::<Ipv4Addr>().ok()?.into(),
                dst.parse::<Ipv4Addr>().ok()?.into(),
            ),
            "TCP6" => (
                src.parse::<Ipv6Addr>().ok()?.into(),
                dst.parse::<Ipv6Addr>().ok()?.into(),
            ),
            _ => return None,
        };
        Some((SocketAddr::new(src, sport), SocketAddr::new(dst, dport)))
    })();
    match parsed {
        Some(addresses) => Decode::Done(Header {
            len,
            addresses: Some(addresses),
            ..Header::default()
        }),
        None => Decode::Invalid("malformed v1 header"),
    }
}

/// A decimal port without sign or leading zeros.
fn port(text: &str) -> Option<u16> {
    let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    (digits && (text == "0" || !text.starts_with('0'))).then(|| text.parse().ok())?
}

fn decode_v2(buf: &[u8]) -> Decode<Header> {
    let head = &buf[..buf.len().min(V2_SIGNATURE.len())];
    if !V2_SIGNATURE.starts_with(head) {
        return Decode::Invalid("no PROXY protocol header");
    }
    if buf.len() < 16 {
        return Decode::Incomplete;
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Decode::Invalid("v2 header of an unknown version");
    }
    if command > 1 {
        return Decode::Invalid("v2 header with an unknown command");
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX {
        return Decode::Invalid("v2 header longer than 1536 bytes");
    }
    if buf.len() < len {
        return Decode::Incomplete;
    }
    let (family, body) = (buf[13], &buf[16..len]);
    let (addresses, rest) = match v2_addresses(family, body) {
        Ok(split) => split,
        Err(reason) => return Decode::Invalid(reason),
    };
    let mut header = Header {
        len,
        // LOCAL: the balancer's own connection; its addresses stand.
        addresses: if command == 1 { addresses } else { None },
        ..Header::default()
    };
    match tlvs(rest, &buf[..len], &mut header) {
        Ok(()) => Decode::Done(header),
        Err(reason) => Decode::Invalid(reason),
    }
}

/// A connection's two ends: the client, and the address it connected to.
pub type Addresses = (SocketAddr, SocketAddr);

/// The address block of `family`, and the bytes after it (the TLVs).
fn v2_addresses(family: u8, body: &[u8]) -> Result<(Option<Addresses>, &[u8]), &'static str> {
    let (af, transport) = (family >> 4, family & 0x0f);
    if af > 3 || transport > 2 {
        return Err("v2 header with an unknown family");
    }
    let size = match af {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if body.len() < size {
        return Err("v2 address block shorter than its family needs");
    }
    let (block, rest) = body.split_at(size);
    let ports = |at: usize| {
        (
            u16::from_be_bytes([block[at], block[at + 1]]),
            u16::from_be_bytes([block[at + 2], block[at + 3]]),
        )
    };
    // Only TCP over IPv4/IPv6 carries addresses we use; others are valid, ignored.
    let addresses = match (af, transport) {
        (1, 1) => {
            let (src, dst) = (<[u8; 4]>::try_from(&block[..4]), <[u8; 4]>::try_from(&block[4..8]));
            let (sport, dport) = ports(8);
            Some((
                SocketAddr::new(Ipv4Addr::from(src.unwrap_or_default()).into(), sport),
                SocketAddr::new(Ipv4Addr::from(dst.unwrap_or_default()).into(), dport),
            ))
        }
        (2, 1) => {
            let (src, dst) = (<[u8; 16]>::try_from(&block[..16]), <[u8; 16]>::try_from(&block[16..32]));
            let (sport, dport) = ports(32);
            Some((
                SocketAddr::new(Ipv6Addr::from(src.unwrap_or_default()).into(), sport),
                SocketAddr::new(Ipv6Addr::from(dst.unwrap_or_default()).into(), dport),
            ))
        }
        _ => None,
    };
    Ok((addresses, rest))
}

const PP2_TYPE_ALPN: u8 = 0x01;
const PP2_TYPE_AUTHORITY: u8 = 0x02;
const PP2_TYPE_CRC32C: u8 = 0x03;
const PP2_TYPE_UNIQUE_ID: u8 = 0x05;
const PP2_TYPE_SSL: u8 = 0x20;

/// Splits `bytes` into (type, value) TLVs; an error when one runs past the end.
fn split_tlvs(mut bytes: &[u8]) -> Result<Vec<(u8, &[u8])>, &'static str> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 3 {
            return Err("v2 TLV cut short");
        }
        let len = usize::from(u16::from_be_bytes([bytes[1], bytes[2]]));
        let value = bytes.get(3..3 + len).ok_or("v2 TLV longer than the header")?;
        out.push((bytes[0], value));
        bytes = &bytes[3 + len..];
    }
    Ok(out)
}

/// Reads the TLVs in `bytes` into `header`; `whole` is the header, for CRC32C.
fn tlvs(bytes: &[u8], whole: &[u8], header: &mut Header) -> Result<(), &'static str> {
    let offset = whole.len() - bytes.len();
    let mut at = offset;
    for (kind, value) in split_tlvs(bytes)? {
        let value_at = at + 3;
        at = value_at + value.len();
        match kind {
            PP2_TYPE_ALPN => header.alpn = Some(value.to_vec()),
            PP2_TYPE_AUTHORITY => {
                let name = std::str::from_utf8(value).map_err(|_| "v2 authority not UTF-8")?;
                header.authority = Some(name.to_string());
            }
            PP2_TYPE_UNIQUE_ID if value.len() > 128 => return Err("v2 unique id longer than 128 bytes"),
            PP2_TYPE_UNIQUE_ID => header.unique_id = Some(value.to_vec()),
            PP2_TYPE_CRC32C => {
                let expected = <[u8; 4]>::try_from(value).map_err(|_| "v2 CRC32C TLV not 4 bytes")?;
                let mut copy = whole.to_vec();
                copy[value_at..value_at + 4].fill(0);
                if crc32c(&copy) != u32::from_be_bytes(expected) {
                    return Err("v2 header fails its CRC32C");
                }
            }
            PP2_TYPE_SSL => {
                // client (1 byte), verify (4 bytes), then sub-TLVs.
                let subs = value.get(5..).ok_or("v2 SSL TLV cut short")?;
                split_tlvs(subs)?;
                header.client_tls = value[0] & 0x01 != 0;
            }
            // NOOP, NETNS and types we do not use: skipped.
            _ => {}
        }
    }
    Ok(())
}

/// CRC32C (Castagnoli), bitwise over a 256-entry table built at compile time.
fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    !bytes
        .iter()
        .fold(!0u32, |crc, &b| TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8))
}

/// The header for a connection from `source` to `destination`; `None` (v2 LOCAL,
/// v1 UNKNOWN) for the proxy's own connections, such as health checks.
pub fn encode(version: Version, addresses: Option<Addresses>) -> Vec<u8> {
    // Both ends in one family: an IPv4 end beside an IPv6 one is mapped into IPv6.
    let addresses = addresses.map(|(src, dst)| match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => (src, dst),
        _ => (mapped(src), mapped(dst)),
    });
    match (version, addresses) {
        (Version::V1, None) => b"PROXY UNKNOWN\r\n".to_vec(),
        (Version::V1, Some((src, dst))) => {
            let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            let (s, d) = (src.ip(), dst.ip());
            format!("PROXY {family} {s} {d} {} {}\r\n", src.port(), dst.port()).into_bytes()
        }
        (Version::V2, addresses) => {
            let mut out = V2_SIGNATURE.to_vec();
            let block: Vec<u8> = match addresses {
                None => {
                    out.extend([0x20, 0x00]);
                    Vec::new()
                }
                Some((src, dst)) => {
                    out.extend([0x21, if src.is_ipv4() { 0x11 } else { 0x21 }]);
                    let mut block = ip_bytes(src.ip());
                    block.extend(ip_bytes(dst.ip()));
                    block.extend(src.port().to_be_bytes());
                    block.extend(dst.port().to_be_bytes());
                    block
                }
            };
            out.extend((block.len() as u16).to_be_bytes());
            out.extend(block);
            out
        }
    }
}

fn mapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

#[cfg(test)]
#[path = "proxy_header_tests.rs"]
mod tests;
