//! Sessions driven in process: channels stand in for the transport, time is paused, and the
//! hub is a native hub behind the real dispatcher, runtime, router and registry. `Wait`
//! invocations are held at a gate the test opens, to pace calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;
use crate::backplane::memory::MemoryBackplane;
use crate::registry::LocalRegistry;
use crate::runtime::{
    Answer, Call, HubError, HubRuntime, MethodInfo, NativeHost, NativeHub, ParamInfo,
    RuntimeConfig, StreamNext, StreamStep, UploadEvent, UploadStep,
};
use crate::state::memory::MemoryState;
use crate::types::{ConnectionId, Envelope, HubName, Target};

const HANDSHAKE: &str = "{\"protocol\":\"json\",\"version\":1}\u{1e}";
const PING: &str = "{\"type\":6}";

fn settings() -> Settings {
    Settings {
        keep_alive: Duration::from_secs(15),
        write_delay: Duration::ZERO,
        client_timeout: Duration::from_secs(30),
        handshake_timeout: Duration::from_secs(15),
        outbox_capacity: 64,
        rate_limit: 0,
        max_parallel_invocations: 1,
        max_streams: 100,
        reconnect_window: Duration::from_secs(15),
        reconnect_buffer: 100_000,
    }
}

/// `Echo(x)` returns `x`; lifecycle events are counted.
#[derive(Default)]
struct TestHub {
    connected: AtomicUsize,
    disconnected: AtomicUsize,
    /// Stream steps run.
    steps: AtomicUsize,
}

impl NativeHub for TestHub {
    fn call(
        &self,
        _caller: &Caller,
        call: Call<'_>,
        host: &mut NativeHost,
    ) -> Result<Answer, HubError> {
        match call {
            Call::Connected => {
                self.connected.fetch_add(1, Ordering::SeqCst);
                Ok(Answer::Value(None))
            }
            Call::Disconnected { .. } => {
                self.disconnected.fetch_add(1, Ordering::SeqCst);
                Ok(Answer::Value(None))
            }
            Call::Invoke { method, arguments } if method.eq_ignore_ascii_case("echo") => {
                let args: Vec<serde_json::Value> = serde_json::from_str(arguments)
                    .map_err(|e| HubError::InvalidArguments(e.to_string()))?;
                Ok(Answer::Value(args.first().map(ToString::to_string)))
            }
            Call::Invoke { method, .. } if method.eq_ignore_ascii_case("bye") => {
                host.abort();
                Ok(Answer::Value(Some("\"bye\"".into())))
            }
            Call::Invoke { .. } => Err(HubError::MethodNotFound),
            // `Count(n, delay_ms)` streams 0..n, one item every delay_ms; it fails at item 2 when
            // n is 99; `Quit` aborts the connection on its second step.
            Call::Stream {
                method,
                arguments,
                cursor,
            } => {
                self.steps.fetch_add(1, Ordering::SeqCst);
                let at: u64 = cursor.map_or(0, |c| c.parse().unwrap_or(0));
                if method.eq_ignore_ascii_case("quit") {
                    if at == 1 {
                        host.abort();
                    }
                    return Ok(Answer::Step(StreamStep {
                        items: vec![at.to_string()],
                        next: Some(StreamNext {
                            cursor: (at + 1).to_string(),
                            delay: Duration::ZERO,
                        }),
                        error: None,
                    }));
                }
                let args: Vec<u64> = serde_json::from_str(arguments)
                    .map_err(|e| HubError::InvalidArguments(e.to_string()))?;
                let (n, delay) = (args[0], args.get(1).copied().unwrap_or(0));
                if n == 99 && at == 2 {
                    return Err(HubError::Rejected("no more".into()));
                }
                if n == 98 && at == 1 {
                    return Ok(Answer::Step(StreamStep {
                        items: vec!["1".into()],
                        next: None,
                        error: Some(HubError::Rejected("late".into())),
                    }));
                }
                Ok(Answer::Step(if at < n {
                    StreamStep {
                        items: vec![at.to_string()],
                        next: Some(StreamNext {
                            cursor: (at + 1).to_string(),
                            delay: Duration::from_millis(delay),
                        }),
                        error: None,
                    }
                } else {
                    StreamStep::default()
                }))
            }
            // `Sum(upload)` adds the items up; it stops early once past 1000.
            Call::Upload { event, state, .. } => {
                self.steps.fetch_add(1, Ordering::SeqCst);
                let total: i64 = state.map_or(0, |s| s.parse().unwrap_or(0));
                Ok(Answer::Upload(match event {
                    UploadEvent::Item(item) => {
                        let total = total + item.parse::<i64>().unwrap_or(0);
                        if total > 1000 {
                            UploadStep::Done(Some(total.to_string()))
                        } else {
                            UploadStep::Pending(total.to_string())
                        }
                    }
                    UploadEvent::End(None) => UploadStep::Done(Some(total.to_string())),
                    UploadEvent::End(Some(error)) => {
                        return Err(HubError::Rejected(format!("the client failed: {error}")));
                    }
                }))
            }
            Call::Describe => {
                let method = |name: &str, streaming, upload: bool| MethodInfo {
                    name: name.into(),
                    doc: None,
                    params: upload
                        .then(|| ParamInfo {
                            name: "numbers".into(),
                            schema: "{}".into(),
                            upload: true,
                        })
                        .into_iter()
                        .collect(),
                    returns: None,
                    streaming,
                };
                Ok(Answer::Methods(vec![
                    method("Echo", false, false),
                    method("Bye", false, false),
                    method("Count", true, false),
                    method("Quit", true, false),
                    method("Sum", false, true),
                ]))
            }
        }
    }
}

