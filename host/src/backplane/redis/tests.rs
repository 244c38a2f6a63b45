//! The Redis backplane's bookkeeping over the in-memory broker, with paused time: two
//! backplanes on one broker are two servers sharing one Redis.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::memory::MemoryBroker;
use super::*;
use crate::protocol::json::JSON;
use crate::registry::{ConnectionHandle, Outbound, OutboxReceiver, outbox};
use crate::types::{ConnectionId, HubName};

const ACK_TIMEOUT: Duration = Duration::from_secs(1);

struct Server<B: Broker = MemoryBroker> {
    backplane: RedisBackplane<B>,
    registry: Arc<LocalRegistry>,
}

fn hub() -> HubName {
    HubName::new("chat")
}

async fn server(broker: &MemoryBroker) -> Server {
    let registry = Arc::new(LocalRegistry::new());
    let backplane = RedisBackplane::with_broker(
        broker.clone(),
        Keyspace::single("p"),
        ACK_TIMEOUT,
        None,
        registry.clone(),
        CancellationToken::new(),
    );
    eventually(|| backplane.is_ready(), "the backplane to join").await;
    Server {
        backplane,
        registry,
    }
}

/// Polls `condition` while virtual time runs, so the backplane's tasks make progress.
async fn eventually(mut condition: impl FnMut() -> bool, what: &str) {
    for _ in 0..10_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting for {what}");
}

struct Client {
    rx: OutboxReceiver,
    seen: Vec<String>,
}

impl Client {
    /// Every invocation frame received so far, as text.
    fn frames(&mut self) -> &[String] {
        let mut batch = Vec::new();
        self.rx.try_recv_batch(&mut batch, usize::MAX);
        for message in batch {
            if let Outbound::Frame(frame) = message {
                self.seen
                    .push(String::from_utf8_lossy(frame.as_bytes()).into_owned());
            }
        }
        &self.seen
    }

    /// The `arguments` texts received, in order.
    fn arguments(&mut self) -> Vec<String> {
        self.frames()
            .iter()
            .map(|f| {
                let start = f.find("\"arguments\":").map_or(0, |i| i + 12);
                f[start..f.len() - 2].to_owned()
            })
            .collect()
    }
}

async fn connect<B: Broker>(server: &Server<B>, id: &str) -> Client {
    let (tx, rx) = outbox(64);
    let changes = server.registry.add(
        &hub(),
        ConnectionHandle {
            id: ConnectionId::new(id),
            user: None,
            protocol: &JSON,
            outbox: tx,
            cancel: CancellationToken::new(),
            durable: false,
        },
    );
    server.backplane.update_interest(changes).await;
    Client {
        rx,
        seen: Vec::new(),
    }
}

async fn disconnect<B: Broker>(server: &Server<B>, id: &str) {
    let changes = server.registry.remove(&hub(), &ConnectionId::new(id));
    server.backplane.update_interest(changes).await;
}

async fn join<B: Broker>(server: &Server<B>, id: &str, group: &str) -> Result<(), BackplaneError> {
    let change = GroupChange::Add {
        hub: hub(),
        connection: id.into(),
        group: group.into(),
    };
    match server.registry.apply_group_change(&change) {
        Some(changes) => {
            server.backplane.update_interest(changes).await;
            Ok(())
        }
        None => server.backplane.change_remote_group(change).await,
    }
}

fn send<B: Broker>(server: &Server<B>, target: Target, argument: &str) {
    server.backplane.publish(Envelope {
        hub: hub(),
        target,
        method: "m".into(),
        arguments: format!("[\"{argument}\"]"),
    });
}

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| format!("[\"{i}\"]")).collect()
}

/// The channels of the broker's only link.
fn channels(broker: &MemoryBroker) -> Vec<String> {
    let links = broker.subscriptions();
    assert_eq!(links.len(), 1, "one link: {links:?}");
    links[0].clone()
}

#[tokio::test(start_paused = true)]
async fn a_send_reaches_every_server_once_and_its_own_server_directly() {
    let broker = MemoryBroker::new();
    let (a, b) = (server(&broker).await, server(&broker).await);
    let mut on_a = connect(&a, "ca").await;
    let mut on_b = connect(&b, "cb").await;
    send(&a, Target::All, "hello");
    // Local delivery happens before publish returns.
    assert_eq!(on_a.arguments(), args(&["hello"]));
    eventually(|| !on_b.frames().is_empty(), "delivery on B").await;
    // A sentinel from B travels after A's own echo on A's link: once it is in, the echo was
    // skipped.
    send(&b, Target::All, "sentinel");
    eventually(|| on_a.frames().len() == 2, "the sentinel on A").await;
    assert_eq!(on_a.arguments(), args(&["hello", "sentinel"]));
    assert_eq!(on_b.arguments(), args(&["hello", "sentinel"]));
}

