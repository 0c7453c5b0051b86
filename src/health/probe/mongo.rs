//! MongoDB probe: `hello` over OP_MSG on a connection kept between checks, with a
//! legacy `isMaster` fallback for servers that answer `hello` with CommandNotFound.
//!
//! Why OP_MSG by hand instead of the `mongodb` driver: the driver's `Client` runs its
//! own monitoring and server selection with their own timeouts and retries, which
//! would sit between the proxy and the member it must judge — a SIGSTOPped member
//! would be hidden behind `serverSelectionTimeoutMS`. A hand-written exchange has one
//! deadline over connect, send and receive, and the pure decoders in
//! [`crate::protocol::mongo`] are fuzzable and benchable.

use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, Document};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{connect, drop_on_error, phase, read_decoded, scram};
use crate::config::MongoProbeConfig;
use crate::health::probe::Endpoint;
use crate::health::{CheckError, Phase, Report, Role};
use crate::protocol::mongo::{decode_op_msg, encode_op_msg, parse_hello, Hello};
use crate::stream::Stream;
use crate::tls::ClientTls;

/// A hello reply larger than this is refused (real ones are around 1 KiB).
const MAX_REPLY: usize = 1 << 20;
/// CommandNotFound: the server predates `hello`.
const COMMAND_NOT_FOUND: i32 = 59;

/// The MongoDB probe: `hello` on a connection kept (and authenticated, with a user)
/// between checks.
#[derive(Debug, Default)]
pub struct MongoProbe {
    config: MongoProbeConfig,
    conn: Option<Stream>,
    /// TLS from the first byte, when the backend has it.
    tls: Option<ClientTls>,
    request_id: i32,
    /// Set once a server said it does not know `hello`.
    legacy: bool,
}

impl MongoProbe {
    /// Drops the kept connection; the next check connects (and logs in) afresh.
    pub fn forget_connection(&mut self) {
        self.conn = None;
    }

    /// Builds the probe from its config and the backend's TLS, if any; it connects at the
    /// first check.
    pub fn new(config: &MongoProbeConfig, tls: Option<ClientTls>) -> Self {
        MongoProbe {
            config: config.clone(),
            tls,
            ..MongoProbe::default()
        }
    }

    /// Checks `addr` once under `deadline`; a failure drops the kept connection, so the
    /// next check connects afresh.
    pub async fn check(&mut self, to: Endpoint, deadline: Instant) -> Result<Report, CheckError> {
        let result = self.check_inner(to, deadline).await;
        drop_on_error(&mut self.conn, result)
    }

    async fn check_inner(&mut self, to: Endpoint, deadline: Instant) -> Result<Report, CheckError> {
        if self.conn.is_none() {
            self.conn = Some(connect(to, self.tls.as_ref(), deadline).await?);
            if self.config.user.is_some() {
                self.authenticate(deadline).await?;
            }
        }
        let mut hello = self.exchange(deadline).await?;
        if hello.error.as_ref().is_some_and(|(_, code)| *code == COMMAND_NOT_FOUND) && !self.legacy {
            self.legacy = true;
            hello = self.exchange(deadline).await?;
        }
        if let Some((message, code)) = &hello.error {
            return Err(CheckError::Response(format!(
                "hello refused: {} ({code})",
                crate::logs::peer(message)
            )));
        }
        let role = if hello.writable_primary {
            Role::Primary
        } else if hello.secondary {
            Role::Secondary
        } else if hello.arbiter {
            Role::Arbiter
        } else {
            Role::Unknown
        };
        Ok(Report {
            role,
            mongo: Some(hello),
            ..Report::default()
        })
    }

    /// One `hello` (or `isMaster`) on the kept connection.
    async fn exchange(&mut self, deadline: Instant) -> Result<Hello, CheckError> {
        let command = if self.legacy {
            doc! { "isMaster": 1, "$db": "admin" }
        } else {
            doc! { "hello": 1, "$db": "admin" }
        };
        Ok(parse_hello(&self.command(command, deadline).await?))
    }

    /// One command and its reply body.
    async fn command(&mut self, command: Document, deadline: Instant) -> Result<Document, CheckError> {
        self.request_id = self.request_id.wrapping_add(1);
        let request = encode_op_msg(self.request_id, &command);
        let stream = self.conn.as_mut().expect("connected before the exchange");
        phase(deadline, Phase::Requesting, async {
            stream
                .write_all(&request)
                .await
                .map_err(|e| CheckError::Protocol(format!("sending a command: {e}")))
        })
        .await?;
        phase(deadline, Phase::Reading, read_reply(stream)).await
    }

    /// SCRAM-SHA-256 with `saslStart`/`saslContinue`; the server must prove it knows
    /// the password too. A refusal is an L7 auth failure.
    async fn authenticate(&mut self, deadline: Instant) -> Result<(), CheckError> {
        let (Some(user), Some(password)) = (self.config.user.clone(), self.config.password.clone()) else {
            return Ok(());
        };
        let db = self.config.auth_source.clone();
        let first = scram::client_first(&user, &scram::nonce());
        let start = doc! {
            "saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": binary(&first.message),
            "autoAuthorize": 1, "options": { "skipEmptyExchange": true }, "$db": &db,
        };
        let reply = sasl_reply(self.command(start, deadline).await?)?;
        // PBKDF2 is CPU work: off the async workers, and under the check's deadline.
        let (server_first, secret, client_first) =
            (reply.payload.clone(), password.expose().to_string(), first.clone());
        let derive = tokio::task::spawn_blocking(move || scram::client_final(&client_first, &server_first, &secret));
        let last = phase(deadline, Phase::Requesting, async {
            derive
                .await
                .map_err(|e| CheckError::Auth(format!("key derivation failed: {e}")))?
                .map_err(CheckError::Auth)
        })
        .await?;
        let next = doc! { "saslContinue": 1, "conversationId": reply.conversation.clone(), "payload": binary(&last.message), "$db": &db };
        let mut reply = sasl_reply(self.command(next, deadline).await?)?;
        scram::verify_server_final(&last, &reply.payload).map_err(CheckError::Auth)?;
        if !reply.done {
            let empty = doc! { "saslContinue": 1, "conversationId": reply.conversation.clone(), "payload": binary(""), "$db": &db };
            reply = sasl_reply(self.command(empty, deadline).await?)?;
            if !reply.done {
                return Err(CheckError::Auth(
                    "the server did not finish the SASL conversation".into(),
                ));
            }
        }
        Ok(())
    }
}

fn binary(text: &str) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes: text.as_bytes().to_vec(),
    }
}

struct SaslReply {
    conversation: Bson,
    payload: String,
    done: bool,
}

fn sasl_reply(reply: Document) -> Result<SaslReply, CheckError> {
    let hello = parse_hello(&reply);
    if let Some((message, code)) = hello.error {
        return Err(CheckError::Auth(format!("{} ({code})", crate::logs::peer(&message))));
    }
    let payload = match reply.get("payload") {
        Some(Bson::Binary(b)) => String::from_utf8_lossy(&b.bytes).into_owned(),
        _ => return Err(CheckError::Auth("SASL reply without a payload".into())),
    };
    Ok(SaslReply {
        conversation: reply.get("conversationId").cloned().unwrap_or(Bson::Int32(1)),
        payload,
        done: reply.get_bool("done").unwrap_or(false),
    })
}

async fn read_reply(stream: &mut Stream) -> Result<bson::Document, CheckError> {
    let mut buf = Vec::with_capacity(2048);
    read_decoded(stream, &mut buf, MAX_REPLY, "the hello reply", decode_op_msg).await
}
