use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;

use super::*;
use crate::protocol::json::JSON;
use crate::protocol::{ClientMessage, ProtocolError, TransferFormat};
use crate::types::Target;

struct Client {
    rx: OutboxReceiver,
}

impl Client {
    fn frames(&mut self) -> Vec<String> {
        let mut batch = Vec::new();
        self.rx.try_recv_batch(&mut batch, usize::MAX);
        batch
            .into_iter()
            .filter_map(|m| match m {
                Outbound::Frame(f) | Outbound::Logged(f) => {
                    Some(String::from_utf8_lossy(f.as_bytes()).into_owned())
                }
                _ => None,
            })
            .collect()
    }
}

fn hub() -> HubName {
    HubName::new("chat")
}

fn handle(
    id: &str,
    user: Option<&str>,
    protocol: &'static dyn HubProtocol,
) -> (ConnectionHandle, OutboxReceiver) {
    let (tx, rx) = outbox(8);
    let handle = ConnectionHandle {
        id: ConnectionId::new(id),
        user: user.map(str::to_owned),
        protocol,
        outbox: tx,
        cancel: CancellationToken::new(),
        durable: false,
    };
    (handle, rx)
}

fn connect(registry: &LocalRegistry, id: &str, user: Option<&str>) -> Client {
    let (handle, rx) = handle(id, user, &JSON);
    registry.add(&hub(), handle);
    Client { rx }
}

fn send(registry: &LocalRegistry, target: Target) -> DeliveryStats {
    registry.deliver(
        &Envelope {
            hub: hub(),
            target,
            method: "m".into(),
            arguments: "[1]".into(),
        },
        Source::Only,
    )
}

fn join(registry: &LocalRegistry, id: &str, group: &str) -> bool {
    registry
        .apply_group_change(&GroupChange::Add {
            hub: hub(),
            connection: id.into(),
            group: group.into(),
        })
        .is_some()
}

const FRAME: &str = "{\"type\":1,\"target\":\"m\",\"arguments\":[1]}\u{1e}";

#[test]
fn all_and_all_except() {
    let r = LocalRegistry::new();
    let mut a = connect(&r, "a", None);
    let mut b = connect(&r, "b", None);
    assert_eq!(send(&r, Target::All).delivered, 2);
    assert_eq!(a.frames(), [FRAME]);
    assert_eq!(b.frames(), [FRAME]);
    assert_eq!(send(&r, Target::AllExcept(vec!["a".into()])).delivered, 1);
    assert!(a.frames().is_empty());
    assert_eq!(b.frames(), [FRAME]);
}

#[test]
fn connections_are_deduplicated_and_unknown_ids_ignored() {
    let r = LocalRegistry::new();
    let mut a = connect(&r, "a", None);
    let stats = send(
        &r,
        Target::Connections(vec!["a".into(), "a".into(), "zz".into()]),
    );
    assert_eq!(stats.delivered, 1);
    assert_eq!(a.frames().len(), 1);
    assert_eq!(send(&r, Target::Connection("zz".into())).delivered, 0);
}

#[test]
fn groups_and_group_except() {
    let r = LocalRegistry::new();
    let mut a = connect(&r, "a", None);
    let mut b = connect(&r, "b", None);
    let mut c = connect(&r, "c", None);
    assert!(join(&r, "a", "g"));
    assert!(join(&r, "b", "g"));
    assert!(join(&r, "b", "h"));
    assert!(
        !join(&r, "nobody", "g"),
        "unknown connections are not local"
    );
    assert_eq!(send(&r, Target::Group("g".into())).delivered, 2);
    let except = Target::GroupExcept {
        group: "g".into(),
        excluded: vec!["a".into()],
    };
    assert_eq!(send(&r, except).delivered, 1);
    // b is in both groups but receives one copy.
    assert_eq!(
        send(&r, Target::Groups(vec!["g".into(), "h".into()])).delivered,
        2
    );
    assert_eq!(a.frames().len(), 2);
    assert_eq!(b.frames().len(), 3);
    assert!(c.frames().is_empty());
    assert_eq!(
        r.group_counts(),
        GroupCounts {
            groups: 2,
            memberships: 3
        }
    );
}

#[test]
fn leaving_and_disconnecting_clear_membership() {
    let r = LocalRegistry::new();
    let _a = connect(&r, "a", None);
    let _b = connect(&r, "b", None);
    join(&r, "a", "g");
    join(&r, "b", "g");
    r.apply_group_change(&GroupChange::Remove {
        hub: hub(),
        connection: "a".into(),
        group: "g".into(),
    });
    assert_eq!(r.local_group_members(&hub(), "g"), [ConnectionId::new("b")]);
    r.remove(&hub(), &ConnectionId::new("b"));
    assert!(r.local_group_members(&hub(), "g").is_empty());
    assert_eq!(r.connection_count(), 1);
    assert_eq!(r.group_counts(), GroupCounts::default());
}