#[tokio::test(start_paused = true)]
async fn a_send_to_a_local_connection_is_not_published() {
    let broker = MemoryBroker::new();
    let a = server(&broker).await;
    let mut on_a = connect(&a, "ca").await;
    let before = broker.published();
    send(&a, Target::Connection("ca".into()), "private");
    send(
        &a,
        Target::Connections(vec!["ca".into(), "elsewhere".into()]),
        "two",
    );
    assert_eq!(on_a.arguments(), args(&["private", "two"]));
    eventually(|| broker.published() > before, "the remote copy").await;
    assert_eq!(
        broker.published(),
        before + 1,
        "only the copy for 'elsewhere'"
    );
}

#[tokio::test(start_paused = true)]
async fn subscribes_to_what_local_members_need_and_no_more() {
    let broker = MemoryBroker::new();
    let a = server(&broker).await;
    let internal = |extra: &[&str]| {
        let mut all: Vec<String> = [
            "p:internal:groups".to_owned(),
            format!("p:internal:ack:{}", a.backplane.server_id()),
            format!("p:internal:return:{}", a.backplane.server_id()),
        ]
        .into_iter()
        .chain(extra.iter().map(|s| (*s).to_owned()))
        .collect();
        all.sort();
        all
    };
    assert_eq!(channels(&broker), internal(&[]));
    let _c1 = connect(&a, "c1").await;
    let _c2 = connect(&a, "c2").await;
    join(&a, "c1", "g").await.expect("joined");
    join(&a, "c2", "g").await.expect("joined");
    assert_eq!(
        channels(&broker),
        internal(&[
            "p:chat:all",
            "p:chat:connection:c1",
            "p:chat:connection:c2",
            "p:chat:group:g"
        ])
    );
    disconnect(&a, "c1").await;
    assert_eq!(
        channels(&broker),
        internal(&["p:chat:all", "p:chat:connection:c2", "p:chat:group:g"]),
        "the group keeps a member"
    );
    disconnect(&a, "c2").await;
    assert_eq!(channels(&broker), internal(&[]));
    assert_eq!(
        a.backplane.inner.subscriptions.desired().await,
        internal(&[])
    );
}

