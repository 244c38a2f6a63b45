//! Making a crashed server's frames again from a connection's record and its hub's log.
//!
//! The frames after a checkpoint were numbered in one order: each is either kept in the record
//! under its number, or made from a packet of the log after the checkpoint's place, in the
//! log's order. So the log's packets for this connection take, in order, the numbers from the
//! checkpoint's `next` on that no kept frame has.

use std::collections::{BTreeMap, HashSet};

use super::{LogEntry, Record};
use crate::backplane::wire::{self, WireMessage};
use crate::protocol::{Frame, HubProtocol, ServerMessage, TransferFormat};
use crate::types::{LogPos, Target};

/// What a connection taken over after a crash resumes with.
#[derive(Debug)]
pub struct Rebuilt {
    /// The number of the first frame (the server's Sequence).
    pub first: u64,
    pub frames: Vec<Frame>,
    /// Client results the connection was asked for in the log (it may answer them here).
    pub questions: Vec<String>,
    /// Frames made from the log (the rest were kept).
    pub from_log: usize,
    /// Numbers no frame had: a record and a log that do not agree (logged, not fatal).
    pub gaps: u64,
}

/// Whether `packet` is the marker of `claim`.
pub fn is_marker(packet: &[u8], claim: u64) -> bool {
    matches!(decode(packet), Some((_, WireMessage::Marker { claim: c, .. })) if c == claim)
}

fn decode(packet: &[u8]) -> Option<(Option<wire::Header>, WireMessage)> {
    let (header, body) = wire::split(packet).ok()?;
    Some((header, wire::decode_body(body).ok()?))
}

/// Whether a send to `target` reaches the connection `id` of `user` in `groups` (the registry's
/// rule, for one connection).
pub fn includes(target: &Target, id: &str, user: Option<&str>, groups: &[String]) -> bool {
    let member = |group: &String| groups.contains(group);
    match target {
        Target::All => true,
        Target::AllExcept(excluded) => !excluded.iter().any(|x| x == id),
        Target::Connection(c) => c == id,
        Target::Connections(ids) => ids.iter().any(|c| c == id),
        Target::Group(group) => member(group),
        Target::GroupExcept { group, excluded } => {
            member(group) && !excluded.iter().any(|x| x == id)
        }
        Target::Groups(list) => list.iter().any(member),
        Target::User(u) => user == Some(u.as_str()),
        Target::Users(users) => users.iter().any(|u| user == Some(u.as_str())),
    }
}

/// The frames of `record`'s connection: the kept ones, and those `log` (read up to the marker
/// of `claim`) makes for it after the checkpoint's place, encoded in `protocol`.
pub fn rebuild(
    record: &Record,
    log: &[LogEntry],
    claim: u64,
    protocol: &'static dyn HubProtocol,
) -> Rebuilt {
    // A publish retried after a failure can leave a copy in the log; the subscribers took the
    // first (their duplicate check drops the rest), so the copies go, before the checkpoint's
    // place too.
    let mut seen = HashSet::new();
    let mut packets = Vec::with_capacity(log.len());
    // Where the checkpoint's place is; when it is older than what was read, every packet read
    // comes after it.
    let mut start = None;
    for packet in log {
        let Some((header, message)) = decode(packet) else {
            continue;
        };
        if let Some(h) = header
            && !seen.insert((h.origin, h.seq))
        {
            continue;
        }
        let here = match (&message, header) {
            (WireMessage::Marker { claim: c, .. }, _) => Some(LogPos::Marker(*c)),
            (_, Some(h)) => Some(LogPos::Entry {
                origin: h.origin,
                seq: h.seq,
            }),
            _ => None,
        };
        if here == Some(LogPos::Marker(claim)) {
            break;
        }
        packets.push(message);
        if start.is_none() && here == Some(record.at) {
            start = Some(packets.len());
        }
    }
    let mut made = Vec::new();
    let mut questions = Vec::new();
    let (id, user) = (record.connection.as_str(), record.user.as_deref());
    for message in packets.into_iter().skip(start.unwrap_or(0)) {
        match message {
            WireMessage::Send(envelope) if includes(&envelope.target, id, user, &record.groups) => {
                made.push(protocol.encode(&ServerMessage::Invocation {
                    invocation_id: None,
                    target: &envelope.method,
                    arguments: &envelope.arguments,
                }));
            }
            WireMessage::Ask(question) if question.connection == id => {
                made.push(protocol.encode(&ServerMessage::Invocation {
                    invocation_id: Some(&question.invocation_id),
                    target: &question.method,
                    arguments: &question.arguments,
                }));
                questions.push(question.invocation_id);
            }
            _ => {}
        }
    }
    let from_log = made.len();
    let mut numbered: BTreeMap<u64, Frame> = record
        .frames
        .iter()
        .filter_map(|(n, bytes)| kept_frame(protocol, bytes).map(|f| (*n, f)))
        .collect();
    let mut number = record.next;
    for frame in made {
        while numbered.contains_key(&number) {
            number = number.saturating_add(1);
        }
        numbered.insert(number, frame);
        number = number.saturating_add(1);
    }
    let first = numbered.keys().next().copied().unwrap_or(record.next);
    let last = numbered.keys().next_back().copied().unwrap_or(first);
    let gaps = (last - first)
        .saturating_add(1)
        .saturating_sub(numbered.len() as u64);
    Rebuilt {
        first,
        frames: numbered.into_values().collect(),
        questions,
        from_log,
        gaps,
    }
}

