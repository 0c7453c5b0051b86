//! Just enough DER to read a certificate's validity period (RFC 5280 §4.1), so that an
//! expired or not-yet-valid certificate is a load-time error naming its file. rustls
//! checks validity only on the peer's side, where it would surface as a failed
//! handshake at 3 a.m.
//!
//! ```text
//! Certificate  ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
//! TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature,
//!                               issuer, validity, ... }
//! Validity ::= SEQUENCE { notBefore Time, notAfter Time }   -- UTCTime or GeneralizedTime
//! ```

/// A certificate's validity period, in seconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// `notBefore`: the certificate is not valid before this.
    pub not_before: i64,
    /// `notAfter`: the certificate is not valid after this.
    pub not_after: i64,
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xA0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The validity period of a DER certificate; `None` if it is not one.
pub fn validity(cert: &[u8]) -> Option<Validity> {
    let (certificate, _) = expect(cert, SEQUENCE)?;
    let (mut tbs, _) = expect(certificate, SEQUENCE)?;
    if tbs.first() == Some(&VERSION) {
        tbs = tlv(tbs)?.2;
    }
    let (_serial, rest) = expect(tbs, INTEGER)?;
    let (_signature, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (validity, _) = expect(rest, SEQUENCE)?;
    let (before_tag, before, rest) = tlv(validity)?;
    let (after_tag, after, _) = tlv(rest)?;
    Some(Validity {
        not_before: time(before_tag, before)?,
        not_after: time(after_tag, after)?,
    })
}

/// One TLV with the given tag: (value, rest).
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, value, rest) = tlv(input)?;
    (found == tag).then_some((value, rest))
}

/// One tag-length-value: (tag, value, rest). Definite lengths up to 4 bytes.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let len = input[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        input = &input[count..];
        len
    };
    (input.len() >= len).then(|| (tag, &input[..len], &input[len..]))
}

/// `YYMMDDHHMMSSZ` (UTCTime, years 1950–2049) or `YYYYMMDDHHMMSSZ` (GeneralizedTime).
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy: i64 = digits[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let field = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD HH:MM:SS UTC`, for messages.
pub fn format(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(format(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn times_decode() {
        assert_eq!(time(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(time(UTC_TIME, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(time(GENERALIZED_TIME, b"20000229000000Z"), Some(951_782_400));
        assert_eq!(time(UTC_TIME, b"20000229000000Z"), None, "wrong length for the tag");
        assert_eq!(time(UTC_TIME, b"701301000000Z"), None, "month 13");
        assert_eq!(time(UTC_TIME, b"700101000000"), None, "no Z");
        assert_eq!(time(UTC_TIME, b"70010100000+Z"), None);
    }

    #[test]
    fn malformed_input_is_none_never_a_panic() {
        assert_eq!(validity(b""), None);
        assert_eq!(validity(&[0x30]), None);
        assert_eq!(validity(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(validity(&[0x30, 0x80]), None, "indefinite length");
        assert_eq!(validity(b"-----BEGIN CERTIFICATE-----"), None);
        // Every prefix of a structurally valid TBS must fail cleanly.
        let tbs = [
            0x30, 0x29, 0x30, 0x27, 0x02, 0x01, 0x01, 0x30, 0x00, 0x30, 0x00, 0x30, 0x1e, 0x17, 0x0d, b'7', b'0', b'0',
            b'1', b'0', b'1', b'0', b'0', b'0', b'0', b'0', b'0', b'Z', 0x17, 0x0d, b'4', b'9', b'1', b'2', b'3', b'1',
            b'2', b'3', b'5', b'9', b'5', b'9', b'Z',
        ];
        assert_eq!(
            validity(&tbs),
            Some(Validity {
                not_before: 0,
                not_after: 2_524_607_999
            })
        );
        for end in 0..tbs.len() {
            let _ = validity(&tbs[..end]);
        }
    }
}
