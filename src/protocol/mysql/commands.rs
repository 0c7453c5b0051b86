//! Where a MySQL session stands in its command phase, followed from the bytes both ways
//! without copying them (pure; the `mysql` listener mode feeds it from the byte pipe).
//!
//! A session is at an **idle point** when every command the client sent has had its
//! whole response and the server's last status flags said "not in a transaction".
//! Closing the connection there costs the client nothing it had asked for: its next
//! use meets a closed connection (a pool's pre-ping reconnects), not a failed statement.
//!
//! ```text
//! client bytes ──Framer──▶ logical packets ──▶ a command: its expected response pushed
//! server bytes ──Framer──▶ logical packets ──▶ the oldest command's response advances
//!                                             (OK/EOF status flags: in transaction?)
//! ```
//!
//! The framer keeps only a packet's header and the first [`PREFIX`] bytes of its
//! payload (a payload of 16 MiB − 1 continues in the next packet: one logical packet).
//! Responses, by command:
//! - `COM_QUERY`, `COM_STMT_EXECUTE`: OK, ERR, a LOCAL INFILE request (the client's
//!   file, ended by an empty packet, then OK or ERR), or a result set: column count,
//!   column definitions, EOF (unless `CLIENT_DEPRECATE_EOF`), rows, then EOF or an OK
//!   with a 0xFE header (with MariaDB's `MARIADB_CLIENT_CACHE_METADATA`, a column
//!   count followed by a 0 byte skips the definitions and their EOF: a prepared
//!   statement executed again); `SERVER_MORE_RESULTS_EXISTS` in the final status means
//!   another result follows; `SERVER_STATUS_CURSOR_EXISTS` ends it after the columns.
//! - `COM_STMT_PREPARE`: OK with the counts of parameters and columns, their
//!   definitions (each list with its EOF unless deprecated), or ERR.
//! - `COM_STMT_FETCH`, `COM_FIELD_LIST`: packets until EOF (or 0xFE OK) or ERR.
//! - `COM_CHANGE_USER`: an authentication exchange, until OK or ERR.
//! - `COM_STMT_CLOSE`, `COM_STMT_SEND_LONG_DATA`, `COM_QUIT`: no response.
//! - `COM_BINLOG_DUMP(_GTID)`: an endless stream: never idle.
//! - every other known command: one packet.
//!
//! A `COM_PING` at an idle point is a pool checking a connection before use: a drain
//! may close the session before its answer ([`Commands::pinging_at_idle`]).
//!
//! Anything this cannot follow (an unknown command, a packet that fits no expected
//! shape, too many pipelined commands, compression) turns the tracker [`lost`]: such a
//! session is never judged idle, so it is closed only at a drain's deadline. A wrong
//! "busy" costs a later close; a wrong "idle" would cut a response, so every doubt
//! falls on the busy side.
//!
//! [`lost`]: Commands::lost

use std::collections::VecDeque;

use std::time::Duration;

use tokio::time::Instant;

use self::frame::{lenenc, Framer, Logical, MAX_PAYLOAD};

#[path = "commands_frame.rs"]
mod frame;

/// Payload bytes kept per packet: enough for an OK packet's status flags (two
/// length-encoded integers of at most 9 bytes each, then 2 bytes) and a prepare OK.
pub const PREFIX: usize = 24;
/// Commands sent ahead of their responses that are followed; more turn the tracker lost.
const MAX_PIPELINED: usize = 64;

/// `CLIENT_COMPRESS`: packets are wrapped in compressed frames (not followed).
pub const CLIENT_COMPRESS: u32 = 0x0020;
/// `CLIENT_DEPRECATE_EOF`: no EOF after column definitions; an OK ends the rows.
pub const CLIENT_DEPRECATE_EOF: u32 = 0x0100_0000;
/// `CLIENT_OPTIONAL_RESULTSET_METADATA` (MySQL 8): column definitions may be left out
/// (not followed).
pub const CLIENT_OPTIONAL_RESULTSET_METADATA: u32 = 0x0200_0000;

