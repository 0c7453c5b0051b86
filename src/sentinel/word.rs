//! Which master the Sentinels name, pure: from each Sentinel's latest answer to the
//! newest word, and what a published event means for a pool.
//!
//! Each Sentinel answers two pipelined commands:
//!
//! ```text
//! SENTINEL get-master-addr-by-name NAME   the address clients should use now
//! SENTINEL master NAME                    its config-epoch and the address it recorded
//! ```
//!
//! During a failover the leading Sentinel names the promoted replica (the first
//! command) before it records it (the second) and before the others hear of it: that
//! answer ranks above every answer of the same epoch. The word is the address of the
//! greatest `(config_epoch, promoted)` among the Sentinels that answered, as Sentinel
//! itself lets the configuration with the greater epoch win. Two different addresses
//! at that rank are no word at all.
//!
//! From the start of a failover (`flags` has `failover_in_progress`) until the leader
//! names the promoted replica, the word is [`Word::FailingOver`]: the old master may
//! still take writes that its successor will not have, so the pool routes to no
//! master meanwhile (a planned `SENTINEL FAILOVER` leaves it writable for seconds).

use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::resp::Value;

/// One Sentinel's answer about one master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `host:port` as the Sentinel said it.
    pub address: String,
    /// Its `config-epoch` for the master.
    pub epoch: i64,
    /// It names another address than the one it recorded: it leads a failover and
    /// has promoted that replica.
    pub promoted: bool,
    /// Its flags for the master say `failover_in_progress`.
    pub failing_over: bool,
}

/// What the Sentinels say, together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Word {
    /// This `host:port` is the master.
    Master(String),
    /// A failover started and no replica is promoted yet: no master.
    FailingOver,
    /// Sentinels of the newest rank name different masters (listed): no master.
    Disputed(String),
}

/// Each Sentinel's latest answer, and the rules that turn them into words over time.
///
/// - An answer from an epoch older than the newest seen counts for nothing: a Sentinel
///   that was cut off, or one restarted from an old config, cannot bring an old master
///   back.
/// - A failover, once reported, ends when a Sentinel names another master, or when
///   every Sentinel that reported it answers again without it (an abort). Losing the
///   leader's answer does not end it at once, only after [`FAILOVER_SILENCE`] without
///   an answer from it (a leader that died mid-failover must not keep the pool without
///   a master for good; the superseded-master rule still guards the old one).
/// - With no answer at all, the last word stands.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    answers: Vec<Option<Answer>>,
    floor: i64,
    last: Option<Word>,
    /// While the word is `FailingOver`: the master before it, and the Sentinels that
    /// reported the failover and have not answered without it since (with when each
    /// fell silent, if it did).
    failover: Option<(Option<String>, Vec<Reporter>)>,
}

/// A Sentinel that reported a failover, and since when it has been silent (if it is).
type Reporter = (usize, Option<Instant>);

/// How long a Sentinel that reported a failover may stay silent before the failover
/// no longer counts.
pub const FAILOVER_SILENCE: Duration = Duration::from_secs(10);

impl Tally {
    /// For `count` Sentinels, before any answer.
    pub fn new(count: usize) -> Self {
        Tally {
            answers: vec![None; count],
            ..Tally::default()
        }
    }

    /// Records Sentinel `i`'s answer (`None`: it gave none); the new word when the
    /// word changed.
    pub fn record(&mut self, i: usize, answer: Option<Answer>, now: Instant) -> Option<Word> {
        if let Some(a) = &answer {
            self.floor = self.floor.max(a.epoch);
        }
        if let Some((_, reporters)) = &mut self.failover {
            match &answer {
                Some(a) if !a.failing_over => reporters.retain(|&(r, _)| r != i),
                Some(_) => reporters
                    .iter_mut()
                    .filter(|(r, _)| *r == i)
                    .for_each(|(_, s)| *s = None),
                None => reporters
                    .iter_mut()
                    .filter(|(r, silent)| *r == i && silent.is_none())
                    .for_each(|(_, s)| *s = Some(now)),
            }
            reporters.retain(|(_, silent)| silent.is_none_or(|since| now - since < FAILOVER_SILENCE));
        }
        self.answers[i] = answer;
        let current: Vec<Option<Answer>> = self
            .answers
            .iter()
            .map(|a| a.clone().filter(|a| a.epoch >= self.floor))
            .collect();
        let word = newest(&current)?;
        if let (Word::Master(address), Some((before, reporters))) = (&word, &self.failover) {
            if before.as_ref() == Some(address) && !reporters.is_empty() {
                return None; // the old master again, while the failover may go on
            }
        }
        if self.last.as_ref() == Some(&word) {
            return None;
        }
        self.failover = match (&word, &self.failover) {
            (Word::FailingOver, Some(kept)) => Some(kept.clone()),
            (Word::FailingOver, None) => {
                let before = match &self.last {
                    Some(Word::Master(address)) => Some(address.clone()),
                    _ => None,
                };
                let reporters = (0..current.len())
                    .filter(|&j| current[j].as_ref().is_some_and(|a| a.failing_over))
                    .map(|j| (j, None))
                    .collect();
                Some((before, reporters))
            }
            _ => None,
        };
        self.last = Some(word.clone());
        Some(word)
    }
}