#[test]
fn users_with_several_connections() {
    let r = LocalRegistry::new();
    let mut a1 = connect(&r, "a1", Some("ana"));
    let mut a2 = connect(&r, "a2", Some("ana"));
    let mut b = connect(&r, "b", Some("ben"));
    assert_eq!(send(&r, Target::User("ana".into())).delivered, 2);
    assert_eq!(
        send(&r, Target::Users(vec!["ana".into(), "ben".into()])).delivered,
        3
    );
    assert_eq!(a1.frames().len(), 2);
    assert_eq!(a2.frames().len(), 2);
    assert_eq!(b.frames().len(), 1);
}

#[test]
fn hubs_are_isolated() {
    let r = LocalRegistry::new();
    let mut a = connect(&r, "a", None);
    let stats = r.deliver(
        &Envelope {
            hub: HubName::new("other"),
            target: Target::All,
            method: "m".into(),
            arguments: "[]".into(),
        },
        Source::Only,
    );
    assert_eq!(stats.delivered, 0);
    assert!(a.frames().is_empty());
}

#[test]
fn reports_interests_gained_and_lost() {
    use InterestChange::{Subscribe, Unsubscribe};
    let r = LocalRegistry::new();
    let (a, _ra) = handle("a", Some("ana"), &JSON);
    let (b, _rb) = handle("b", Some("ana"), &JSON);
    assert_eq!(
        r.add(&hub(), a),
        [
            Subscribe(Interest::Hub(hub())),
            Subscribe(Interest::Connection(hub(), "a".into())),
            Subscribe(Interest::User(hub(), "ana".into())),
        ]
    );
    assert_eq!(
        r.add(&hub(), b),
        [Subscribe(Interest::Connection(hub(), "b".into()))],
        "the hub and the user are already of interest"
    );
    let add = |id: &str| GroupChange::Add {
        hub: hub(),
        connection: id.into(),
        group: "g".into(),
    };
    assert_eq!(
        r.apply_group_change(&add("a")),
        Some(vec![Subscribe(Interest::Group(hub(), "g".into()))])
    );
    assert_eq!(r.apply_group_change(&add("b")), Some(vec![]));
    assert_eq!(r.apply_group_change(&add("elsewhere")), None);
    assert_eq!(
        r.remove(&hub(), &ConnectionId::new("a")),
        [Unsubscribe(Interest::Connection(hub(), "a".into()))]
    );
    assert_eq!(
        r.remove(&hub(), &ConnectionId::new("b")),
        [
            Unsubscribe(Interest::Connection(hub(), "b".into())),
            Unsubscribe(Interest::Group(hub(), "g".into())),
            Unsubscribe(Interest::User(hub(), "ana".into())),
            Unsubscribe(Interest::Hub(hub())),
        ]
    );
}

#[test]
fn a_full_outbox_cuts_the_slow_connection_off() {
    let r = LocalRegistry::new();
    let (tx, _rx) = outbox(1);
    let cancel = CancellationToken::new();
    r.add(
        &hub(),
        ConnectionHandle {
            id: ConnectionId::new("slow"),
            user: None,
            protocol: &JSON,
            outbox: tx,
            cancel: cancel.clone(),
            durable: false,
        },
    );
    assert_eq!(send(&r, Target::All).delivered, 1);
    assert_eq!(send(&r, Target::All).dropped, 1);
    assert!(cancel.is_cancelled());
}

/// A protocol that counts how often it encodes.
struct Counting(AtomicUsize);

impl HubProtocol for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn transfer_format(&self) -> TransferFormat {
        TransferFormat::Binary
    }
    fn decode(&self, _: &mut BytesMut, _: usize) -> Result<Option<ClientMessage>, ProtocolError> {
        Ok(None)
    }
    fn encode(&self, _: &ServerMessage<'_>) -> Frame {
        self.0.fetch_add(1, Ordering::Relaxed);
        Frame::binary(vec![1, 2, 3])
    }
}

static COUNTING: Counting = Counting(AtomicUsize::new(0));