/// How long a session sits at an idle point before a drain closes it there: a
/// per-request client between its login and first statement, or between two
/// statements, is about to speak again; a pooled connection at rest is not.
pub const DRAIN_QUIET: Duration = Duration::from_millis(200);

const SERVER_STATUS_IN_TRANS: u16 = 0x0001;
const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
const SERVER_STATUS_CURSOR_EXISTS: u16 = 0x0040;

/// The command phase of one session, as far as idle points go.
#[derive(Debug, Clone)]
pub struct Commands {
    deprecate_eof: bool,
    /// MariaDB's `MARIADB_CLIENT_CACHE_METADATA`: a column count carries a "metadata
    /// follows" byte, and a 0 there means no column definitions (nor their EOF).
    cache_metadata: bool,
    up: Framer,
    down: Framer,
    /// The responses still due, oldest first.
    due: VecDeque<Response>,
    in_transaction: bool,
    lost: bool,
    /// The bytes moved and the time when [`Commands::quiet_for`] last saw them change.
    quiet: Option<(u64, Instant)>,
    /// The last command was a `COM_PING` sent at an idle point.
    idle_ping: bool,
    /// ERR replies saying the node cannot serve ([`REFUSALS`]) since the last
    /// [`Commands::take_refusals`].
    refusals: u32,
}

/// The error codes with which a server says it cannot serve the statement as a
/// writable, ready node, rather than that the statement was wrong: 1047 (Galera: "WSREP
/// has not yet prepared node for application use"), 1290 (`--read-only`), 1836
/// (read-only mode), 1792 (a read-only transaction). The proxy then asks for a check
/// at once instead of waiting for the next one.
pub const REFUSALS: [u16; 4] = [1047, 1290, 1836, 1792];

/// A response being waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Response {
    /// Its first packet: OK, ERR, LOCAL INFILE or a column count.
    Result,
    /// Column definitions still to come, then the rows.
    Columns(u64),
    /// The EOF after the column definitions.
    ColumnsEof,
    /// Rows (or definitions) until an EOF, a 0xFE OK or an ERR.
    Rows,
    /// The client's LOCAL INFILE data, until its empty packet; then the result.
    Infile,
    /// `COM_STMT_PREPARE`'s OK or ERR.
    Prepare,
    /// Definitions of a prepared statement: parameters, then columns.
    Definitions { params: u64, columns: u64 },
    /// The EOF after a list of definitions; then `columns` more.
    DefinitionsEof { columns: u64 },
    /// An authentication exchange, until OK or ERR.
    Auth,
    /// Any one packet.
    One,
    /// A stream without end.
    Endless,
}

impl Commands {
    /// A tracker for a session whose login settled `capabilities` (the client's,
    /// as the server accepted them) and MariaDB's extended ones.
    pub fn new(capabilities: u32, mariadb_extended: u32) -> Self {
        const MARIADB_CLIENT_CACHE_METADATA: u32 = 1 << 4;
        let unfollowable = CLIENT_COMPRESS | CLIENT_OPTIONAL_RESULTSET_METADATA;
        Commands {
            deprecate_eof: capabilities & CLIENT_DEPRECATE_EOF != 0,
            cache_metadata: mariadb_extended & MARIADB_CLIENT_CACHE_METADATA != 0,
            up: Framer::default(),
            down: Framer::default(),
            due: VecDeque::new(),
            in_transaction: false,
            lost: capabilities & unfollowable != 0,
            quiet: None,
            idle_ping: false,
            refusals: 0,
        }
    }

    /// At an idle point: nothing due, not in a transaction, and followed all along.
    pub fn idle(&self) -> bool {
        !self.lost && self.due.is_empty() && !self.in_transaction && self.up.between() && self.down.between()
    }

    /// Whether the only command in flight is a `COM_PING` sent at an idle point: a
    /// pool checking the connection before it hands it out. A drain closes the session
    /// there, before the answer: the pool sees the check fail and connects anew, and
    /// no statement of the client ever meets the close.
    pub fn pinging_at_idle(&self) -> bool {
        !self.lost && self.idle_ping && self.due.len() == 1 && self.up.between()
    }