/// The dispatcher, with `Wait(x)` held until the test lets it through, then run as `Echo(x)`.
struct Paced {
    dispatcher: Arc<Dispatcher>,
    gate: Arc<Semaphore>,
    started: AtomicUsize,
}

impl HubCalls for Paced {
    fn connected(
        self: Arc<Self>,
        caller: Arc<Caller>,
    ) -> BoxFuture<'static, Result<(), ErrorText>> {
        self.dispatcher.clone().connected(caller)
    }

    fn invoke(
        self: Arc<Self>,
        caller: Arc<Caller>,
        method: String,
        arguments: Box<RawValue>,
    ) -> BoxFuture<'static, Replied<Option<String>>> {
        if method != "Wait" {
            return self.dispatcher.clone().invoke(caller, method, arguments);
        }
        Box::pin(async move {
            self.started.fetch_add(1, Ordering::SeqCst);
            if let Ok(permit) = self.gate.acquire().await {
                permit.forget();
            }
            self.dispatcher
                .clone()
                .invoke(caller, "Echo".into(), arguments)
                .await
        })
    }

    fn stream(
        self: Arc<Self>,
        caller: Arc<Caller>,
        method: Arc<str>,
        arguments: Arc<str>,
        cursor: Option<String>,
    ) -> BoxFuture<'static, Replied<Streamed>> {
        self.dispatcher
            .clone()
            .stream(caller, method, arguments, cursor)
    }

    fn check_upload(
        self: Arc<Self>,
        caller: Arc<Caller>,
        method: Arc<str>,
        sent: usize,
    ) -> BoxFuture<'static, Result<(), ErrorText>> {
        self.dispatcher.clone().check_upload(caller, method, sent)
    }

    fn upload(
        self: Arc<Self>,
        caller: Arc<Caller>,
        method: Arc<str>,
        arguments: Arc<str>,
        event: Uploaded,
        state: Option<String>,
    ) -> BoxFuture<'static, Replied<UploadStep>> {
        // `Hold` gates every upload event, to fill the buffer.
        let gate = self.gate.clone();
        let dispatcher = self.dispatcher.clone();
        let held = caller.connection_id.as_str() == "held";
        Box::pin(async move {
            if held && let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
            dispatcher
                .upload(caller, method, arguments, event, state)
                .await
        })
    }

    fn disconnected(
        self: Arc<Self>,
        caller: Arc<Caller>,
        error: Option<String>,
    ) -> BoxFuture<'static, ()> {
        self.dispatcher.clone().disconnected(caller, error)
    }
}

struct Harness {
    context: Arc<SessionContext>,
    registry: Arc<LocalRegistry>,
    hub: Arc<TestHub>,
    paced: Arc<Paced>,
}

fn harness(settings: Settings) -> Harness {
    let registry = Arc::new(LocalRegistry::new());
    let router = Router::new(Arc::new(MemoryBackplane::new(registry.clone())));
    let runtime = HubRuntime::new(
        RuntimeConfig {
            total_instances: 2,
            instances_per_hub: 2,
            ..RuntimeConfig::default()
        },
        Arc::new(MemoryState::new()),
    )
    .expect("runtime");
    let hub = Arc::new(TestHub::default());
    runtime.install_native(HubName::new("test"), hub.clone());
    let dispatcher = Arc::new(Dispatcher::new(Arc::new(runtime), router.clone(), false));
    let paced = Arc::new(Paced {
        dispatcher: dispatcher.clone(),
        gate: Arc::new(Semaphore::new(0)),
        started: AtomicUsize::new(0),
    });
    let context = Arc::new(SessionContext {
        hubs: paced.clone(),
        router,
        metrics: dispatcher.metrics().clone(),
        settings,
        durable: None,
        shutdown: CancellationToken::new(),
        draining: CancellationToken::new(),
        sessions: TaskTracker::new(),
    });
    Harness {
        context,
        registry,
        hub,
        paced,
    }
}

/// What the session wrote.
#[derive(Debug, PartialEq)]
enum Out {
    Frame(String),
    Closed,
}

/// The sink end of the fake transport; `stalled` never accepts anything, as a peer that
/// stopped reading.
struct TestSink {
    out: mpsc::UnboundedSender<Out>,
    stalled: bool,
    /// Flushes that succeed before every later one fails (a peer gone without a reset being
    /// seen yet); `None`: all succeed.
    flushes: Option<usize>,
}

impl Sink<Frame> for TestSink {
    type Error = String;

