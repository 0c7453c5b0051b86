//! The slice of the MongoDB wire protocol a health check needs: OP_MSG framing (pure
//! encode/decode over bytes) and the `hello` reply, parsed into [`Hello`].
//!
//! OP_MSG (opcode 2013): a 16-byte header (length, requestID, responseTo, opCode),
//! `flagBits` (u32), then sections; section kind 0 is one BSON document, the body.
//! We never set `moreToCome`/`exhaustAllowed`, so a reply is exactly one message.

use bson::raw::RawBsonRef;
use bson::{Bson, Document, RawDocument};

use super::Decode;

pub mod replies;

/// The OP_MSG opcode.
pub const OP_MSG: i32 = 2013;
const HEADER: usize = 16;
/// MongoDB's own limit on a message (48 MB); anything larger is garbage.
pub const MAX_MESSAGE: usize = 48_000_000;
/// The deepest nesting of documents and arrays a reply may have (MongoDB's own
/// storage limit is 100). bson's document parser recurses once per level, so a peer's
/// reply nested thousands deep would overflow the stack: it is refused first, by
/// [`nesting_within`], which keeps its own stack.
pub const MAX_DEPTH: usize = 100;
/// The flagBits a reply may carry that we understand (checksumPresent is bit 0).
const CHECKSUM_PRESENT: u32 = 1;

/// Encodes `body` as an OP_MSG request.
pub fn encode_op_msg(request_id: i32, body: &Document) -> Vec<u8> {
    let mut doc = Vec::with_capacity(64);
    body.to_writer(&mut doc).expect("writing BSON into a Vec cannot fail");
    let length = (HEADER + 4 + 1 + doc.len()) as i32;
    let mut out = Vec::with_capacity(length as usize);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&OP_MSG.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.push(0);
    out.extend_from_slice(&doc);
    out
}

/// Decodes one OP_MSG reply from the start of `buf`: its body and the bytes it used.
pub fn decode_op_msg(buf: &[u8]) -> Decode<(Document, usize)> {
    if buf.len() < 4 {
        return Decode::Incomplete;
    }
    let length = i32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let Ok(length) = usize::try_from(length) else {
        return Decode::Invalid("negative message length");
    };
    if !(HEADER + 5..=MAX_MESSAGE).contains(&length) {
        return Decode::Invalid("message length out of range");
    }
    if buf.len() < length {
        return Decode::Incomplete;
    }
    let message = &buf[..length];
    let op_code = i32::from_le_bytes([message[12], message[13], message[14], message[15]]);
    if op_code != OP_MSG {
        return Decode::Invalid("not an OP_MSG reply");
    }
    let flags = u32::from_le_bytes([message[16], message[17], message[18], message[19]]);
    if flags & !CHECKSUM_PRESENT != 0 {
        return Decode::Invalid("unexpected OP_MSG flag bits");
    }
    let end = if flags & CHECKSUM_PRESENT != 0 {
        length - 4
    } else {
        length
    };
    let mut at = HEADER + 4;
    while at < end {
        let kind = message[at];
        at += 1;
        let Some(size_bytes) = message.get(at..at + 4) else {
            return Decode::Invalid("truncated section");
        };
        let size = i32::from_le_bytes([size_bytes[0], size_bytes[1], size_bytes[2], size_bytes[3]]);
        let Some(size) = usize::try_from(size).ok().filter(|&s| s >= 5 && at + s <= end) else {
            return Decode::Invalid("section size out of range");
        };
        if kind == 0 {
            let Ok(raw) = RawDocument::from_bytes(&message[at..at + size]) else {
                return Decode::Invalid("body is not valid BSON");
            };
            if !nesting_within(raw, MAX_DEPTH) {
                return Decode::Invalid("body nested deeper than 100 levels, or not valid BSON");
            }
            return match Document::try_from(raw) {
                Ok(body) => Decode::Done((body, length)),
                Err(_) => Decode::Invalid("body is not valid BSON"),
            };
        }
        at += size; // kind 1 (document sequence): not expected in a hello reply; skip
    }
    Decode::Invalid("no body section")
}

