//! Packet boundaries in one direction of a MySQL session, and the few fields of a
//! packet the command tracker reads.

use super::PREFIX;

/// The longest payload one packet carries; a packet this long continues in the next.
pub(super) const MAX_PAYLOAD: u32 = 0x00FF_FFFF;

/// A whole logical packet as the framer saw it: its length and first payload bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Logical {
    pub(super) len: u64,
    prefix: [u8; PREFIX],
    kept: u8,
}

impl Logical {
    pub(super) fn prefix(&self) -> &[u8] {
        &self.prefix[..usize::from(self.kept)]
    }

    /// An OK packet's status flags (0x00, or 0xFE ending rows): header, affected rows,
    /// last insert id, status.
    pub(super) fn ok_status(&self) -> Option<u16> {
        let p = self.prefix();
        if !matches!(p.first(), Some(0x00 | 0xFE)) {
            return None;
        }
        let (_, a) = lenenc(&p[1..])?;
        let (_, b) = lenenc(&p[1 + a..])?;
        let at = 1 + a + b;
        Some(u16::from_le_bytes([*p.get(at)?, *p.get(at + 1)?]))
    }

    /// An EOF packet's status flags: 0xFE, warnings, status (payload under 9 bytes).
    pub(super) fn eof_status(&self) -> Option<u16> {
        let p = self.prefix();
        (p.first() == Some(&0xFE) && self.len < 9 && p.len() >= 5).then(|| u16::from_le_bytes([p[3], p[4]]))
    }
}

/// A length-encoded integer at the start of `p`: its value and its size in bytes.
pub(super) fn lenenc(p: &[u8]) -> Option<(u64, usize)> {
    let size = match *p.first()? {
        0..=0xFA => return Some((u64::from(p[0]), 1)),
        0xFC => 3,
        0xFD => 4,
        0xFE => 9,
        _ => return None,
    };
    let bytes = p.get(1..size)?;
    let value = bytes.iter().rev().fold(0u64, |v, &b| (v << 8) | u64::from(b));
    Some((value, size))
}

/// Follows packet boundaries in one direction's bytes.
#[derive(Debug, Clone, Default)]
pub(super) struct Framer {
    header: [u8; 4],
    /// Header bytes seen of the packet being read (4: in its payload).
    have: u8,
    /// Payload bytes still to come of the packet being read.
    remaining: u32,
    /// The logical packet being assembled (set from its first packet).
    current: Option<Logical>,
    /// The packet being read is 16 MiB − 1 long: the logical packet goes on.
    continues: bool,
}

impl Framer {
    /// Between packets: no partial header or payload pending.
    pub(super) fn between(&self) -> bool {
        self.have == 0 && self.current.is_none()
    }

    pub(super) fn feed(&mut self, mut bytes: &[u8], mut out: impl FnMut(Logical)) {
        while !bytes.is_empty() {
            if self.have < 4 {
                self.header[usize::from(self.have)] = bytes[0];
                self.have += 1;
                bytes = &bytes[1..];
                if self.have == 4 {
                    self.start_packet(&mut out);
                }
                continue;
            }
            let take = bytes.len().min(self.remaining as usize);
            // The first physical packet of a long logical one fills the prefix.
            if let Some(logical) = &mut self.current {
                let kept = usize::from(logical.kept);
                let room = (PREFIX - kept).min(take);
                logical.prefix[kept..kept + room].copy_from_slice(&bytes[..room]);
                logical.kept += room as u8;
            }
            self.remaining -= take as u32;
            bytes = &bytes[take..];
            if self.remaining == 0 {
                self.end_packet(&mut out);
            }
        }
    }

    fn start_packet(&mut self, out: &mut impl FnMut(Logical)) {
        let len = u32::from_le_bytes([self.header[0], self.header[1], self.header[2], 0]);
        self.remaining = len;
        let logical = self.current.get_or_insert(Logical {
            len: 0,
            prefix: [0; PREFIX],
            kept: 0,
        });
        logical.len += u64::from(len);
        self.continues = len == MAX_PAYLOAD;
        if len == 0 {
            self.end_packet(out);
        }
    }

    fn end_packet(&mut self, out: &mut impl FnMut(Logical)) {
        self.have = 0;
        if !self.continues {
            if let Some(logical) = self.current.take() {
                out(logical);
            }
        }
    }
}