#[tokio::test(start_paused = true)]
async fn a_remote_group_change_completes_once_applied_and_subscribed() {
    let broker = MemoryBroker::new();
    let (a, b) = (server(&broker).await, server(&broker).await);
    let mut member = connect(&b, "cb").await;
    join(&a, "cb", "crew").await.expect("acknowledged");
    // Acknowledged means applied and subscribed on B: a send right after reaches the member.
    assert_eq!(b.registry.local_group_members(&hub(), "crew").len(), 1);
    send(&a, Target::Group("crew".into()), "welcome");
    eventually(|| !member.frames().is_empty(), "the group send").await;
    assert_eq!(member.arguments(), args(&["welcome"]));
    assert_eq!(a.backplane.inner.acks.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_group_change_no_server_applies_fails_at_the_ack_timeout() {
    let broker = MemoryBroker::new();
    let (a, _b) = (server(&broker).await, server(&broker).await);
    let started = Instant::now();
    let result = join(&a, "nobody", "crew").await;
    assert!(matches!(result, Err(BackplaneError::AckTimeout(t)) if t == ACK_TIMEOUT));
    assert_eq!(started.elapsed(), ACK_TIMEOUT);
    assert_eq!(a.backplane.inner.acks.len(), 0, "the waiter is forgotten");
}

#[tokio::test(start_paused = true)]
async fn an_outage_is_counted_once_and_every_subscription_restored() {
    let broker = MemoryBroker::new();
    let (a, b) = (server(&broker).await, server(&broker).await);
    let mut on_a = connect(&a, "ca").await;
    let mut on_b = connect(&b, "cb").await;
    let stats = a.backplane.stats();

    broker.set_down(true);
    eventually(|| !a.backplane.is_ready(), "A to notice").await;
    for i in 0..3 {
        send(&a, Target::All, &format!("during {i}"));
    }
    assert_eq!(on_a.arguments().len(), 3, "local clients are still served");
    assert_eq!(BackplaneStats::get(&stats.dropped), 3);
    assert_eq!(a.backplane.inner.health.outage_drops(), 3);
    assert_eq!(
        BackplaneStats::get(&stats.outages),
        1,
        "one outage, however many drops"
    );
    // Interests change while the link is down...
    join(&a, "ca", "g")
        .await
        .expect("a local join needs no link");
    assert!(matches!(
        join(&a, "cb", "g").await,
        Err(BackplaneError::Disconnected)
    ));

    broker.set_down(false);
    eventually(
        || a.backplane.is_ready() && b.backplane.is_ready(),
        "both back",
    )
    .await;
    assert_eq!(BackplaneStats::get(&stats.reconnects), 1);
    assert_eq!(
        a.backplane.inner.health.outage_drops(),
        0,
        "the outage ended"
    );
    // ...and the new link has them all.
    let restored: Vec<String> = broker
        .subscriptions()
        .into_iter()
        .find(|c| c.iter().any(|ch| ch == "p:chat:connection:ca"))
        .expect("A's link");
    assert!(
        restored.contains(&"p:chat:group:g".to_owned()),
        "{restored:?}"
    );
    assert!(restored.contains(&"p:chat:all".to_owned()));
    send(&b, Target::Group("g".into()), "after");
    eventually(|| on_a.arguments().len() == 4, "delivery after the outage").await;
    assert!(
        on_b.arguments().is_empty(),
        "B's client is not in the group"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pipeline_retried_after_a_partial_failure_delivers_each_message_once() {
    let broker = MemoryBroker::new();
    let (a, b) = (server(&broker).await, server(&broker).await);
    let mut on_a = connect(&a, "ca").await;
    let mut on_b = connect(&b, "cb").await;
    // The next pipeline carries out its first message, breaks, and is retried whole.
    broker.fail_next_publish_after(1);
    send(&a, Target::All, "one");
    send(&a, Target::All, "two");
    eventually(|| on_b.frames().len() >= 2, "both messages on B").await;
    send(&a, Target::All, "sentinel");
    eventually(
        || {
            on_b.arguments()
                .last()
                .is_some_and(|l| l.contains("sentinel"))
        },
        "the sentinel",
    )
    .await;
    assert_eq!(on_b.arguments(), args(&["one", "two", "sentinel"]));
    assert_eq!(on_a.arguments(), args(&["one", "two", "sentinel"]));
    assert_eq!(BackplaneStats::get(&a.backplane.stats().dropped), 0);
}

#[tokio::test(start_paused = true)]
async fn failing_publishes_on_a_live_link_are_one_outage_that_ends_when_publishing_works() {
    let broker = MemoryBroker::new();
    let (a, b) = (server(&broker).await, server(&broker).await);
    let _on_a = connect(&a, "ca").await;
    let mut on_b = connect(&b, "cb").await;
    let stats = a.backplane.stats();
    // Both the publish and its retry fail.
    broker.fail_publishes(2);
    send(&a, Target::All, "lost");
    eventually(|| BackplaneStats::get(&stats.dropped) == 1, "the drop").await;
    assert_eq!(BackplaneStats::get(&stats.outages), 1);
    assert!(a.backplane.is_ready(), "the link itself is fine");
    send(&a, Target::All, "through");
    eventually(|| !on_b.frames().is_empty(), "the next send").await;
    assert_eq!(on_b.arguments(), args(&["through"]));
    assert_eq!(
        a.backplane.inner.health.outage_drops(),
        0,
        "the outage ended"
    );
    assert_eq!(BackplaneStats::get(&stats.outages), 1);
}

/// Passes the claims that reach a server to the test.
struct Orders(tokio::sync::mpsc::UnboundedSender<(String, MoveOrder)>);

impl Movers for Orders {
    fn order(&self, _hub: &HubName, token: &str, order: MoveOrder) -> bool {
        self.0.send((token.to_owned(), order)).is_ok()
    }
}

/// Everything a client got here up to its move's marker, and whether the marker came.
fn until_moved(rx: &mut OutboxReceiver, seen: &mut Vec<String>) -> bool {
    let mut batch = Vec::new();
    rx.try_recv_batch(&mut batch, usize::MAX);
    for message in batch {
        match message {
            Outbound::Frame(frame) => seen.push(String::from_utf8_lossy(frame.as_bytes()).into()),
            Outbound::Moved { .. } => return true,
            _ => {}
        }
    }
    false
}

#[tokio::test(start_paused = true)]
async fn a_connection_moving_between_servers_gets_every_send_once_in_order() {
    let broker = MemoryBroker::new();
    let (a, b) = (server(&broker).await, server(&broker).await);
    let (orders, mut ordered) = tokio::sync::mpsc::unbounded_channel();
    a.backplane.serve_moves(Arc::new(Orders(orders)));
    let mut old = connect(&a, "c").await;
    join(&a, "c", "g").await.expect("joined");
    // Both servers send to the group and to the connection throughout, in numbered turns.
    let mut n = 0;
    let turn = |n: &mut usize| {
        for (server, tag) in [(&a, "A"), (&b, "B")] {
            send(server, Target::Group("g".into()), &format!("{tag}g{n}"));
            send(
                server,
                Target::Connection("c".into()),
                &format!("{tag}c{n}"),
            );
        }
        *n += 1;
    };
    turn(&mut n);

    let claimant = b.backplane.clone();
    let claim = tokio::spawn(async move { claimant.claim(&hub(), "token", None).await });
    let (token, order) = ordered.recv().await.expect("the claim reached A");
    assert_eq!(token, "token");
    a.backplane.hold(&order);
    turn(&mut n);
    assert!(a.backplane.deliver_in_order(&hub(), "c"));
    turn(&mut n);
    let offer = Offer {
        claim: order.claim,
        connection: "c".into(),
        user: None,
        protocol: "json".into(),
        groups: a.registry.groups_of(&hub(), "c"),
        received: 0,
    };
    a.backplane.offer(&order, offer.clone());
    turn(&mut n);
    let claimed = claim.await.expect("claim task").expect("the offer");
    assert_eq!(claimed.offer, offer);
    turn(&mut n);
    let (tx, mut new) = outbox(256);
    let handle = ConnectionHandle {
        id: ConnectionId::new("c"),
        user: None,
        protocol: &JSON,
        outbox: tx,
        cancel: CancellationToken::new(),
        durable: false,
    };
    let changes = b.registry.adopt(&hub(), handle, &offer.groups, order.claim);
    b.backplane.update_interest(changes).await;
    turn(&mut n);
    b.backplane.mark(&hub(), "c", order.claim);
    turn(&mut n);
    let mut here = Vec::new();
    eventually(|| until_moved(&mut old.rx, &mut here), "the marker on A").await;
    turn(&mut n);
    // Sentinels from both servers, after everything: once they are in, everything is.
    send(&a, Target::Group("g".into()), "Aend");
    send(&b, Target::Group("g".into()), "Bend");
    let mut there = Vec::new();
    eventually(
        || {
            until_moved(&mut new, &mut there);
            there.iter().filter(|f| f.contains("end")).count() == 2
        },
        "the sentinels on B",
    )
    .await;
    let all: Vec<String> = here
        .iter()
        .chain(&there)
        .filter_map(|f| Some(f.split_once("[\"")?.1.split_once("\"]")?.0.to_owned()))
        .collect();
    for tag in ["A", "B"] {
        for kind in ["g", "c"] {
            let prefix = format!("{tag}{kind}");
            let got: Vec<&String> = all.iter().filter(|m| m.starts_with(&prefix)).collect();
            let expected: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
            assert_eq!(
                got,
                expected.iter().collect::<Vec<_>>(),
                "{prefix}: once each, in order"
            );
        }
    }
    assert!(
        !here.is_empty() && there.len() > 2,
        "both servers delivered some"
    );
}

/// Over a real Redis the link reads its replies among its messages: health checks and joins
/// are answered while sends flow, and the link never counts as lost.
#[tokio::test]
async fn a_real_redis_link_answers_its_checks_and_joins_while_messages_flow() {
    let redis = super::test_redis::RedisServer::start(Some("pw")).await;
    let start = || async {
        let registry = Arc::new(LocalRegistry::new());
        let config = RedisConfig {
            prefix: "p".into(),
            ack_timeout: ACK_TIMEOUT,
            log: None,
        };
        let backplane = RedisBackplane::start(
            &redis.url(Some("pw")),
            config,
            registry.clone(),
            CancellationToken::new(),
        )
        .await
        .expect("started");
        let server = Server {
            backplane,
            registry,
        };
        for _ in 0..500 {
            if server.backplane.is_ready() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the backplane did not join");
    };
    let (a, b) = (start().await, start().await);
    let mut on_b = connect(&b, "cb").await;
    // Past several health checks (one each 500 ms, each failing after 2 s unanswered).
    let until = Instant::now() + Duration::from_secs(3);
    let mut expected = Vec::new();
    let mut round = 0;
    while Instant::now() < until {
        round += 1;
        let group = format!("g{round}");
        join(&b, "cb", &group).await.expect("joined");
        let text = format!("m{round}");
        send(&a, Target::Group(group.clone()), &text);
        expected.push(format!("[\"{text}\"]"));
        for _ in 0..1000 {
            if on_b.frames().len() == expected.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(on_b.arguments().last(), expected.last(), "round {round}");
    }
    assert_eq!(on_b.arguments(), expected);
    for server in [&a, &b] {
        let stats = server.backplane.stats();
        assert_eq!(BackplaneStats::get(&stats.outages), 0);
        assert_eq!(BackplaneStats::get(&stats.reconnects), 0);
        assert!(stats.is_connected());
    }
}
