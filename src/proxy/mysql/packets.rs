//! Reading and refusing packets during the connection phase.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::LoginError;
use crate::protocol::mysql::{self as wire, Packet};
use crate::protocol::Decode;

/// A cancel-safe packet reader: bytes read stay in `buf` if the read is dropped.
#[derive(Default)]
pub(super) struct Reader {
    pub(super) buf: Vec<u8>,
}

impl Reader {
    pub(super) async fn next(&mut self, stream: &mut (impl AsyncRead + Unpin)) -> Result<Option<Packet>, LoginError> {
        loop {
            match wire::decode(&self.buf) {
                Decode::Done((packet, used)) => {
                    self.buf.drain(..used);
                    return Ok(Some(packet));
                }
                Decode::Invalid(what) => return Err(LoginError::Protocol(what)),
                Decode::Incomplete => {}
            }
            if stream.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

/// Reads exactly one packet and not a byte more: what follows an SSLRequest is the
/// client's TLS handshake, which must stay in the socket for rustls.
pub(super) async fn read_exact_packet(stream: &mut (impl AsyncRead + Unpin)) -> Result<Packet, LoginError> {
    let mut head = [0u8; wire::HEADER];
    stream.read_exact(&mut head).await?;
    let (len, seq) = wire::header(head);
    if len > wire::MAX_LOGIN_PACKET {
        return Err(LoginError::Protocol("login packet too large"));
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    Ok(Packet { seq, payload })
}

/// Sends an ERR packet (best effort: the client may be gone).
pub(super) async fn refuse(
    stream: &mut (impl AsyncWrite + Unpin + ?Sized),
    seq: u8,
    code: u16,
    state: &str,
    message: &str,
) {
    let packet = Packet {
        seq,
        payload: wire::err_payload(code, state, message),
    };
    let _ = stream.write_all(&packet.encode()).await;
    let _ = stream.shutdown().await;
}