    fn poll_ready(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), String>> {
        if self.stalled {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn start_send(self: Pin<&mut Self>, frame: Frame) -> Result<(), String> {
        let text = String::from_utf8_lossy(frame.as_bytes()).into_owned();
        self.out.send(Out::Frame(text)).map_err(|e| e.to_string())
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), String>> {
        Poll::Ready(match &mut self.flushes {
            Some(0) => Err("broken pipe".into()),
            Some(left) => {
                *left -= 1;
                Ok(())
            }
            None => Ok(()),
        })
    }

    fn poll_close(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> Poll<Result<(), String>> {
        let _ = self.out.send(Out::Closed);
        Poll::Ready(Ok(()))
    }
}

/// Frames wait for the writer: no direct path.
impl super::Outlet for TestSink {}

use std::pin::Pin;

/// A client on the fake transport.
struct Client {
    send: mpsc::UnboundedSender<Inbound>,
    out: mpsc::UnboundedReceiver<Out>,
    records: std::collections::VecDeque<String>,
    closed: bool,
    task: JoinHandle<()>,
}

/// The incoming half: what the client sends; `PANIC` makes the transport panic, as a bug in
/// a transport would.
fn incoming(mut receiver: mpsc::UnboundedReceiver<Inbound>) -> impl Stream<Item = Inbound> + Unpin {
    futures_util::stream::poll_fn(move |cx| match receiver.poll_recv(cx) {
        Poll::Ready(Some(Ok(bytes))) if bytes.as_ref() == b"PANIC" => {
            panic!("the transport failed")
        }
        other => other,
    })
}

/// The incoming half of the fake transport (one type for every transport of a session).
type TestIncoming = Pin<Box<dyn Stream<Item = Inbound> + Send>>;

/// A fake transport: the client's side, and the pair a session takes.
fn transport(stalled: bool) -> (Client, (TestIncoming, TestSink)) {
    let (send, receiver) = mpsc::unbounded_channel();
    let (out_sender, out) = mpsc::unbounded_channel();
    let client = Client {
        send,
        out,
        records: Default::default(),
        closed: false,
        task: tokio::spawn(async {}),
    };
    let sink = TestSink {
        out: out_sender,
        stalled,
        flushes: None,
    };
    (client, (Box::pin(incoming(receiver)), sink))
}

/// A connection `id` of the test hub, over a WebSocket.
fn connection(id: &str) -> Connection {
    Connection {
        caller: Caller {
            hub: HubName::new("test"),
            connection_id: ConnectionId::new(id),
            user_id: None,
            claims: Vec::new(),
            request: None,
        },
        max_message_size: 32 * 1024,
        transport: TransportFeatures::WEBSOCKETS,
        token: None,
    }
}

fn start(h: &Harness, id: &str, stalled: bool) -> Client {
    let (client, (incoming, sink)) = transport(stalled);
    let task = tokio::spawn(serve(incoming, sink, connection(id), h.context.clone()));
    Client { task, ..client }
}

impl Client {
    fn send(&self, text: &str) {
        let _ = self.send.send(Ok(Bytes::from(text.to_owned())));
    }

    fn invoke(&self, id: &str, method: &str, argument: &str) {
        self.send(&format!(
            "{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"{method}\",\"arguments\":[{argument}]}}\u{1e}"
        ));
    }

    /// The next record written, or `None` once the session closed the transport.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(record) = self.records.pop_front() {
                return Some(record);
            }
            if self.closed {
                return None;
            }
            match self.out.recv().await {
                Some(Out::Frame(text)) => self.records.extend(
                    text.split('\u{1e}')
                        .filter(|r| !r.is_empty())
                        .map(str::to_owned),
                ),
                Some(Out::Closed) | None => self.closed = true,
            }
        }
    }

    /// The next record that is not a keep-alive ping.
    async fn next_not_ping(&mut self) -> Option<String> {
        loop {
            let record = self.next().await?;
            if record != PING {
                return Some(record);
            }
        }
    }

    /// Invokes `method` with one client stream `stream`.
    fn invoke_upload(&self, id: &str, method: &str, stream: &str) {
        self.send(&format!(
            "{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"{method}\",\"arguments\":[],\"streamIds\":[\"{stream}\"]}}\u{1e}"
        ));
    }

    fn item(&self, stream: &str, item: &str) {
        self.send(&format!(
            "{{\"type\":2,\"invocationId\":\"{stream}\",\"item\":{item}}}\u{1e}"
        ));
    }

    fn stream(&self, id: &str, method: &str, arguments: &str) {
        self.send(&format!(
            "{{\"type\":4,\"invocationId\":\"{id}\",\"target\":\"{method}\",\"arguments\":[{arguments}]}}\u{1e}"
        ));
    }

    async fn handshake(&mut self) {
        self.send(HANDSHAKE);
        assert_eq!(self.next().await.as_deref(), Some("{}"));
    }
}

fn stream_item(id: &str, item: &str) -> String {
    format!("{{\"type\":2,\"invocationId\":\"{id}\",\"item\":{item}}}")
}

fn void_completion(id: &str) -> String {
    format!("{{\"type\":3,\"invocationId\":\"{id}\"}}")
}

fn completion(id: &str, result: &str) -> String {
    format!("{{\"type\":3,\"invocationId\":\"{id}\",\"result\":{result}}}")
}

#[tokio::test(start_paused = true)]
async fn the_handshake_must_come_within_its_timeout() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    let started = Instant::now();
    assert_eq!(
        client.next().await.as_deref(),
        Some("{\"error\":\"Handshake was canceled.\"}")
    );
    assert_eq!(started.elapsed(), Duration::from_secs(15));
    assert_eq!(client.next().await, None, "then the transport is closed");
    assert!(!h.registry.contains(&HubName::new("test"), "c"));
    assert_eq!(h.hub.connected.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn pings_go_out_after_a_quiet_keep_alive_interval() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    let started = Instant::now();
    client.handshake().await;
    assert_eq!(client.next().await.as_deref(), Some(PING));
    assert_eq!(started.elapsed(), Duration::from_secs(15));
    // Traffic postpones the next ping: it comes 15 s after the last write.
    tokio::time::sleep(Duration::from_secs(10)).await;
    client.invoke("1", "Echo", "\"x\"");
    assert_eq!(client.next().await, Some(completion("1", "\"x\"")));
    let written = Instant::now();
    assert_eq!(client.next().await.as_deref(), Some(PING));
    assert_eq!(written.elapsed(), Duration::from_secs(15));
}

