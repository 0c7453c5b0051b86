//! What a `mongo`-mode session watches in the server's replies (pure): a reply that
//! says the member is no longer the primary.
//!
//! ```text
//! server bytes ──▶ message boundaries (4-byte length) ──▶ a whole message in one
//!                  read, at most WATCHED bytes: its body's top-level fields
//!   ok: 0 with code NotWritablePrimary, NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary,
//!         PrimarySteppedDown, InterruptedDueToReplStateChange, InterruptedAtShutdown,
//!         ShutdownInProgress                                         → not primary
//!   ok: 1 with isWritablePrimary / ismaster false (a hello)          → not primary
//! ```
//!
//! Such a reply is never forwarded: the session ends instead, so the driver sees a
//! network error on the first attempt of the operation (which it retries, on a new
//! connection that the proxy holds until the new primary is routed) rather than a
//! "not primary" error (which makes it wait for its monitor and retry on the same
//! pooled connection, which the proxy fences meanwhile: an error the application
//! sees). Replies are OP_MSG (its body, section kind 0) or OP_REPLY (the first
//! document; legacy handshakes). A reply split across reads, or larger than
//! [`WATCHED`], passes unseen: error replies are a few hundred bytes.

use bson::raw::RawBsonRef;
use bson::RawDocument;

/// The largest reply looked into.
pub const WATCHED: usize = 16 * 1024;
/// Error codes that mean "this member is not (or no longer) the primary".
const NOT_PRIMARY: [i32; 7] = [10107, 13435, 13436, 189, 11602, 11600, 91];
const OP_REPLY: i32 = 1;
const OP_MSG: i32 = super::OP_MSG;

/// One session's messages: the server's replies watched, and how many of the
/// client's requests still wait for theirs.
#[derive(Debug, Clone, Default)]
pub struct Replies {
    down: Frames,
    up: Frames,
    /// Requests sent whose reply has not ended yet.
    in_flight: usize,
}

/// Message boundaries in one direction.
#[derive(Debug, Clone, Default)]
struct Frames {
    /// Bytes of a message in flight still to come.
    remaining: usize,
    /// A length prefix split across reads.
    header: [u8; 4],
    have: usize,
    /// Whether the tracker gave up (a length out of range).
    lost: bool,
}

/// OP_MSG's `moreToCome` flag: no reply follows this request (or another reply
/// follows this one).
const MORE_TO_COME: u8 = 0x02;

impl Replies {
    /// Follows `chunk` (bytes the server sent, in order); whether it holds a whole
    /// reply saying the member is not the primary.
    pub fn not_primary(&mut self, chunk: &[u8]) -> bool {
        let mut found = false;
        let mut ended = 0;
        self.down.feed(
            chunk,
            |message| {
                found |= says_not_primary(message);
            },
            // Flags split across reads count as not ended: the safe side (a fence then
            // waits out its grace rather than cut a reply stream).
            |flags| {
                if matches!(flags, Some(f) if f & MORE_TO_COME == 0) {
                    ended += 1;
                }
            },
        );
        self.in_flight = self.in_flight.saturating_sub(ended);
        found
    }

    /// Follows `chunk` (bytes the client sent): its requests.
    pub fn client(&mut self, chunk: &[u8]) {
        let mut sent = 0;
        self.up.feed(
            chunk,
            |_| {},
            |flags| {
                if !matches!(flags, Some(f) if f & MORE_TO_COME != 0) {
                    sent += 1;
                }
            },
        );
        self.in_flight += sent;
    }

    /// No request waits for its reply and no message is under way either way: closing
    /// the session here cuts no operation short.
    pub fn idle(&self) -> bool {
        self.in_flight == 0 && self.up.between() && self.down.between()
    }
}

impl Frames {
    fn between(&self) -> bool {
        !self.lost && self.remaining == 0 && self.have == 0
    }

    /// Walks `chunk`: `whole` sees each message that lies wholly in it (at most
    /// [`WATCHED`] bytes); `started` each message's first flag byte, when the chunk
    /// holds it (OP_MSG's flagBits; `None` for other opcodes or a split header).
    fn feed(&mut self, mut chunk: &[u8], mut whole: impl FnMut(&[u8]), mut started: impl FnMut(Option<u8>)) {
        while !chunk.is_empty() && !self.lost {
            if self.remaining > 0 {
                let skip = self.remaining.min(chunk.len());
                self.remaining -= skip;
                chunk = &chunk[skip..];
                continue;
            }
            // At a boundary: the length, maybe split.
            let start = chunk;
            let take = (4 - self.have).min(chunk.len());
            self.header[self.have..self.have + take].copy_from_slice(&chunk[..take]);
            self.have += take;
            chunk = &chunk[take..];
            if self.have < 4 {
                break;
            }
            let whole_here = take == 4;
            self.have = 0;
            let length = i32::from_le_bytes(self.header);
            let Some(length) = usize::try_from(length)
                .ok()
                .filter(|&l| (16..=super::MAX_MESSAGE).contains(&l))
            else {
                self.lost = true;
                break;
            };
            let flags = (whole_here && start.len() >= 17 && start[12..16] == OP_MSG.to_le_bytes()).then(|| start[16]);
            started(flags);
            if whole_here && length <= WATCHED && start.len() >= length {
                whole(&start[..length]);
                chunk = &start[length..];
            } else {
                self.remaining = length - 4;
            }
        }
    }
}