    /// How long the session has sat still: `activity` (its bytes moved so far)
    /// unchanged since the first call that saw this count (zero at that call).
    pub fn quiet_for(&mut self, activity: u64, now: Instant) -> Duration {
        match self.quiet {
            Some((seen, since)) if seen == activity => now.saturating_duration_since(since),
            _ => {
                self.quiet = Some((activity, now));
                Duration::ZERO
            }
        }
    }

    /// Whether the tracker gave up on this session.
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// Bytes the client sent.
    pub fn client(&mut self, bytes: &[u8]) {
        if self.lost {
            return;
        }
        let mut up = std::mem::take(&mut self.up);
        up.feed(bytes, |packet| self.client_packet(&packet));
        self.up = up;
    }

    /// How many replies said the node cannot serve ([`REFUSALS`]) since the last
    /// call; resets the count.
    pub fn take_refusals(&mut self) -> u32 {
        std::mem::take(&mut self.refusals)
    }

    /// Bytes the server sent.
    pub fn server(&mut self, bytes: &[u8]) {
        if self.lost {
            return;
        }
        let mut down = std::mem::take(&mut self.down);
        down.feed(bytes, |packet| {
            if !self.lost {
                self.server_packet(&packet);
            }
        });
        self.down = down;
    }

    fn client_packet(&mut self, packet: &Logical) {
        match self.due.front() {
            Some(Response::Infile) => {
                if packet.len == 0 {
                    self.due[0] = Response::Result;
                }
                return;
            }
            // The client's answers in an authentication exchange.
            Some(Response::Auth) => return,
            _ => {}
        }
        let Some(&command) = packet.prefix().first() else {
            return self.lose();
        };
        let response = match command {
            // COM_QUIT, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE
            0x01 | 0x18 | 0x19 => return,
            // COM_QUERY, COM_PROCESS_INFO
            0x03 | 0x0A => Response::Result,
            // COM_STMT_EXECUTE, MariaDB's COM_STMT_BULK_EXECUTE
            0x17 | 0xFA => Response::Result,
            0x16 => Response::Prepare,
            // COM_FIELD_LIST, COM_STMT_FETCH
            0x04 | 0x1C => Response::Rows,
            0x11 => Response::Auth,
            // COM_BINLOG_DUMP, COM_BINLOG_DUMP_GTID
            0x12 | 0x1E => Response::Endless,
            // init db, create/drop db, refresh, shutdown, statistics, process kill,
            // debug, ping, register slave, stmt reset, set option, reset connection
            0x02 | 0x05 | 0x06 | 0x07 | 0x08 | 0x09 | 0x0C | 0x0D | 0x0E | 0x15 | 0x1A | 0x1B | 0x1F => Response::One,
            _ => return self.lose(),
        };
        // COM_PING at an idle point: a pool asking whether the connection is usable.
        self.idle_ping = command == 0x0E && self.due.is_empty() && !self.in_transaction;
        if self.due.len() >= MAX_PIPELINED {
            return self.lose();
        }
        self.due.push_back(response);
    }