/// Whether every document and array in `doc` is well formed and nested at most `max`
/// levels (the top level is 1). Walks with a stack of its own, not by recursion.
pub fn nesting_within(doc: &RawDocument, max: usize) -> bool {
    let mut stack = vec![doc.iter()];
    while let Some(elements) = stack.last_mut() {
        let inner = match elements.next() {
            None => {
                stack.pop();
                continue;
            }
            Some(Err(_)) => return false,
            Some(Ok((_, value))) => match value {
                RawBsonRef::Document(inner) => inner,
                RawBsonRef::Array(array) => match RawDocument::from_bytes(array.as_bytes()) {
                    Ok(inner) => inner,
                    Err(_) => return false,
                },
                RawBsonRef::JavaScriptCodeWithScope(code) => code.scope,
                _ => continue,
            },
        };
        if stack.len() >= max {
            return false;
        }
        stack.push(inner.iter());
    }
    true
}

/// What a member says of itself in its `hello` (or legacy `isMaster`) reply.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Hello {
    /// Whether the reply's `ok` is set (the command succeeded).
    pub ok: bool,
    /// `isWritablePrimary` (or the legacy `ismaster`): the member accepts writes.
    pub writable_primary: bool,
    /// `secondary`: the member is a secondary.
    pub secondary: bool,
    /// `arbiterOnly`: the member is an arbiter.
    pub arbiter: bool,
    /// `hidden`: the member is hidden.
    pub hidden: bool,
    /// `setName`: the replica set's name.
    pub set_name: Option<String>,
    /// `setVersion`: the version of the replica set configuration.
    pub set_version: Option<i64>,
    /// The electionId as 24 hex digits (ObjectIds compare like their bytes).
    pub election_id: Option<String>,
    /// `hosts`: the set's members, as this member lists them.
    pub hosts: Vec<String>,
    /// `primary`: the member this one reports as primary.
    pub primary: Option<String>,
    /// `lastWrite.lastWriteDate`, Unix milliseconds.
    pub last_write_ms: Option<i64>,
    /// The server's error when `ok` is 0 (`errmsg`, `code`).
    pub error: Option<(String, i32)>,
    /// `maxWireVersion`: 17 and above is MongoDB 6.0+, whose stale-primary rule
    /// orders by electionId first (see [`crate::routing::election`]).
    #[serde(default)]
    pub max_wire_version: Option<i64>,
}

fn number(value: Option<&Bson>) -> Option<i64> {
    match value? {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        Bson::Double(v) if v.fract() == 0.0 => Some(*v as i64),
        _ => None,
    }
}

fn flag(doc: &Document, key: &str) -> bool {
    match doc.get(key) {
        Some(Bson::Boolean(b)) => *b,
        other => number(other).is_some_and(|n| n != 0),
    }
}

/// Parses a hello/isMaster reply. Unknown or mistyped fields are ignored (as drivers
/// do); only what routing needs is kept.
pub fn parse_hello(doc: &Document) -> Hello {
    let string = |key: &str| doc.get_str(key).ok().map(str::to_string);
    let last_write_ms = doc
        .get_document("lastWrite")
        .ok()
        .and_then(|lw| match lw.get("lastWriteDate") {
            Some(Bson::DateTime(at)) => Some(at.timestamp_millis()),
            _ => None,
        });
    let election_id = match doc.get("electionId") {
        Some(Bson::ObjectId(id)) => Some(id.to_hex()),
        _ => None,
    };
    let error = (!flag(doc, "ok")).then(|| {
        let message = string("errmsg").unwrap_or_else(|| "ok: 0".into());
        (message, number(doc.get("code")).unwrap_or(0) as i32)
    });
    Hello {
        ok: flag(doc, "ok"),
        writable_primary: flag(doc, "isWritablePrimary") || flag(doc, "ismaster"),
        secondary: flag(doc, "secondary"),
        arbiter: flag(doc, "arbiterOnly"),
        hidden: flag(doc, "hidden"),
        set_name: string("setName"),
        set_version: number(doc.get("setVersion")),
        election_id,
        hosts: doc
            .get_array("hosts")
            .map(|hosts| hosts.iter().filter_map(|h| h.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        primary: string("primary"),
        last_write_ms,
        error,
        max_wire_version: number(doc.get("maxWireVersion")),
    }
}

impl Hello {
    /// What this member's reply claims for the stale-primary rule, if it claims to be
    /// the primary.
    pub fn claim(&self) -> crate::routing::election::Claim {
        crate::routing::election::Claim {
            election_id: self.election_id.clone(),
            set_version: self.set_version,
            modern: self
                .max_wire_version
                .is_none_or(|v| v >= crate::routing::election::MODERN_WIRE),
        }
    }
}

#[cfg(test)]
mod tests;
