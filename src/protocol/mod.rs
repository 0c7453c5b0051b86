//! Pure wire decoders: bytes in, [`Decode`] out. No I/O and no allocation for the
//! "need more bytes" case, so fuzzers and benches can call them directly.

pub mod http;
pub mod mongo;
pub mod mysql;
pub mod proxy_header;
pub mod resp;

/// The result of decoding a prefix of a byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decode<T> {
    /// Not enough bytes yet; read more and call again with the whole buffer.
    Incomplete,
    /// A complete value.
    Done(T),
    /// The bytes can never become valid; the reason is for logs.
    Invalid(&'static str),
}