    fn server_packet(&mut self, packet: &Logical) {
        let Some(&expected) = self.due.front() else {
            // Nothing was asked: a server's unsolicited packet (an ERR before it
            // closes, say) has no place in the command phase.
            return self.lose();
        };
        let p = packet.prefix();
        let first = p.first().copied();
        if first == Some(0xFF) && p.len() >= 3 && REFUSALS.contains(&u16::from_le_bytes([p[1], p[2]])) {
            self.refusals = self.refusals.saturating_add(1);
        }
        let next = match expected {
            Response::One => {
                if let Some(status) = packet.ok_status().or_else(|| packet.eof_status()) {
                    self.in_transaction = status & SERVER_STATUS_IN_TRANS != 0;
                }
                None
            }
            Response::Endless => Some(Response::Endless),
            Response::Auth => match first {
                Some(0x00) => {
                    self.status_of_ok(packet);
                    None
                }
                Some(0xFF) => None,
                _ => Some(Response::Auth),
            },
            Response::Result => match first {
                Some(0x00) => self.status_of_ok(packet),
                Some(0xFF) => None,
                Some(0xFB) => Some(Response::Infile),
                _ => match lenenc(p) {
                    Some((0, _)) | None => return self.lose(),
                    // MariaDB's "metadata follows" flag, 0: the rows come at once.
                    Some((_, used)) if self.cache_metadata && p.get(used) == Some(&0) => Some(Response::Rows),
                    Some((columns, _)) => Some(Response::Columns(columns)),
                },
            },
            Response::Columns(n) => {
                if first == Some(0xFF) {
                    None
                } else if n > 1 {
                    Some(Response::Columns(n - 1))
                } else if self.deprecate_eof {
                    Some(Response::Rows)
                } else {
                    Some(Response::ColumnsEof)
                }
            }
            Response::ColumnsEof => match packet.eof_status() {
                Some(status) if status & SERVER_STATUS_CURSOR_EXISTS != 0 => self.final_status(status),
                Some(_) => Some(Response::Rows),
                None => return self.lose(),
            },
            Response::Rows => match first {
                Some(0xFF) => None,
                Some(0xFE) if !self.deprecate_eof && packet.len < 9 => match packet.eof_status() {
                    Some(status) => self.final_status(status),
                    None => return self.lose(),
                },
                Some(0xFE) if self.deprecate_eof && packet.len < u64::from(MAX_PAYLOAD) => match packet.ok_status() {
                    Some(status) => self.final_status(status),
                    None => return self.lose(),
                },
                _ => Some(Response::Rows),
            },
            // The server speaks while the client should: not a shape this follows.
            Response::Infile => return self.lose(),
            Response::Prepare => match first {
                Some(0x00) if p.len() >= 9 => {
                    let columns = u64::from(u16::from_le_bytes([p[5], p[6]]));
                    let params = u64::from(u16::from_le_bytes([p[7], p[8]]));
                    self.definitions(params, columns)
                }
                Some(0xFF) => None,
                _ => return self.lose(),
            },
            Response::Definitions { params, columns } => {
                // One definition more; each list ends with an EOF unless deprecated.
                let (params, columns, list_ended) = if params > 0 {
                    (params - 1, columns, params == 1)
                } else {
                    (0, columns.saturating_sub(1), columns == 1)
                };
                if list_ended && !self.deprecate_eof {
                    Some(Response::DefinitionsEof { columns })
                } else {
                    self.definitions(params, columns)
                }
            }
            Response::DefinitionsEof { columns } => match packet.eof_status() {
                Some(_) => self.definitions(0, columns),
                None => return self.lose(),
            },
        };
        match next {
            Some(next) => self.due[0] = next,
            None => {
                self.due.pop_front();
            }
        }
    }

    /// What follows a prepare OK or one definition: more definitions, or the end.
    fn definitions(&self, params: u64, columns: u64) -> Option<Response> {
        (params > 0 || columns > 0).then_some(Response::Definitions { params, columns })
    }

    /// An OK that ends a result: its status, and whether another result follows.
    fn status_of_ok(&mut self, packet: &Logical) -> Option<Response> {
        match packet.ok_status() {
            Some(status) => self.final_status(status),
            None => {
                self.lose();
                None
            }
        }
    }

    /// A result's final status flags: the transaction state, and another result if
    /// `SERVER_MORE_RESULTS_EXISTS`.
    fn final_status(&mut self, status: u16) -> Option<Response> {
        self.in_transaction = status & SERVER_STATUS_IN_TRANS != 0;
        (status & SERVER_MORE_RESULTS_EXISTS != 0).then_some(Response::Result)
    }

    fn lose(&mut self) {
        self.lost = true;
        self.due.clear();
    }
}

#[cfg(test)]
#[path = "commands_tests.rs"]
mod tests;
