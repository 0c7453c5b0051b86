//! The slice of RESP2 (the Redis serialization protocol) a health check needs: commands
//! out as arrays of bulk strings, replies in (pure, over bytes).
//!
//! ```text
//! +OK\r\n   -ERR msg\r\n   :42\r\n   $5\r\nhello\r\n   $-1\r\n   *2\r\n<value><value>   *-1\r\n
//! ```
//!
//! Our own decoder rather than the `redis` crate's client: the probe must own its
//! timeouts and its one connection (a client that reconnects or retries on its own
//! would stand between the proxy and the node it judges), and every byte a node sends
//! goes through a decoder with caps: a line of at most [`MAX_LINE`] bytes, a bulk string
//! of at most [`MAX_BULK`], arrays of at most [`MAX_ARRAY`] elements nested at most
//! [`MAX_DEPTH`] deep. Anything else is [`Decode::Invalid`], never a panic.

use super::Decode;

/// The longest simple string, error or length line.
pub const MAX_LINE: usize = 4096;
/// The largest bulk string (an `INFO` reply is a few KiB).
pub const MAX_BULK: usize = 1 << 20;
/// The most elements of one array.
pub const MAX_ARRAY: usize = 1024;
/// The deepest nesting of arrays.
pub const MAX_DEPTH: usize = 4;
/// The most values one reply may hold, nested ones included: a reader that decodes a
/// growing buffer again after each read does bounded work each time.
pub const MAX_VALUES: usize = 4096;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+...`
    Simple(String),
    /// `-...`: the node refused the command.
    Error(String),
    /// `:...`
    Integer(i64),
    /// `$...`; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*...`; `None` for the null array.
    Array(Option<Vec<Value>>),
}

/// A command as RESP: an array of bulk strings.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Decodes one reply from the start of `buf`: the value and the bytes it used.
pub fn decode(buf: &[u8]) -> Decode<(Value, usize)> {
    value(buf, 0, &mut MAX_VALUES.clone())
}

/// One value at the start of `buf`, `budget` values left for the whole reply.
fn value(buf: &[u8], depth: usize, budget: &mut usize) -> Decode<(Value, usize)> {
    if *budget == 0 {
        return Decode::Invalid("a reply with too many values");
    }
    *budget -= 1;
    let (line, used) = match line(buf) {
        Decode::Done(found) => found,
        Decode::Incomplete => return Decode::Incomplete,
        Decode::Invalid(why) => return Decode::Invalid(why),
    };
    let (&kind, rest) = match line.split_first() {
        Some(split) => split,
        None => return Decode::Invalid("an empty line"),
    };
    let text = || String::from_utf8_lossy(rest).into_owned();
    match kind {
        b'+' => Decode::Done((Value::Simple(text()), used)),
        b'-' => Decode::Done((Value::Error(text()), used)),
        b':' => match number(rest) {
            Some(n) => Decode::Done((Value::Integer(n), used)),
            None => Decode::Invalid("an integer reply that is not a number"),
        },
        b'$' => bulk(buf, rest, used),
        b'*' => array(buf, rest, used, depth, budget),
        _ => Decode::Invalid("not a RESP2 reply"),
    }
}

fn bulk(buf: &[u8], length: &[u8], used: usize) -> Decode<(Value, usize)> {
    match number(length) {
        Some(-1) => Decode::Done((Value::Bulk(None), used)),
        Some(n) if (0..=MAX_BULK as i64).contains(&n) => {
            let n = n as usize;
            let end = used + n + 2;
            if buf.len() < end {
                return Decode::Incomplete;
            }
            if &buf[used + n..end] != b"\r\n" {
                return Decode::Invalid("a bulk string without its CRLF");
            }
            Decode::Done((Value::Bulk(Some(buf[used..used + n].to_vec())), end))
        }
        _ => Decode::Invalid("a bulk length out of range"),
    }
}