fn kept_frame(protocol: &dyn HubProtocol, bytes: &[u8]) -> Option<Frame> {
    match protocol.transfer_format() {
        TransferFormat::Binary => Some(Frame::binary(bytes.to_vec())),
        TransferFormat::Text => String::from_utf8(bytes.to_vec()).ok().map(Frame::text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backplane::wire::{Header, packet};
    use crate::protocol::handshake;
    use crate::types::{Envelope, HubName, Question};

    fn json() -> &'static dyn HubProtocol {
        handshake::protocol_named("json").expect("json")
    }

    fn entry(seq: u64, message: WireMessage) -> LogEntry {
        let body = message.encode_body().expect("encodes");
        packet(Header { origin: 1, seq }, &body).expect("packet")
    }

    fn send(seq: u64, target: Target, text: &str) -> LogEntry {
        entry(
            seq,
            WireMessage::Send(Envelope {
                hub: HubName::new("chat"),
                target,
                method: "m".into(),
                arguments: format!("[\"{text}\"]"),
            }),
        )
    }

    fn marker(seq: u64, claim: u64) -> LogEntry {
        entry(
            seq,
            WireMessage::Marker {
                hub: HubName::new("chat"),
                connection: "c".into(),
                claim,
            },
        )
    }

    fn record(at: LogPos, next: u64, kept: &[(u64, &str)]) -> Record {
        Record {
            connection: "c".into(),
            user: Some("ana".into()),
            protocol: "json".into(),
            groups: vec!["r".into()],
            received: 0,
            at,
            since: 0,
            next,
            frames: kept
                .iter()
                .map(|(n, t)| (*n, t.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn texts(rebuilt: &Rebuilt) -> Vec<String> {
        rebuilt
            .frames
            .iter()
            .map(|f| String::from_utf8_lossy(f.as_bytes()).into_owned())
            .collect()
    }

    fn sent(text: &str) -> String {
        format!("{{\"type\":1,\"target\":\"m\",\"arguments\":[\"{text}\"]}}\u{1e}")
    }

    #[test]
    fn targets_select_as_the_registry_does() {
        let groups = vec!["r".to_owned()];
        let yes = |t: Target| includes(&t, "c", Some("ana"), &groups);
        assert!(yes(Target::All));
        assert!(!yes(Target::AllExcept(vec!["c".into()])));
        assert!(yes(Target::Connections(vec!["x".into(), "c".into()])));
        assert!(yes(Target::Group("r".into())));
        assert!(!yes(Target::Group("s".into())));
        assert!(!yes(Target::GroupExcept {
            group: "r".into(),
            excluded: vec!["c".into()]
        }));
        assert!(yes(Target::Groups(vec!["s".into(), "r".into()])));
        assert!(yes(Target::Users(vec!["bo".into(), "ana".into()])));
        assert!(!includes(&Target::User("ana".into()), "c", None, &groups));
    }

    #[test]
    fn log_frames_after_the_checkpoint_fill_the_numbers_around_kept_ones() {
        // Checkpoint at packet 2 with frames 5 and 6 unacknowledged; then a call's result got
        // 8 (kept), around log frames 7 and 9. Packet 4 is for someone else; 5 is a retry's
        // copy of 3.
        let log = vec![
            send(1, Target::All, "old"),
            send(2, Target::All, "five"),
            send(3, Target::Group("r".into()), "seven"),
            send(4, Target::Group("s".into()), "not mine"),
            send(3, Target::Group("r".into()), "seven"),
            send(6, Target::Connection("c".into()), "nine"),
            marker(7, 42),
            send(8, Target::All, "after the marker"),
        ];
        let at = LogPos::Entry { origin: 1, seq: 2 };
        let record = record(at, 7, &[(5, "five"), (6, "six"), (8, "eight")]);
        let rebuilt = rebuild(&record, &log, 42, json());
        assert_eq!(rebuilt.first, 5);
        assert_eq!(
            texts(&rebuilt),
            vec![
                "five".into(),
                "six".into(),
                sent("seven"),
                "eight".into(),
                sent("nine")
            ]
        );
        assert_eq!((rebuilt.from_log, rebuilt.gaps), (2, 0));
    }

    #[test]
    fn a_checkpoint_older_than_the_log_read_takes_all_of_it_and_questions_count() {
        let ask = WireMessage::Ask(Question {
            hub: HubName::new("chat"),
            connection: "c".into(),
            invocation_id: "s.1".into(),
            method: "q".into(),
            arguments: "[]".into(),
        });
        let log = vec![
            send(9, Target::User("ana".into()), "a"),
            entry(10, ask),
            marker(11, 5),
        ];
        let record = record(LogPos::Marker(3), 1, &[]);
        let rebuilt = rebuild(&record, &log, 5, json());
        assert_eq!(rebuilt.first, 1);
        assert_eq!(rebuilt.frames.len(), 2);
        assert_eq!(rebuilt.questions, vec!["s.1".to_owned()]);
        assert!(is_marker(&marker(11, 5), 5));
        assert!(!is_marker(&marker(11, 5), 6));
    }
}