#[tokio::test(start_paused = true)]
async fn a_write_delay_joins_the_frames_queued_within_it_into_one_write() {
    let delay = Duration::from_millis(5);
    let h = harness(Settings {
        write_delay: delay,
        ..settings()
    });
    let mut client = start(&h, "c", false);
    client.handshake().await;
    let written = |out: Option<Out>| match out {
        Some(Out::Frame(text)) => text,
        other => panic!("expected a write, got {other:?}"),
    };
    // The first answer waits the delay; the second, queued 3 ms later, joins it.
    let started = Instant::now();
    client.invoke("1", "Echo", "\"a\"");
    tokio::time::sleep(Duration::from_millis(3)).await;
    client.invoke("2", "Echo", "\"b\"");
    assert_eq!(
        written(client.out.recv().await),
        format!(
            "{}\u{1e}{}\u{1e}",
            completion("1", "\"a\""),
            completion("2", "\"b\"")
        )
    );
    assert_eq!(started.elapsed(), delay);
    // One queued after the write goes out in the next one, again after the delay.
    let started = Instant::now();
    client.invoke("3", "Echo", "\"c\"");
    assert_eq!(
        written(client.out.recv().await),
        format!("{}\u{1e}", completion("3", "\"c\""))
    );
    assert_eq!(started.elapsed(), delay);
}

#[tokio::test(start_paused = true)]
async fn the_client_timeout_starts_with_the_first_ping() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    client.handshake().await;
    // A minute of silence from a client that never pinged: still connected. The echo that
    // follows is answered, on the same ordered path, so no Close came before it.
    tokio::time::sleep(Duration::from_secs(60)).await;
    client.invoke("1", "Echo", "1");
    assert_eq!(client.next_not_ping().await, Some(completion("1", "1")));
    client.send("{\"type\":6}\u{1e}");
    let last = Instant::now();
    assert_eq!(
        client.next_not_ping().await.as_deref(),
        Some(
            "{\"type\":7,\"error\":\"Connection closed with an error. OperationCanceledException: Client hasn't sent a message/ping within the configured ClientTimeoutInterval.\",\"allowReconnect\":true}"
        )
    );
    assert_eq!(last.elapsed(), Duration::from_secs(30));
    assert_eq!(client.next_not_ping().await, None);
    (&mut client.task).await.expect("the session ended");
    assert!(!h.registry.contains(&HubName::new("test"), "c"));
    assert_eq!(h.hub.disconnected.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_refills_at_its_rate() {
    let h = harness(Settings {
        rate_limit: 2,
        ..settings()
    });
    let mut client = start(&h, "c", false);
    client.handshake().await;
    // A burst of twice the rate passes; the next is refused.
    for i in 0..5 {
        client.invoke(&i.to_string(), "Echo", &i.to_string());
    }
    let refused = "{\"type\":3,\"invocationId\":\"4\",\"error\":\"Failed to invoke 'Echo' due to an error on the server. HubException: Rate limit exceeded: at most 2 invocations per second per connection.\"}";
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(client.next_not_ping().await.expect("answer"));
    }
    answers.sort();
    let mut expected: Vec<String> = (0..4)
        .map(|i| completion(&i.to_string(), &i.to_string()))
        .collect();
    expected.push(refused.to_owned());
    expected.sort();
    assert_eq!(answers, expected);
    // Half a second later one token is back: one passes, the next does not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.invoke("5", "Echo", "5");
    assert_eq!(client.next_not_ping().await, Some(completion("5", "5")));
    client.invoke("6", "Echo", "6");
    assert!(
        client
            .next_not_ping()
            .await
            .is_some_and(|r| r.contains("\"invocationId\":\"6\",\"error\":\"Failed to invoke 'Echo' due to an error on the server. HubException: Rate limit exceeded")),
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_cut_off_and_unregistered() {
    let h = harness(Settings {
        outbox_capacity: 8,
        ..settings()
    });
    let mut client = start(&h, "slow", true);
    client.send(HANDSHAKE);
    let hub = HubName::new("test");
    tokio::time::timeout(Duration::from_secs(1), async {
        while !h.registry.contains(&hub, "slow") {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("registered");
    for i in 0..20 {
        h.context.router.send(Envelope {
            hub: hub.clone(),
            target: Target::All,
            method: "m".into(),
            arguments: format!("[{i}]"),
        });
    }
    // The outbox filled: the session ends, and the writer stuck on the peer is given up on.
    tokio::time::timeout(Duration::from_secs(10), &mut client.task)
        .await
        .expect("the session ended")
        .expect("no panic");
    assert!(!h.registry.contains(&hub, "slow"));
    assert_eq!(h.hub.disconnected.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn drain_lets_the_running_call_answer_then_closes_allowing_reconnect() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    client.handshake().await;
    client.invoke("1", "Wait", "\"done\"");
    while h.paced.started.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    h.context.draining.cancel();
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.paced.gate.add_permits(1);
    assert_eq!(
        client.next_not_ping().await,
        Some(completion("1", "\"done\""))
    );
    assert_eq!(
        client.next_not_ping().await.as_deref(),
        Some("{\"type\":7,\"allowReconnect\":true}")
    );
    assert_eq!(client.next_not_ping().await, None);
    (&mut client.task).await.expect("the session ended");
    assert!(!h.registry.contains(&HubName::new("test"), "c"));
}

#[tokio::test(start_paused = true)]
async fn the_read_loop_keeps_reading_while_a_call_runs() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    client.handshake().await;
    client.send("{\"type\":6}\u{1e}");
    client.invoke("1", "Wait", "1");
    // Far longer than the client timeout: the pings keep arriving and are read.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(20)).await;
        client.send("{\"type\":6}\u{1e}");
    }
    h.paced.gate.add_permits(1);
    assert_eq!(client.next_not_ping().await, Some(completion("1", "1")));
    // And a Close sent while a call runs is read at once.
    client.invoke("2", "Wait", "2");
    client.send("{\"type\":7}\u{1e}");
    h.paced.gate.add_permits(1);
    assert_eq!(client.next_not_ping().await, Some(completion("2", "2")));
    assert_eq!(
        client.next_not_ping().await.as_deref(),
        Some("{\"type\":7}")
    );
    assert_eq!(client.next_not_ping().await, None);
}

#[tokio::test(start_paused = true)]
async fn invocations_run_one_at_a_time_by_default() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    client.handshake().await;
    client.invoke("1", "Wait", "1");
    client.invoke("2", "Wait", "2");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.paced.started.load(Ordering::SeqCst),
        1,
        "the second waits"
    );
    h.paced.gate.add_permits(2);
    assert_eq!(client.next_not_ping().await, Some(completion("1", "1")));
    assert_eq!(client.next_not_ping().await, Some(completion("2", "2")));
}

#[tokio::test(start_paused = true)]
async fn max_parallel_invocations_lets_that_many_run() {
    let h = harness(Settings {
        max_parallel_invocations: 2,
        ..settings()
    });
    let mut client = start(&h, "c", false);
    client.handshake().await;
    client.invoke("1", "Wait", "1");
    client.invoke("2", "Wait", "2");
    client.invoke("3", "Echo", "3");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.paced.started.load(Ordering::SeqCst), 2);
    // The third is held (and nothing after it is read) until one of the two finishes.
    h.paced.gate.add_permits(1);
    let mut answers = vec![
        client.next_not_ping().await.expect("answer"),
        client.next_not_ping().await.expect("answer"),
    ];
    answers.sort();
    assert!(answers.contains(&completion("3", "3")), "{answers:?}");
    h.paced.gate.add_permits(1);
    assert!(client.next_not_ping().await.is_some());
}

#[tokio::test(start_paused = true)]
async fn the_registry_entry_is_removed_even_if_the_session_panics() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    client.handshake().await;
    let hub = HubName::new("test");
    assert!(h.registry.contains(&hub, "c"));
    client.send("PANIC");
    let ended = (&mut client.task).await;
    assert!(ended.is_err_and(|e| e.is_panic()));
    assert!(!h.registry.contains(&hub, "c"), "unregistered by the guard");
    // The hub still hears of the disconnection (on a spawned task).
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(h.hub.disconnected.load(Ordering::SeqCst), 1);
    // And the transport is closed: the writer saw the last sender go.
    while client.next().await.is_some() {}
}