#[test]
fn a_fan_out_is_encoded_once_per_protocol_and_shared() {
    let r = LocalRegistry::new();
    let mut receivers = Vec::new();
    for i in 0..6 {
        let protocol: &'static dyn HubProtocol = if i % 2 == 0 { &JSON } else { &COUNTING };
        let (h, rx) = handle(&format!("c{i}"), None, protocol);
        r.add(&hub(), h);
        receivers.push(rx);
    }
    let before = COUNTING.0.load(Ordering::Relaxed);
    assert_eq!(send(&r, Target::All).delivered, 6);
    assert_eq!(
        COUNTING.0.load(Ordering::Relaxed) - before,
        1,
        "one encode for three"
    );
    let frames: Vec<Frame> = receivers
        .iter_mut()
        .map(|rx| {
            let mut batch = Vec::new();
            rx.try_recv_batch(&mut batch, 8);
            match batch.pop() {
                Some(Outbound::Frame(f)) => f,
                other => panic!("expected a frame, got {other:?}"),
            }
        })
        .collect();
    let json: Vec<_> = frames
        .iter()
        .filter(|f| f.format() == TransferFormat::Text)
        .collect();
    assert_eq!(json.len(), 3);
    // Shared, not copied: every JSON recipient holds the very same bytes.
    assert!(
        json.windows(2)
            .all(|w| w[0].as_bytes().as_ptr() == w[1].as_bytes().as_ptr())
    );
}

#[test]
fn closing_a_hub_tells_its_connections_only() {
    let r = LocalRegistry::new();
    let (a, mut ra) = handle("a", None, &JSON);
    r.add(&hub(), a);
    let (other, mut ro) = handle("o", None, &JSON);
    r.add(&HubName::new("other"), other);
    assert_eq!(r.close_hub(&hub(), "gone"), 1);
    let mut batch = Vec::new();
    ra.try_recv_batch(&mut batch, 8);
    assert!(
        matches!(&batch[..], [Outbound::Close(f)] if f.as_bytes() == b"{\"type\":7,\"error\":\"gone\"}\x1e")
    );
    batch.clear();
    assert!(!ro.try_recv_batch(&mut batch, 8));
}

fn send_from(registry: &LocalRegistry, source: Source) -> DeliveryStats {
    registry.deliver(
        &Envelope {
            hub: hub(),
            target: Target::All,
            method: "m".into(),
            arguments: "[1]".into(),
        },
        source,
    )
}

/// What reached a client's outbox: frames as "frame", and the move's marker with its groups.
fn outbound(client: &mut Client) -> Vec<String> {
    let mut batch = Vec::new();
    client.rx.try_recv_batch(&mut batch, usize::MAX);
    batch
        .into_iter()
        .map(|m| match m {
            Outbound::Moved { groups } => format!("moved {groups:?}"),
            _ => "frame".to_owned(),
        })
        .collect()
}

#[test]
fn a_direct_connection_takes_local_sends_at_once_and_skips_their_echoes() {
    let r = LocalRegistry::new();
    let mut a = connect(&r, "a", None);
    assert!(!r.wants_echoes());
    for source in [Source::Local, Source::Only, Source::Echo] {
        send_from(&r, source);
    }
    assert_eq!(outbound(&mut a), ["frame", "frame"], "Local and Only");
}

#[test]
fn a_moving_connection_switches_to_the_backplanes_order_then_lets_go_at_the_marker() {
    let r = LocalRegistry::new();
    let mut a = connect(&r, "a", None);
    assert!(join(&r, "a", "g"));
    let mut queued = false;
    assert!(r.deliver_in_order(&hub(), "a", || queued = true));
    assert!(queued, "the switch's marker is queued under the switch");
    assert!(!r.deliver_in_order(&hub(), "nobody", || unreachable!()));
    assert!(r.wants_echoes());
    // Switching: echoes are of sends it took at once; local sends come back as echoes later.
    for source in [Source::Local, Source::Echo] {
        send_from(&r, source);
    }
    assert!(outbound(&mut a).is_empty());
    send_from(&r, Source::Only);
    assert_eq!(outbound(&mut a), ["frame"]);

    r.switched(&hub(), "a");
    for source in [Source::Local, Source::Only, Source::Echo] {
        send_from(&r, source);
    }
    assert_eq!(outbound(&mut a), ["frame", "frame"], "Only and Echo");

    // Another claim's marker is the claimant's; this server's connection lets go at any.
    r.marker(&hub(), "a", 7);
    assert_eq!(outbound(&mut a), ["moved [\"g\"]"]);
    for source in [Source::Local, Source::Only, Source::Echo] {
        send_from(&r, source);
    }
    assert!(outbound(&mut a).is_empty(), "nothing after the marker");
    assert_eq!(r.groups_of(&hub(), "a"), ["g"], "kept until it unregisters");
    assert!(
        !join(&r, "a", "h"),
        "its group changes go to its new server"
    );
    r.remove(&hub(), &ConnectionId::new("a"));
    assert!(!r.wants_echoes());
}