/// Whether one whole reply message says its member is not the primary.
fn says_not_primary(message: &[u8]) -> bool {
    let op_code = i32::from_le_bytes([message[12], message[13], message[14], message[15]]);
    let body = match op_code {
        // flagBits, then the first section; kind 0 is the body.
        OP_MSG if message.get(20) == Some(&0) => message.get(21..),
        // responseFlags, cursorID, startingFrom, numberReturned, then documents.
        OP_REPLY => message.get(36..),
        _ => None,
    };
    let Some(body) = body else {
        return false;
    };
    let Some(size) = body.get(..4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])) else {
        return false;
    };
    let Some(doc) = usize::try_from(size)
        .ok()
        .and_then(|s| body.get(..s))
        .and_then(|b| RawDocument::from_bytes(b).ok())
    else {
        return false;
    };
    let number = |key: &str| match doc.get(key).ok().flatten() {
        Some(RawBsonRef::Double(v)) => Some(v),
        Some(RawBsonRef::Int32(v)) => Some(f64::from(v)),
        Some(RawBsonRef::Int64(v)) => Some(v as f64),
        Some(RawBsonRef::Boolean(v)) => Some(if v { 1.0 } else { 0.0 }),
        _ => None,
    };
    match number("ok") {
        Some(0.0) => number("code").is_some_and(|code| NOT_PRIMARY.iter().any(|&c| f64::from(c) == code)),
        Some(_) => ["isWritablePrimary", "ismaster"]
            .iter()
            .any(|key| matches!(doc.get(key).ok().flatten(), Some(RawBsonRef::Boolean(false)))),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn op_msg(body: bson::Document) -> Vec<u8> {
        super::super::encode_op_msg(7, &body)
    }

    fn op_reply(body: bson::Document) -> Vec<u8> {
        let mut docs = Vec::new();
        body.to_writer(&mut docs).unwrap();
        let length = (36 + docs.len()) as i32;
        let mut out = length.to_le_bytes().to_vec();
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&OP_REPLY.to_le_bytes());
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&1i32.to_le_bytes());
        out.extend_from_slice(&docs);
        out
    }

    #[test]
    fn not_primary_errors_and_hellos_are_seen() {
        let cases = [
            (
                doc! { "ok": 0.0, "code": 10107, "codeName": "NotWritablePrimary" },
                true,
            ),
            (doc! { "ok": 0, "code": 13435 }, true),
            (doc! { "ok": 0.0, "code": 11000, "codeName": "DuplicateKey" }, false),
            (doc! { "ok": 1.0, "n": 1 }, false),
            (doc! { "ok": 1.0, "isWritablePrimary": false, "secondary": true }, true),
            (doc! { "ok": 1.0, "isWritablePrimary": true }, false),
            // A write concern error is about replication, not about this member.
            (
                doc! { "ok": 1.0, "n": 1, "writeConcernError": { "code": 10107 } },
                false,
            ),
        ];
        for (body, expected) in cases {
            let mut replies = Replies::default();
            assert_eq!(replies.not_primary(&op_msg(body.clone())), expected, "{body}");
        }
        let mut legacy = Replies::default();
        assert!(legacy.not_primary(&op_reply(doc! { "ismaster": false, "ok": 1.0 })));
    }

    #[test]
    fn boundaries_are_followed_across_reads() {
        let big = op_msg(doc! { "ok": 1.0, "blob": "x".repeat(WATCHED) });
        let error = op_msg(doc! { "ok": 0.0, "code": 10107 });
        let fine = op_msg(doc! { "ok": 1.0, "n": 1 });
        // Several replies in one read; the error is found behind them.
        let mut replies = Replies::default();
        let mut bytes = fine.clone();
        bytes.extend_from_slice(&big);
        bytes.extend_from_slice(&error);
        assert!(replies.not_primary(&bytes));
        // A large reply in pieces is skipped whole, even if it looks like an error inside.
        let mut replies = Replies::default();
        for piece in big.chunks(1000) {
            assert!(!replies.not_primary(piece));
        }
        assert!(replies.not_primary(&error), "the boundary after it is kept");
        // A length split across reads.
        let mut replies = Replies::default();
        assert!(!replies.not_primary(&fine[..2]));
        assert!(!replies.not_primary(&fine[2..]));
        assert!(replies.not_primary(&error));
        // Requests wait for their replies: idle only between them.
        let mut replies = Replies::default();
        assert!(replies.idle());
        let request = op_msg(doc! { "insert": "t", "documents": [{ "_id": 1 }] });
        replies.client(&request);
        assert!(!replies.idle());
        replies.client(&request[..10]);
        assert!(!replies.not_primary(&fine));
        assert!(!replies.idle(), "one more request under way");
        replies.client(&request[10..]);
        assert!(!replies.not_primary(&fine[..30]));
        assert!(!replies.idle(), "its reply under way");
        assert!(!replies.not_primary(&fine[30..]));
        assert!(replies.idle());
        // A request with moreToCome has no reply.
        let mut fire_and_forget = request.clone();
        fire_and_forget[16] |= MORE_TO_COME;
        replies.client(&fire_and_forget);
        assert!(replies.idle());
        // Garbage stops the watch; it never panics.
        let mut replies = Replies::default();
        assert!(!replies.not_primary(&[0xFF; 64]));
        assert!(!replies.not_primary(&error));
        assert!(!replies.idle(), "lost is never idle");
    }
}