/// The newest word among `answers` (`None`: that Sentinel gave none).
pub fn newest(answers: &[Option<Answer>]) -> Option<Word> {
    let rank = |a: &Answer| (a.epoch, a.promoted);
    let top = answers.iter().flatten().map(rank).max()?;
    let at_top: Vec<&Answer> = answers.iter().flatten().filter(|a| rank(a) == top).collect();
    if at_top.iter().any(|a| a.failing_over && !a.promoted) {
        return Some(Word::FailingOver);
    }
    let first = &at_top[0].address;
    if at_top.iter().all(|a| &a.address == first) {
        return Some(Word::Master(first.clone()));
    }
    let mut named: Vec<&str> = at_top.iter().map(|a| a.address.as_str()).collect();
    named.sort();
    named.dedup();
    Some(Word::Disputed(named.join(" ")))
}

/// The answer from the replies to the two commands; `Err` says why there is none
/// (the Sentinel does not know the master, or answered something else).
pub fn answer(addr: &Value, master: &Value) -> Result<Answer, String> {
    let address = match addr {
        Value::Array(Some(items)) if items.len() == 2 => match (bulk(&items[0]), bulk(&items[1])) {
            (Some(host), Some(port)) if sane(&host, &port) => join(&host, &port),
            _ => return Err(format!("get-master-addr-by-name answered {addr:?}")),
        },
        Value::Array(None) | Value::Bulk(None) => return Err("it monitors no master by that name".into()),
        Value::Error(e) => return Err(format!("get-master-addr-by-name refused: {}", crate::logs::peer(e))),
        other => return Err(format!("get-master-addr-by-name answered {other:?}")),
    };
    let fields = match master {
        Value::Array(Some(items)) => items,
        Value::Error(e) => return Err(format!("SENTINEL master refused: {}", crate::logs::peer(e))),
        other => return Err(format!("SENTINEL master answered {other:?}")),
    };
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|kv| bulk(&kv[0]).as_deref() == Some(name))
            .and_then(|kv| kv.get(1).and_then(bulk))
    };
    let epoch = field("config-epoch")
        .and_then(|e| e.parse().ok())
        .ok_or("SENTINEL master has no config-epoch")?;
    let recorded = match (field("ip"), field("port")) {
        (Some(ip), Some(port)) if sane(&ip, &port) => join(&ip, &port),
        _ => return Err("SENTINEL master has no ip and port".into()),
    };
    let failing_over = field("flags").is_some_and(|f| f.split(',').any(|flag| flag == "failover_in_progress"));
    Ok(Answer {
        promoted: recorded != address,
        address,
        epoch,
        failing_over,
    })
}

/// What an event a Sentinel published means for the pool watching `master`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// About this master (`+switch-master`, `+sdown master`, `+odown`, a promotion):
    /// ask again now and check its nodes sooner.
    Concerns,
    /// About another master, or nothing to act on.
    Other,
}