#[test]
fn an_adopted_connection_takes_nothing_until_its_claims_marker() {
    let r = LocalRegistry::new();
    let (handle, rx) = handle("a", Some("ana"), &JSON);
    let changes = r.adopt(&hub(), handle, &["g".to_owned()], 9);
    let subscribed: Vec<_> = changes
        .iter()
        .map(|c| match c {
            InterestChange::Subscribe(i) => format!("{i:?}"),
            InterestChange::Unsubscribe(i) => format!("-{i:?}"),
        })
        .collect();
    assert_eq!(
        subscribed.len(),
        4,
        "hub, connection, user and group: {subscribed:?}"
    );
    let mut a = Client { rx };
    for source in [Source::Local, Source::Only, Source::Echo] {
        send_from(&r, source);
    }
    assert!(outbound(&mut a).is_empty());
    r.marker(&hub(), "a", 8);
    send_from(&r, Source::Only);
    assert!(
        outbound(&mut a).is_empty(),
        "another claim's marker changes nothing"
    );
    r.marker(&hub(), "a", 9);
    for source in [Source::Local, Source::Only, Source::Echo] {
        send_from(&r, source);
    }
    assert_eq!(outbound(&mut a), ["frame", "frame"], "Only and Echo");
    assert_eq!(send(&r, Target::Group("g".into())).delivered, 1);
    assert_eq!(send(&r, Target::User("ana".into())).delivered, 1);
    outbound(&mut a);

    // Moving on again: it takes this server's sends from the backplane already, and goes on.
    assert!(r.deliver_in_order(&hub(), "a", || panic!("no switch to mark")));
    send_from(&r, Source::Echo);
    assert_eq!(outbound(&mut a), ["frame"]);
}

fn leave(registry: &LocalRegistry, id: &str, group: &str) -> bool {
    registry
        .apply_group_change(&GroupChange::Remove {
            hub: hub(),
            connection: id.into(),
            group: group.into(),
        })
        .is_some()
}

/// The changes fed to presence so far, with their numbers.
fn fed(
    feed: &mut tokio::sync::mpsc::UnboundedReceiver<presence::Feed>,
) -> Vec<(u64, presence::Change)> {
    let mut changes = Vec::new();
    while let Ok(item) = feed.try_recv() {
        if let presence::Feed::Change {
            seq,
            hub: h,
            change,
        } = item
        {
            assert_eq!(h, hub());
            changes.push((seq, change));
        }
    }
    changes
}

#[test]
fn presence_hears_every_change_of_the_share_in_order() {
    use presence::Change::*;
    let registry = LocalRegistry::new();
    let (tx, mut feed) = tokio::sync::mpsc::unbounded_channel();
    assert!(registry.feed_presence(tx.clone()));
    assert!(!registry.feed_presence(tx), "one feed only");
    let _ana = connect(&registry, "a", Some("ana"));
    let _anon = connect(&registry, "b", None);
    assert!(join(&registry, "a", "room"));
    assert!(join(&registry, "a", "hall"));
    assert!(leave(&registry, "a", "hall"));
    assert!(
        !join(&registry, "elsewhere", "room"),
        "not a local connection"
    );
    registry.remove(&hub(), &ConnectionId::new("a"));
    registry.remove(&hub(), &ConnectionId::new("a"));
    let s = |x: &str| x.to_owned();
    assert_eq!(
        fed(&mut feed),
        vec![
            (
                1,
                Connected {
                    connection: s("a"),
                    user: Some(s("ana"))
                }
            ),
            (
                2,
                Connected {
                    connection: s("b"),
                    user: None
                }
            ),
            (
                3,
                Joined {
                    connection: s("a"),
                    group: s("room")
                }
            ),
            (
                4,
                Joined {
                    connection: s("a"),
                    group: s("hall")
                }
            ),
            (
                5,
                Left {
                    connection: s("a"),
                    group: s("hall")
                }
            ),
            (
                6,
                Disconnected {
                    connection: s("a"),
                    groups: vec![s("room")]
                }
            ),
        ]
    );
}

#[test]
fn a_copied_share_holds_the_changes_numbered_up_to_its_number() {
    let registry = LocalRegistry::new();
    let (tx, mut feed) = tokio::sync::mpsc::unbounded_channel();
    registry.feed_presence(tx);
    let _a = connect(&registry, "a", Some("ana"));
    assert!(join(&registry, "a", "room"));
    let (seq, holdings) = registry.share(&hub());
    assert_eq!(seq, 2);
    assert_eq!(
        holdings,
        vec![Holding {
            connection: "a".into(),
            user: Some("ana".into()),
            groups: vec!["room".into()],
        }]
    );
    let _b = connect(&registry, "b", None);
    let later: Vec<u64> = fed(&mut feed).into_iter().map(|(n, _)| n).collect();
    assert_eq!(later, vec![1, 2, 3], "the share holds 1 and 2, not 3");
    assert_eq!(registry.share(&HubName::new("other")), (3, Vec::new()));
}