#[tokio::test]
async fn an_idle_session_stays_small() {
    // Every connection holds this future for its whole life: it is most of what an idle
    // connection costs (docs/performance.md, idle). Arguments must not stay in it once taken
    // apart, nor a future be held twice.
    let h = harness(settings());
    let (_send, receiver) = mpsc::unbounded_channel();
    let (out, _frames) = mpsc::unbounded_channel();
    let sink = TestSink {
        out,
        stalled: false,
        flushes: None,
    };
    let session = serve(incoming(receiver), sink, connection("c"), h.context.clone());
    let size = std::mem::size_of_val(&session);
    // 1,016 bytes before stateful reconnect, which added 40 (the transport may be absent, and
    // the read loop also watches for a new one); moving connections between hosts 8 more (the
    // pointer to the boxed hand-over); 1,048 before `Session::run` stopped holding `self`
    // twice, 904 after (debug test build).
    assert!(size <= 960, "the session future takes {size} bytes");
}

#[tokio::test]
async fn an_idle_writer_stays_small() {
    // Every connection's writer is a task holding this future for the connection's life: with
    // the session's, most of what an idle connection costs. What only a connection that may
    // resume does (racing a new transport, keeping frames, replaying, durable records) is
    // boxed, so the others do not carry its room.
    let (_sender, receiver) = crate::registry::outbox(8);
    let (out, _frames) = mpsc::unbounded_channel();
    let sink = TestSink {
        out,
        stalled: false,
        flushes: None,
    };
    let timing = writer::Timing {
        keep_alive: Duration::from_secs(15),
        write_delay: Duration::ZERO,
    };
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let writer = writer::run(
        sink,
        receiver,
        timing,
        CancellationToken::new(),
        None,
        metrics,
    );
    let size = std::mem::size_of_val(&writer);
    // 1,960 bytes before the stateful-reconnect paths were boxed and the arguments stopped
    // being held twice (docs/performance.md, thirteenth pass); 1,056 then.
    assert!(size <= 1200, "the writer future takes {size} bytes");
}

#[tokio::test(start_paused = true)]
async fn a_stream_sends_its_items_at_the_hubs_pace_then_completes() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    client.handshake().await;
    let started = Instant::now();
    client.stream("s1", "count", "3, 1000");
    for i in 0..3 {
        assert_eq!(
            client.next_not_ping().await,
            Some(stream_item("s1", &i.to_string()))
        );
    }
    assert_eq!(client.next_not_ping().await, Some(void_completion("s1")));
    // Item 0 at once, then one a second.
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    // The read loop kept reading: an invocation meanwhile is answered.
    client.invoke("2", "Echo", "5");
    assert_eq!(client.next_not_ping().await, Some(completion("2", "5")));
}