/// Reads a `pmessage` push (`["pmessage", pattern, channel, payload]`) or a
/// `message` push (`["message", channel, payload]`).
pub fn event(push: &Value, master: &str) -> Option<Event> {
    let Value::Array(Some(items)) = push else { return None };
    let payload = match items.as_slice() {
        [kind, _pattern, _channel, payload] if bulk(kind).as_deref() == Some("pmessage") => payload,
        [kind, _channel, payload] if bulk(kind).as_deref() == Some("message") => payload,
        _ => return None,
    };
    let payload = bulk(payload)?;
    // `+switch-master NAME …`, `+sdown master NAME ip port`, `+promoted-slave slave
    // ip:port ip port @ NAME ip port`: the master's name after `@`, else after
    // `master`, else first.
    let words: Vec<&str> = payload.split(' ').collect();
    let name = match words.iter().position(|w| *w == "@") {
        Some(at) => words.get(at + 1),
        None if words.first() == Some(&"master") => words.get(1),
        None => words.first(),
    };
    Some(if name == Some(&master) {
        Event::Concerns
    } else {
        Event::Other
    })
}

/// A `["pong", ...]` reply on a subscribed connection.
pub fn is_pong(push: &Value) -> bool {
    matches!(push, Value::Array(Some(items)) if items.first().and_then(bulk).as_deref() == Some("pong"))
}