fn array(buf: &[u8], count: &[u8], mut used: usize, depth: usize, budget: &mut usize) -> Decode<(Value, usize)> {
    let n = match number(count) {
        Some(-1) => return Decode::Done((Value::Array(None), used)),
        Some(n) if (0..=MAX_ARRAY as i64).contains(&n) => n as usize,
        _ => return Decode::Invalid("an array length out of range"),
    };
    if depth >= MAX_DEPTH {
        return Decode::Invalid("arrays nested too deep");
    }
    let mut items = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        match value(&buf[used..], depth + 1, budget) {
            Decode::Done((item, len)) => {
                items.push(item);
                used += len;
            }
            other => return other,
        }
    }
    Decode::Done((Value::Array(Some(items)), used))
}

/// The line at the start of `buf` (without CRLF) and the bytes it used.
fn line(buf: &[u8]) -> Decode<(&[u8], usize)> {
    let window = &buf[..buf.len().min(MAX_LINE + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(at) => Decode::Done((&buf[..at], at + 2)),
        None if buf.len() > MAX_LINE + 1 => Decode::Invalid("a line longer than allowed"),
        None => Decode::Incomplete,
    }
}

fn number(digits: &[u8]) -> Option<i64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// `INFO`'s text: `key:value` lines (sections' `# Name` headers and blank lines
/// skipped), in order.
pub fn info_fields(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(bytes: &[u8]) -> Value {
        match decode(bytes) {
            Decode::Done((value, used)) => {
                assert_eq!(used, bytes.len(), "{bytes:?}");
                value
            }
            other => panic!("{bytes:?}: {other:?}"),
        }
    }

    #[test]
    fn replies_decode() {
        assert_eq!(done(b"+OK\r\n"), Value::Simple("OK".into()));
        assert_eq!(
            done(b"-NOAUTH Authentication required.\r\n"),
            Value::Error("NOAUTH Authentication required.".into())
        );
        assert_eq!(done(b":-7\r\n"), Value::Integer(-7));
        assert_eq!(done(b"$5\r\nhe\r\no\r\n"), Value::Bulk(Some(b"he\r\no".to_vec())));
        assert_eq!(done(b"$-1\r\n"), Value::Bulk(None));
        assert_eq!(done(b"*-1\r\n"), Value::Array(None));
        assert_eq!(
            done(b"*2\r\n$3\r\nfoo\r\n:1\r\n"),
            Value::Array(Some(vec![Value::Bulk(Some(b"foo".to_vec())), Value::Integer(1)]))
        );
        assert_eq!(
            command(&[b"INFO", b"replication"]),
            b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n"
        );
    }

    #[test]
    fn short_input_waits_and_bad_input_is_refused() {
        let whole = b"*2\r\n$3\r\nfoo\r\n:1\r\n";
        for cut in 0..whole.len() {
            assert!(matches!(decode(&whole[..cut]), Decode::Incomplete), "cut at {cut}");
        }
        for bad in [
            &b"?what\r\n"[..],
            b"$2\r\nabc\r\n",
            b"$99999999999\r\n",
            b"*5000\r\n",
            b":x\r\n",
            b"\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert!(matches!(decode(bad), Decode::Invalid(_)), "{bad:?}");
        }
        // Many small values: refused past the budget, whatever the buffer holds.
        let mut many = b"*1000\r\n".to_vec();
        for _ in 0..1000 {
            many.extend_from_slice(b"*10\r\n");
            many.extend(b":1\r\n".repeat(10));
        }
        assert!(matches!(decode(&many), Decode::Invalid("a reply with too many values")));
        let long = vec![b'+'; MAX_LINE + 10];
        assert!(matches!(decode(&long), Decode::Invalid(_)));
    }

    #[test]
    fn info_lines_are_split() {
        let text = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\n\r\nslave0:ip=1,port=2\r\n";
        let fields: Vec<_> = info_fields(text).collect();
        assert_eq!(
            fields,
            [
                ("role", "slave"),
                ("master_host", "127.0.0.1"),
                ("slave0", "ip=1,port=2")
            ]
        );
    }
}