#[tokio::test(start_paused = true)]
async fn other_messages_are_answered_while_a_stream_waits() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    client.handshake().await;
    client.stream("s", "Count", "2, 60000");
    assert_eq!(client.next_not_ping().await, Some(stream_item("s", "0")));
    let started = Instant::now();
    client.invoke("e", "Echo", "1");
    assert_eq!(client.next_not_ping().await, Some(completion("e", "1")));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_stream_stops_the_hub_being_called_and_completes_it() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    client.handshake().await;
    client.stream("s", "Count", "1000, 1000");
    assert_eq!(client.next_not_ping().await, Some(stream_item("s", "0")));
    assert_eq!(client.next_not_ping().await, Some(stream_item("s", "1")));
    client.send("{\"type\":5,\"invocationId\":\"s\"}\u{1e}");
    assert_eq!(client.next_not_ping().await, Some(void_completion("s")));
    let steps = h.hub.steps.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        h.hub.steps.load(Ordering::SeqCst),
        steps,
        "no step after the cancel"
    );
    // A second cancel of the same id is ignored; the connection goes on.
    client.send("{\"type\":5,\"invocationId\":\"s\"}\u{1e}");
    client.invoke("e", "Echo", "2");
    assert_eq!(client.next_not_ping().await, Some(completion("e", "2")));
}

#[tokio::test(start_paused = true)]
async fn a_failing_step_ends_the_stream_with_aspnets_streaming_error() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    client.handshake().await;
    client.stream("s", "Count", "99");
    assert_eq!(client.next_not_ping().await, Some(stream_item("s", "0")));
    assert_eq!(client.next_not_ping().await, Some(stream_item("s", "1")));
    assert_eq!(
        client.next_not_ping().await.as_deref(),
        Some(
            "{\"type\":3,\"invocationId\":\"s\",\"error\":\"An error occurred on the server while streaming results. HubException: no more\"}"
        )
    );
    // A step may send items and then fail: the items go first.
    client.stream("t", "Count", "98");
    assert_eq!(client.next_not_ping().await, Some(stream_item("t", "0")));
    assert_eq!(client.next_not_ping().await, Some(stream_item("t", "1")));
    assert_eq!(
        client.next_not_ping().await.as_deref(),
        Some(
            "{\"type\":3,\"invocationId\":\"t\",\"error\":\"An error occurred on the server while streaming results. HubException: late\"}"
        )
    );
}

#[tokio::test(start_paused = true)]
async fn streaming_and_plain_methods_refuse_the_other_kind_of_invocation() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    client.handshake().await;
    client.invoke("1", "Count", "3");
    assert_eq!(
        client.next_not_ping().await.as_deref(),
        Some(
            "{\"type\":3,\"invocationId\":\"1\",\"error\":\"The client attempted to invoke the streaming 'Count' method with a non-streaming invocation.\"}"
        )
    );
    client.stream("2", "Echo", "3");
    assert_eq!(
        client.next_not_ping().await.as_deref(),
        Some(
            "{\"type\":3,\"invocationId\":\"2\",\"error\":\"The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation.\"}"
        )
    );
    client.stream("3", "Nope", "");
    assert_eq!(
        client.next_not_ping().await.as_deref(),
        Some(
            "{\"type\":3,\"invocationId\":\"3\",\"error\":\"Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist.\"}"
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_id_in_use_is_refused_with_aspnets_text() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    client.handshake().await;
    client.stream("s", "Count", "5, 60000");
    assert_eq!(client.next_not_ping().await, Some(stream_item("s", "0")));
    client.stream("s", "Count", "5");
    assert_eq!(
        client.next_not_ping().await.as_deref(),
        Some(
            "{\"type\":3,\"invocationId\":\"s\",\"error\":\"Invocation ID 's' is already in use.\"}"
        )
    );
}

#[tokio::test(start_paused = true)]
async fn an_abort_sends_the_completion_then_closes_without_reconnect() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    client.handshake().await;
    client.invoke("1", "Bye", "");
    assert_eq!(
        client.next_not_ping().await,
        Some(completion("1", "\"bye\""))
    );
    assert_eq!(
        client.next_not_ping().await.as_deref(),
        Some("{\"type\":7}")
    );
    assert_eq!(client.next_not_ping().await, None);
    let mut streamer = start(&h, "d", false);
    streamer.handshake().await;
    streamer.stream("s", "Quit", "");
    assert_eq!(streamer.next_not_ping().await, Some(stream_item("s", "0")));
    assert_eq!(streamer.next_not_ping().await, Some(stream_item("s", "1")));
    assert_eq!(streamer.next_not_ping().await, Some(void_completion("s")));
    assert_eq!(
        streamer.next_not_ping().await.as_deref(),
        Some("{\"type\":7}")
    );
    assert_eq!(streamer.next_not_ping().await, None);
}

#[tokio::test(start_paused = true)]
async fn an_upload_gets_its_items_in_order_and_answers_at_its_end() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    client.handshake().await;
    client.invoke_upload("1", "Sum", "s");
    for n in [1, 2, 3] {
        client.item("s", &n.to_string());
    }
    client.send("{\"type\":3,\"invocationId\":\"s\"}\u{1e}");
    assert_eq!(client.next_not_ping().await, Some(completion("1", "6")));
    // An item for a stream nobody opened is ignored, as ASP.NET does; the connection goes on.
    client.item("nobody", "5");
    client.invoke("2", "Echo", "7");
    assert_eq!(client.next_not_ping().await, Some(completion("2", "7")));
}

#[tokio::test(start_paused = true)]
async fn an_upload_can_finish_early_and_later_items_are_dropped() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    client.handshake().await;
    client.invoke_upload("1", "Sum", "s");
    client.item("s", "999");
    client.item("s", "5");
    assert_eq!(client.next_not_ping().await, Some(completion("1", "1004")));
    client.item("s", "1");
    client.send("{\"type\":3,\"invocationId\":\"s\"}\u{1e}");
    client.invoke("2", "Echo", "1");
    assert_eq!(client.next_not_ping().await, Some(completion("2", "1")));
}