/// A host (a name or an address, no spaces or control characters) and a port number:
/// what a Sentinel says goes into logs and addresses.
fn sane(host: &str, port: &str) -> bool {
    let host_ok =
        !host.is_empty() && host.len() <= 255 && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-_:%".contains(c));
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

fn bulk(value: &Value) -> Option<String> {
    match value {
        Value::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    }
}

fn join(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Value {
        Value::Bulk(Some(s.as_bytes().to_vec()))
    }

    fn said(address: &str, epoch: i64, promoted: bool) -> Option<Answer> {
        Some(Answer {
            address: address.into(),
            epoch,
            promoted,
            failing_over: promoted,
        })
    }

    fn master(address: &str) -> Option<Word> {
        Some(Word::Master(address.into()))
    }

    #[test]
    fn the_newest_epoch_wins_and_a_promotion_outranks_its_epoch() {
        assert_eq!(newest(&[None, None]), None);
        let steady = [said("h:1", 3, false), said("h:1", 3, false), None];
        assert_eq!(newest(&steady), master("h:1"));
        // The leader promoted h:2; the others still record h:1 at the same epoch.
        let leading = [said("h:1", 3, false), said("h:2", 3, true), said("h:1", 3, false)];
        assert_eq!(newest(&leading), master("h:2"));
        // A Sentinel cut off during a failover comes back with the older epoch.
        let behind = [said("h:1", 3, false), said("h:2", 4, false), None];
        assert_eq!(newest(&behind), master("h:2"));
        // Two addresses at the top rank: disputed, no master.
        let split = [said("h:1", 4, false), said("h:2", 4, false)];
        assert_eq!(newest(&split), Some(Word::Disputed("h:1 h:2".into())));
        assert_eq!(newest(&[None, None]), None);
        // The leader started a failover and promoted nobody yet: no master.
        let mut started = said("h:1", 3, false);
        started.as_mut().unwrap().failing_over = true;
        assert_eq!(
            newest(&[said("h:1", 3, false), started.clone()]),
            Some(Word::FailingOver)
        );
        // One that tried and lost the election, behind the new epoch, says nothing.
        assert_eq!(newest(&[said("h:2", 4, false), started]), master("h:2"));
    }

    fn failing(address: &str, epoch: i64) -> Option<Answer> {
        let mut a = said(address, epoch, false);
        a.as_mut().unwrap().failing_over = true;
        a
    }

    #[test]
    fn a_tally_never_goes_back_to_an_older_word() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut tally = Tally::new(3);
        assert_eq!(tally.record(0, said("h:1", 3, false), t0), master("h:1"));
        assert_eq!(tally.record(1, said("h:1", 3, false), t0), None, "unchanged");
        // The leader starts a failover; then its answer is lost: still failing over.
        assert_eq!(tally.record(2, failing("h:1", 3), t0), Some(Word::FailingOver));
        assert_eq!(tally.record(2, None, at(1)), None, "losing the leader ends nothing");
        assert_eq!(tally.record(0, said("h:1", 3, false), at(2)), None);
        // The leader names the promoted replica.
        assert_eq!(tally.record(2, said("h:2", 3, true), at(3)), master("h:2"));
        // A Sentinel left behind at the old epoch cannot bring h:1 back.
        assert_eq!(tally.record(2, said("h:2", 4, false), at(4)), None);
        assert_eq!(tally.record(2, None, at(5)), None);
        assert_eq!(tally.record(1, said("h:1", 3, false), at(6)), None);
        assert_eq!(tally.record(0, said("h:2", 4, false), at(7)), None);
        // An aborted failover: the reporter answers without it.
        let mut tally = Tally::new(2);
        tally.record(0, said("h:1", 1, false), t0);
        assert_eq!(tally.record(1, failing("h:1", 1), t0), Some(Word::FailingOver));
        assert_eq!(tally.record(1, said("h:1", 1, false), at(1)), master("h:1"));
        // A leader that fell silent mid-failover stops counting after the silence.
        let mut tally = Tally::new(2);
        tally.record(0, said("h:1", 1, false), t0);
        assert_eq!(tally.record(1, failing("h:1", 1), t0), Some(Word::FailingOver));
        assert_eq!(tally.record(1, None, at(1)), None);
        assert_eq!(
            tally.record(0, said("h:1", 1, false), at(5)),
            None,
            "still within the silence"
        );
        let after = at(1) + FAILOVER_SILENCE;
        assert_eq!(tally.record(0, said("h:1", 1, false), after), master("h:1"));
    }

    #[test]
    fn hostile_addresses_are_no_answer() {
        let master = Value::Array(Some(vec![
            b("ip"),
            b("h"),
            b("port"),
            b("1"),
            b("config-epoch"),
            b("1"),
        ]));
        for (host, port) in [("h\r\nINFO", "1"), ("h", "0"), ("h", "x"), ("", "1"), ("a b", "1")] {
            let addr = Value::Array(Some(vec![b(host), b(port)]));
            assert!(answer(&addr, &master).is_err(), "{host:?} {port:?}");
        }
    }

    #[test]
    fn answers_are_read_from_both_replies() {
        let addr = Value::Array(Some(vec![b("127.0.0.1"), b("26402")]));
        let master = Value::Array(Some(vec![
            b("name"),
            b("labmaster"),
            b("ip"),
            b("127.0.0.1"),
            b("port"),
            b("26401"),
            b("flags"),
            b("master,failover_in_progress"),
            b("config-epoch"),
            b("7"),
        ]));
        assert_eq!(
            answer(&addr, &master),
            Ok(Answer {
                address: "127.0.0.1:26402".into(),
                epoch: 7,
                promoted: true,
                failing_over: true,
            })
        );
        let v6 = Value::Array(Some(vec![b("::1"), b("26401")]));
        assert_eq!(answer(&v6, &master).unwrap().address, "[::1]:26401");
        assert!(answer(&Value::Array(None), &master).is_err());
        assert!(answer(&addr, &Value::Error("ERR No such master with that name".into())).is_err());
        let no_epoch = Value::Array(Some(vec![b("ip"), b("127.0.0.1"), b("port"), b("26401")]));
        assert!(answer(&addr, &no_epoch).is_err());
    }

    #[test]
    fn events_name_their_master() {
        let push = |payload: &str| Value::Array(Some(vec![b("message"), b("+switch-master"), b(payload)]));
        let ours = push("labmaster 127.0.0.1 26401 127.0.0.1 26402");
        assert_eq!(event(&ours, "labmaster"), Some(Event::Concerns));
        assert_eq!(
            event(&push("labmaster2 127.0.0.1 1 127.0.0.1 2"), "labmaster"),
            Some(Event::Other)
        );
        let promoted = push("slave 127.0.0.1:26402 127.0.0.1 26402 @ labmaster 127.0.0.1 26401");
        assert_eq!(event(&promoted, "labmaster"), Some(Event::Concerns));
        let confirm = Value::Array(Some(vec![b("psubscribe"), b("*"), Value::Integer(1)]));
        assert_eq!(event(&confirm, "labmaster"), None);
        let pattern = Value::Array(Some(vec![
            b("pmessage"),
            b("*"),
            b("+try-failover"),
            b("master labmaster 127.0.0.1 26401"),
        ]));
        assert_eq!(event(&pattern, "labmaster"), Some(Event::Concerns));
        // Names are read at their place: a master called "master" is not every event.
        let other = push("other 127.0.0.1 1 127.0.0.1 2");
        assert_eq!(event(&other, "master"), Some(Event::Other));
        assert!(is_pong(&Value::Array(Some(vec![b("pong"), b("")]))));
    }
}