#[test]
fn one_server_answers_presence_from_its_connections() {
    let registry = LocalRegistry::new();
    let _a1 = connect(&registry, "a1", Some("ana"));
    let _a2 = connect(&registry, "a2", Some("ana"));
    let _b = connect(&registry, "b", None);
    join(&registry, "a1", "room");
    join(&registry, "b", "room");
    let ask = |q: Query| registry.presence(&hub(), &q);
    assert_eq!(ask(Query::Connections), Answer::Count(3));
    assert_eq!(
        ask(Query::Users),
        Answer::Count(1),
        "ana once, the anonymous not at all"
    );
    assert_eq!(ask(Query::UserConnections("ana".into())), Answer::Count(2));
    assert_eq!(ask(Query::UserConnections("ben".into())), Answer::Count(0));
    assert_eq!(ask(Query::GroupSize("room".into())), Answer::Count(2));
    let members = |limit| {
        ask(Query::GroupMembers {
            group: "room".into(),
            limit,
        })
    };
    assert_eq!(
        members(10),
        Answer::Members(vec![
            presence::Member {
                connection: "a1".into(),
                user: Some("ana".into())
            },
            presence::Member {
                connection: "b".into(),
                user: None
            },
        ])
    );
    assert_eq!(members(1).into_members().len(), 1);
    assert_eq!(
        registry.presence(&HubName::new("other"), &Query::Connections),
        Answer::Count(0)
    );
    // Without a feed, nothing waits for presence to be written.
    let mut written = std::pin::pin!(registry.presence_written());
    let waker = std::task::Waker::noop();
    assert!(
        written
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_ready()
    );
}

/// What reached a durable client's outbox: frames made from the log, frames to keep, and
/// checkpoints with their place and groups.
fn durable_outbound(client: &mut Client) -> Vec<String> {
    let mut batch = Vec::new();
    client.rx.try_recv_batch(&mut batch, usize::MAX);
    batch
        .into_iter()
        .map(|m| match m {
            Outbound::Logged(_) => "logged".to_owned(),
            Outbound::Frame(_) => "kept".to_owned(),
            Outbound::Checkpoint(place) => format!("checkpoint {} {:?}", place.at, place.groups),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_durable_connection_is_told_where_it_is_in_the_log() {
    let r = LocalRegistry::new();
    let (mut handle, rx) = handle("a", None, &JSON);
    handle.durable = true;
    r.adopt(&hub(), handle, &[], 5);
    let mut a = Client { rx };
    let envelope = Envelope {
        hub: hub(),
        target: Target::All,
        method: "m".into(),
        arguments: "[1]".into(),
    };
    let at = |seq| LogPos::Entry { origin: 1, seq };
    r.deliver_logged(&envelope, Source::Only, at(1));
    assert!(durable_outbound(&mut a).is_empty(), "before its marker");
    // Its marker names where its frames from the log start.
    r.marker(&hub(), "a", 5);
    r.deliver_logged(&envelope, Source::Only, at(2));
    // Not from the log (Redis was away): kept by the writer.
    r.deliver(&envelope, Source::Only);
    assert_eq!(
        durable_outbound(&mut a),
        ["checkpoint m:5 []", "logged", "kept"]
    );
    // Its own marker again (or late, after it stopped waiting) is not a move.
    r.marker(&hub(), "a", 5);
    assert!(durable_outbound(&mut a).is_empty());
    // A group change is a checkpoint at the newest packet delivered, under the change.
    r.deliver_logged(&envelope, Source::Only, at(3));
    assert!(join(&r, "a", "g"));
    // The router tells it once the group's channel is subscribed.
    r.checkpoint(&hub(), "a");
    r.checkpoint_durable();
    assert_eq!(
        durable_outbound(&mut a),
        [
            "logged",
            "checkpoint e:1:3 [\"g\"]",
            "checkpoint e:1:3 [\"g\"]"
        ]
    );
    // A connection that is not durable is told nothing of the log.
    let mut b = connect(&r, "b", None);
    r.deliver_logged(&envelope, Source::Only, at(4));
    r.checkpoint_durable();
    assert_eq!(outbound(&mut b), ["frame"]);
}