#[tokio::test(start_paused = true)]
async fn the_client_failing_its_stream_fails_the_call() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    client.handshake().await;
    client.invoke_upload("1", "Sum", "s");
    client.item("s", "1");
    client.send("{\"type\":3,\"invocationId\":\"s\",\"error\":\"gave up\"}\u{1e}");
    assert_eq!(
        client.next_not_ping().await.as_deref(),
        Some(
            "{\"type\":3,\"invocationId\":\"1\",\"error\":\"An unexpected error occurred invoking 'Sum' on the server. HubException: the client failed: gave up\"}"
        )
    );
}

#[tokio::test(start_paused = true)]
async fn stream_counts_that_do_not_match_get_aspnets_text() {
    let h = harness(settings());
    let mut client = start(&h, "c", false);
    client.handshake().await;
    client.invoke("1", "Sum", "");
    assert_eq!(
        client.next_not_ping().await.as_deref(),
        Some(
            "{\"type\":3,\"invocationId\":\"1\",\"error\":\"An unexpected error occurred invoking 'Sum' on the server. HubException: Client sent 0 stream(s), Hub method expects 1.\"}"
        )
    );
    client.invoke_upload("2", "Echo", "s");
    assert_eq!(
        client.next_not_ping().await.as_deref(),
        Some(
            "{\"type\":3,\"invocationId\":\"2\",\"error\":\"An unexpected error occurred invoking 'Echo' on the server. HubException: Client sent 1 stream(s), Hub method expects 0.\"}"
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_upload_buffer_stops_the_read_loop_until_the_hub_takes_an_item() {
    let h = harness(settings());
    let mut client = start(&h, "held", false);
    client.handshake().await;
    client.invoke_upload("1", "Sum", "s");
    // The hub takes the first item and is held there; ten more fill the buffer; the twelfth
    // waits in the session, which then reads nothing more.
    for _ in 0..12 {
        client.item("s", "1");
    }
    client.invoke("e", "Echo", "1");
    // Paused time moves on only once every task waits: the session is as stuck as it gets.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.hub.steps.load(Ordering::SeqCst), 0, "the hub is held");
    while let Ok(Out::Frame(text)) = client.out.try_recv() {
        assert!(
            text.split('\u{1e}').all(|r| r.is_empty() || r == PING),
            "nothing but pings while blocked: {text}"
        );
    }
    // Let every event through: the items are summed, and the read loop goes on to the Echo.
    h.paced.gate.add_permits(1000);
    client.send("{\"type\":3,\"invocationId\":\"s\"}\u{1e}");
    let mut answers = vec![
        client.next_not_ping().await.expect("answer"),
        client.next_not_ping().await.expect("answer"),
    ];
    answers.sort();
    assert_eq!(answers, [completion("1", "12"), completion("e", "1")]);
}

#[tokio::test(start_paused = true)]
async fn streams_past_the_limit_are_refused_and_others_go_on() {
    let h = harness(Settings {
        max_streams: 2,
        ..settings()
    });
    let mut client = start(&h, "c", false);
    client.handshake().await;
    client.stream("a", "Count", "5, 60000");
    client.invoke_upload("b", "Sum", "s");
    assert_eq!(client.next_not_ping().await, Some(stream_item("a", "0")));
    client.stream("c", "Count", "5, 60000");
    assert_eq!(
        client.next_not_ping().await.as_deref(),
        Some(
            "{\"type\":3,\"invocationId\":\"c\",\"error\":\"An unexpected error occurred invoking 'Count' on the server. HubException: Too many streams: at most 2 may be open at once per connection.\"}"
        )
    );
    // Plain invocations are not streams.
    client.invoke("e", "Echo", "1");
    assert_eq!(client.next_not_ping().await, Some(completion("e", "1")));
    // Once one ends, another may open.
    client.send("{\"type\":3,\"invocationId\":\"s\"}\u{1e}");
    assert_eq!(client.next_not_ping().await, Some(completion("b", "0")));
    client.stream("d", "Count", "1");
    assert_eq!(client.next_not_ping().await, Some(stream_item("d", "0")));
    assert_eq!(client.next_not_ping().await, Some(void_completion("d")));
}

/// A connection negotiated with stateful reconnect, and where its later transports go.
fn start_resumable(
    h: &Harness,
    id: &str,
    (client, (incoming, sink)): (Client, (TestIncoming, TestSink)),
) -> (
    Client,
    handoff::HandoffSender<Attachment<TestIncoming, TestSink>>,
) {
    let (attach, attachments) = handoff::shut_handoff();
    let task = tokio::spawn(serve_resumable(
        incoming,
        sink,
        connection(id),
        h.context.clone(),
        attachments,
    ));
    (Client { task, ..client }, attach)
}

/// Resumes on a new transport, which gets the server's Sequence (1) and the replay of the
/// completion of `Echo("one")`, its only numbered message.
async fn resume_with_echo_one(
    attach: &handoff::HandoffSender<Attachment<TestIncoming, TestSink>>,
) -> Client {
    let (mut back, pair) = transport(false);
    let (incoming, sink) = pair;
    let attachment = Attachment::Transport(incoming, sink);
    assert!(attach.send(attachment).is_ok(), "the session takes it");
    assert_eq!(
        back.next().await.as_deref(),
        Some("{\"type\":9,\"sequenceId\":1}")
    );
    assert_eq!(
        back.next().await.as_deref(),
        Some("{\"type\":3,\"invocationId\":\"1\",\"result\":\"one\"}")
    );
    back
}

const HANDSHAKE_V2: &str = "{\"protocol\":\"json\",\"version\":2}\u{1e}";

#[tokio::test(start_paused = true)]
async fn a_cut_session_resumes_on_a_new_transport_within_the_window_and_ends_after_it() {
    let h = harness(settings());
    let (mut client, attach) = start_resumable(&h, "c", transport(false));
    client.send(HANDSHAKE_V2);
    assert_eq!(client.next().await.as_deref(), Some("{}"));
    client.invoke("1", "Echo", "\"one\"");
    // The completion, and the Ack of message 1 (in either order: the Ack goes out at once).
    let mut records = vec![
        client.next_not_ping().await.unwrap_or_default(),
        client.next_not_ping().await.unwrap_or_default(),
    ];
    records.sort();
    assert_eq!(
        records,
        [
            "{\"type\":3,\"invocationId\":\"1\",\"result\":\"one\"}",
            "{\"type\":8,\"sequenceId\":1}"
        ]
    );
    // The transport is cut (an error, not a close); the client comes back 14 s later.
    let _ = client.send.send(Err(TransportError("reset".into())));
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_eq!(
        h.hub.disconnected.load(Ordering::SeqCst),
        0,
        "still waiting"
    );
    let mut back = resume_with_echo_one(&attach).await;
    // The client's resent message 1 is skipped; its message 2 is answered.
    back.send("{\"type\":9,\"sequenceId\":1}\u{1e}");
    back.invoke("1", "Echo", "\"one\"");
    back.invoke("2", "Echo", "\"two\"");
    // And the server acknowledges message 2 at once: its last Ack was more than a second ago.
    let started = Instant::now();
    let mut records = vec![
        back.next_not_ping().await.unwrap_or_default(),
        back.next_not_ping().await.unwrap_or_default(),
    ];
    records.sort();
    assert_eq!(
        records,
        [
            "{\"type\":3,\"invocationId\":\"2\",\"result\":\"two\"}",
            "{\"type\":8,\"sequenceId\":2}"
        ]
    );
    assert_eq!(started.elapsed(), Duration::ZERO);
    // Acks come at most once a second.
    back.invoke("3", "Echo", "\"three\"");
    assert_eq!(
        back.next_not_ping().await.as_deref(),
        Some("{\"type\":3,\"invocationId\":\"3\",\"result\":\"three\"}")
    );
    assert_eq!(
        back.next_not_ping().await.as_deref(),
        Some("{\"type\":8,\"sequenceId\":3}")
    );
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    // Cut again, and nobody comes back: the window (15 s) ends the connection.
    let _ = back.send.send(Err(TransportError("reset".into())));
    let cut = Instant::now();
    client.task.await.expect("the session ends");
    assert_eq!(cut.elapsed(), h.context.settings.reconnect_window);
    assert_eq!(h.hub.disconnected.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_closed_transport_ends_a_resumable_session_at_once() {
    let h = harness(settings());
    let (mut client, _attach) = start_resumable(&h, "c", transport(false));
    client.send(HANDSHAKE_V2);
    assert_eq!(client.next().await.as_deref(), Some("{}"));
    // The end of the stream is a WebSocket close: the client meant to leave.
    let Client { send, task, .. } = client;
    drop(send);
    let closed = Instant::now();
    task.await.expect("the session ends");
    assert_eq!(closed.elapsed(), Duration::ZERO);
    assert_eq!(h.hub.disconnected.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn numbered_messages_wait_for_a_silent_client_half_a_second() {
    let h = harness(settings());
    let (mut client, _attach) = start_resumable(&h, "c", transport(false));
    client.send(HANDSHAKE_V2);
    assert_eq!(client.next().await.as_deref(), Some("{}"));
    let answered = Instant::now();
    let hub = HubName::new("test");
    while !h.registry.contains(&hub, "c") {
        tokio::task::yield_now().await;
    }
    // A message for the connection, whose client has not spoken since its handshake.
    h.context.router.send(Envelope {
        hub,
        target: Target::Connection("c".into()),
        method: "note".into(),
        arguments: "[1]".into(),
    });
    assert_eq!(
        client.next_not_ping().await.as_deref(),
        Some("{\"type\":1,\"target\":\"note\",\"arguments\":[1]}")
    );
    assert_eq!(answered.elapsed(), super::resume::HEAR_WITHIN);
}

#[tokio::test(start_paused = true)]
async fn a_keep_alive_that_cannot_be_written_ends_a_plain_session() {
    let h = harness(settings());
    // The handshake's answer is flushed; the first keep-alive Ping (15 s later) is not.
    let (client, (incoming, mut sink)) = transport(false);
    sink.flushes = Some(1);
    let task = tokio::spawn(serve(incoming, sink, connection("c"), h.context.clone()));
    client.send(HANDSHAKE);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the session ends")
        .expect("no panic");
    assert_eq!(started.elapsed(), h.context.settings.keep_alive);
    assert_eq!(h.hub.disconnected.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_transport_that_fails_to_write_is_let_go_and_the_client_resumes() {
    let h = harness(settings());
    // A socket whose writes fail after the handshake's answer while its reads go on.
    let (client, (incoming, mut sink)) = transport(false);
    sink.flushes = Some(1);
    let (mut client, attach) = start_resumable(&h, "c", (client, (incoming, sink)));
    client.send(HANDSHAKE_V2);
    assert_eq!(client.next().await.as_deref(), Some("{}"));
    client.invoke("1", "Echo", "\"one\"");
    // The session lets the transport go (the client's side sees it end) and waits.
    tokio::time::timeout(Duration::from_secs(1), client.send.closed())
        .await
        .expect("the transport is let go");
    assert_eq!(h.hub.disconnected.load(Ordering::SeqCst), 0);
    resume_with_echo_one(&attach).await;
}
