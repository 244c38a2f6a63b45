// Hub contract 0.2 with the official client: streams to the caller (items, pace, completion,
// dispose, errors, traps, the wrong kind of invocation), Context.Abort(), the connecting request,
// exception type names, and a hub built against contract 0.1 beside them. Streams run over every
// transport and protocol.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { COMBINATIONS, connect, connectOver, record, signalR, waitUntil } from "./support/client.mjs";
import { startHost } from "./support/host.mjs";
import { startRedis } from "./support/redis.mjs";

/** Subscribes to a stream and resolves with its items once it completes (rejects on error). */
function collect(stream) {
  return new Promise((resolve, reject) => {
    const items = [];
    stream.subscribe({
      next: (item) => items.push(item),
      complete: () => resolve(items),
      error: (error) => reject(error),
    });
  });
}

/** Resolves with `n` items of a stream, then disposes of the subscription. */
function take(stream, n) {
  return new Promise((resolve, reject) => {
    const items = [];
    const subscription = stream.subscribe({
      next: (item) => {
        items.push(item);
        if (items.length === n) {
          subscription.dispose();
          resolve(items);
        }
      },
      complete: () => reject(new Error(`completed after ${items.length} items`)),
      error: reject,
    });
  });
}

const streamingError = "An error occurred on the server while streaming results.";

describe("streams to the caller", () => {
  let host;
  before(async () => {
    host = await startHost({ hubs: ["features", "chat"] });
  });
  after(() => host.stop());

  for (const [transport, protocol] of COMBINATIONS) {
    it(`${transport}/${protocol}: items in order at the hub's pace, then completion`, async () => {
      const c = await connectOver(`${host.url}/features`, { transport, protocol });
      const started = Date.now();
      assert.deepEqual(await collect(c.stream("Counter", 5, 40)), [0, 1, 2, 3, 4]);
      // Four waits of 40 ms between five items.
      assert.ok(Date.now() - started >= 160, `took ${Date.now() - started} ms`);
      const values = [1, "two", { three: [3] }, null, true];
      assert.deepEqual(await collect(c.stream("Items", values)), values);
      assert.deepEqual(await collect(c.stream("Counter", 0, 0)), []);
      await c.stop();
    });

    it(`${transport}/${protocol}: a step that fails ends the stream with ASP.NET's text`, async () => {
      const c = await connectOver(`${host.url}/features`, { transport, protocol });
      const items = [];
      await assert.rejects(
        new Promise((resolve, reject) =>
          c.stream("FailAt", 3).subscribe({ next: (i) => items.push(i), complete: resolve, error: reject }),
        ),
        { message: `${streamingError} HubException: Stopped at 3.` },
      );
      assert.deepEqual(items, [0, 1, 2]);
      assert.equal(c.state, signalR.HubConnectionState.Connected);
      await c.stop();
    });
  }

  it("the chat example streams Counter(count, delay_ms)", async () => {
    const c = await connect(`${host.url}/chat`);
    assert.deepEqual(await collect(c.stream("Counter", 3, 10)), [0, 1, 2]);
    await assert.rejects(collect(c.stream("Counter", 5000, 1)), {
      message:
        "An unexpected error occurred invoking 'Counter' on the server. HubException: Fast counters stop at 1000: use a delay of 10 ms or more.",
    });
    await c.stop();
  });

  it("dispose stops the stream and the hub is no longer called", async () => {
    const c = await connect(`${host.url}/features`);
    assert.deepEqual(await take(c.stream("Counted", "disposed", 200), 3), [1, 2, 3]);
    // The sentinel: a second stream on the same connection, running for five of the first
    // one's periods. Had the first kept running, it would have taken five more steps meanwhile.
    assert.deepEqual(await take(c.stream("Counted", "sentinel", 100), 10), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const steps = await c.invoke("Steps", "disposed");
    // The three sent, and at most one more that was running when the cancel came.
    assert.ok(steps === 3 || steps === 4, `the disposed stream took ${steps} steps`);
    assert.equal(c.state, signalR.HubConnectionState.Connected);
    await c.stop();
  });

  it("a trap mid-stream ends it with the generic text and leaves the connection open", async () => {
    const c = await connect(`${host.url}/features`);
    await assert.rejects(collect(c.stream("TrapAt", 2)), { message: streamingError });
    assert.deepEqual(await collect(c.stream("Counter", 2, 0)), [0, 1]);
    // The host's log comes through its stdout, which may be read after the client's frames.
    await waitUntil(() => host.logsMatching("trapped at 2").length > 0, "the panic in the log");
    await c.stop();
  });

  it("an error before the stream starts is an invocation error", async () => {
    const c = await connect(`${host.url}/features`);
    await assert.rejects(collect(c.stream("Counter", 200000, 0)), {
      message: "An unexpected error occurred invoking 'Counter' on the server. HubException: Too many items.",
    });
    await assert.rejects(collect(c.stream("Counter", "x", 0)), {
      message:
        "Failed to invoke 'Counter' due to an error on the server. InvalidDataException: Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked.",
    });
    await c.stop();
  });

  it("invoking a streaming method, or streaming a plain one, gets ASP.NET's texts", async () => {
    const c = await connect(`${host.url}/features`);
    await assert.rejects(c.invoke("Counter", 1, 0), {
      message: "The client attempted to invoke the streaming 'Counter' method with a non-streaming invocation.",
    });
    await assert.rejects(collect(c.stream("Add", 1, 2)), {
      message: "The client attempted to invoke the non-streaming 'Add' method with a streaming invocation.",
    });
    await assert.rejects(collect(c.stream("Nope")), {
      message: "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist.",
    });
    // `send` of a streaming method: no answer, and the connection goes on.
    await c.send("Counter", 1, 0);
    assert.equal(await c.invoke("Add", 1, 0.5), 1.5);
    await c.stop();
  });

  it("a 0.1 hub's methods cannot be streamed", async () => {
    const h = await startHost({ hubs: ["rogue"] });
    const c = await connect(`${h.url}/rogue`);
    await assert.rejects(collect(c.stream("Echo", 1)), {
      message: "The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation.",
    });
    await c.stop();
    await h.stop();
  });
});

describe("streams with detailed errors", () => {
  let host;
  before(async () => {
    host = await startHost({ hubs: ["features"], args: ["--detailed-errors"] });
  });
  after(() => host.stop());

  it("an unexpected failure names its exception type, in a stream and in an invocation", async () => {
    const c = await connect(`${host.url}/features`);
    await assert.rejects(collect(c.stream("ExplodeAt", 1)), {
      message: `${streamingError} InvalidOperationException: boom`,
    });
    await assert.rejects(c.invoke("Explode"), {
      message: "An unexpected error occurred invoking 'Explode' on the server. InvalidOperationException: boom",
    });
    await assert.rejects(c.invoke("Parse", "twelve"), {
      message: "An unexpected error occurred invoking 'Parse' on the server. ParseIntError: invalid digit found in string",
    });
    await c.stop();
  });

  it("without detailed errors the type stays hidden", async () => {
    const h = await startHost({ hubs: ["features"] });
    const c = await connect(`${h.url}/features`);
    await assert.rejects(c.invoke("Explode"), {
      message: "An unexpected error occurred invoking 'Explode' on the server.",
    });
    await c.stop();
    await h.stop();
  });
});

describe("streams on hosts sharing Redis", () => {
  let redis;
  let hosts;
  before(async () => {
    redis = await startRedis();
    hosts = await Promise.all(
      [0, 1].map(() => startHost({ hubs: ["features", "chat"], args: ["--redis", redis.url] })),
    );
  });
  after(async () => {
    await Promise.all(hosts.map((h) => h.stop()));
    await redis.stop();
  });

  it("each host streams to its own clients while they chat across hosts", async () => {
    const [a, b] = await Promise.all(hosts.map((h) => connect(`${h.url}/chat`)));
    const heard = record(b, "broadcastMessage");
    const [fromA, fromB] = await Promise.all([
      collect(a.stream("Counter", 4, 10)),
      collect(b.stream("Counter", 3, 10)),
      a.invoke("Send", "ana", "hi"),
    ]);
    assert.deepEqual(fromA, [0, 1, 2, 3]);
    assert.deepEqual(fromB, [0, 1, 2]);
    await waitUntil(() => heard.length === 1, "the message through Redis");
    assert.deepEqual(heard, [["ana", "hi"]]);
    await Promise.all([a.stop(), b.stop()]);
  });

  it("an upload on one host, its result announced on both", async () => {
    const a = await connect(`${hosts[0].url}/features`);
    const b = await connectOver(`${hosts[1].url}/features`, { protocol: "messagepack" });
    const heard = record(a, "summed");
    const subject = new signalR.Subject();
    const total = b.invoke("SumUpTo", 1000, subject);
    for (let i = 1; i <= 30; i++) subject.next(i);
    subject.complete();
    assert.equal(await total, 465);
    await waitUntil(() => heard.length === 1, "the total through Redis");
    assert.deepEqual(heard, [[465]]);
    await Promise.all([a.stop(), b.stop()]);
  });
});

describe("Context.Abort()", () => {
  let host;
  before(async () => {
    host = await startHost({ hubs: ["features"] });
  });
  after(() => host.stop());

  for (const [transport, protocol] of COMBINATIONS) {
    it(`${transport}/${protocol}: the caller gets its answer, then a Close that does not reconnect`, async () => {
      let reconnecting = 0;
      const c = await connectOver(`${host.url}/features`, {
        transport,
        protocol,
        configure: (b) => b.withAutomaticReconnect([0, 0, 0]),
      });
      c.onreconnecting(() => reconnecting++);
      assert.equal(await c.invoke("Leave"), "bye");
      assert.equal(await c.closed, undefined, "closed without an error");
      assert.equal(c.state, signalR.HubConnectionState.Disconnected);
      assert.equal(reconnecting, 0);
    });
  }

  it("a stream that aborts sends its items and completion first", async () => {
    const c = await connect(`${host.url}/features`, {}, (b) => b.withAutomaticReconnect([0]));
    assert.deepEqual(await collect(c.stream("LeaveStreaming")), [0, 1]);
    assert.equal(await c.closed, undefined);
    assert.equal(c.state, signalR.HubConnectionState.Disconnected);
  });
});

describe("the connecting request", () => {
  let host;
  before(async () => {
    host = await startHost({ hubs: ["features"] });
  });
  after(() => host.stop());

  for (const [transport, protocol] of COMBINATIONS) {
    it(`${transport}/${protocol}: headers, query and cookies reach the hub`, async () => {
      const c = await connectOver(`${host.url}/features?room=blue`, {
        transport,
        protocol,
        options: { headers: { Cookie: "flavor=mint; other=1" } },
      });
      const info = await c.invoke("RequestInfo");
      // Node's client names itself in User-Agent (browsers, which cannot, in X-SignalR-User-Agent).
      assert.match(info.userAgent, /^Microsoft SignalR\/\d+\.\d+ \(.*NodeJS/);
      assert.equal(info.signalrAgent, null);
      assert.equal(info.room, "blue");
      assert.equal(info.id, null, "the transport's own parameters are left out");
      assert.equal(info.flavor, "mint");
      await c.stop();
    });
  }
});

describe("a hub built against contract 0.1", () => {
  let host;
  before(async () => {
    host = await startHost({ hubs: ["rogue"], args: ["--detailed-errors"] });
  });
  after(() => host.stop());

  it("keeps loading and working beside 0.2: answers, sends, failures", async () => {
    const [a, b] = await Promise.all([connect(`${host.url}/rogue`), connect(`${host.url}/rogue`)]);
    const heard = record(b, "fromLegacy");
    assert.deepEqual(await a.invoke("Echo", "x", 2), ["x", 2]);
    await a.invoke("Send", "hello", 1);
    // b's own call is answered after anything sent to it before.
    assert.deepEqual(await b.invoke("Echo", "sentinel"), ["sentinel"]);
    assert.deepEqual(heard, [["hello", 1]]);
    await assert.rejects(a.invoke("Fail"), {
      message: "An unexpected error occurred invoking 'Fail' on the server. Exception: the 0.1 hub failed",
    });
    await Promise.all([a.stop(), b.stop()]);
  });
});

describe("streams from the caller (uploads)", () => {
  let host;
  before(async () => {
    host = await startHost({ hubs: ["features", "chat"] });
  });
  after(() => host.stop());

  /** Invokes `method` with `args` and a subject fed `items`, then completed. */
  function upload(connection, method, args, items) {
    const subject = new signalR.Subject();
    const call = connection.invoke(method, ...args, subject);
    for (const item of items) subject.next(item);
    subject.complete();
    return call;
  }

  for (const [transport, protocol] of COMBINATIONS) {
    it(`${transport}/${protocol}: items reach the hub in order, past its 10-item buffer`, async () => {
      const c = await connectOver(`${host.url}/features`, { transport, protocol });
      const words = Array.from({ length: 60 }, (_, i) => `w${i}`);
      assert.deepEqual(await upload(c, "Words", [], words), words);
      assert.deepEqual(await upload(c, "Words", [], []), []);
      await c.stop();
    });
  }

  it("the chat example's Sum adds up what the caller streams", async () => {
    const c = await connect(`${host.url}/chat`);
    assert.equal(await upload(c, "Sum", [], [1, 2, 3.5]), 6.5);
    await c.stop();
  });

  it("what the method does after its fold happens once, at the end", async () => {
    const c = await connect(`${host.url}/features`);
    const summed = record(c, "summed");
    assert.equal(await upload(c, "SumUpTo", [100], [1, 2, 3]), 6);
    // The completion comes after the hub's sends: had the send run per item, they would be here.
    assert.deepEqual(summed, [[6]]);
    await c.stop();
  });

  it("a hub that refuses mid-upload answers at once; later items are dropped", async () => {
    const c = await connect(`${host.url}/features`);
    await assert.rejects(upload(c, "SumUpTo", [10], [4, 5, 6, 7, 8]), {
      message: "An unexpected error occurred invoking 'SumUpTo' on the server. HubException: Past 10.",
    });
    assert.equal(await c.invoke("Add", 1, 1), 2);
    await c.stop();
  });

  it("a client that fails its stream fails the call; the connection goes on", async () => {
    const c = await connect(`${host.url}/chat`);
    const subject = new signalR.Subject();
    const call = c.invoke("Sum", subject);
    subject.next(1);
    subject.error(new Error("changed my mind"));
    await assert.rejects(call, { message: "An unexpected error occurred invoking 'Sum' on the server." });
    assert.equal(await c.invoke("Echo", "still here"), "still here");
    await c.stop();
  });

  it("an item of the wrong type fails the call", async () => {
    const c = await connect(`${host.url}/features`);
    await assert.rejects(upload(c, "Words", [], ["a", 5]), {
      message: "An unexpected error occurred invoking 'Words' on the server.",
    });
    await c.stop();
  });

  it("stream counts that do not fit the method get ASP.NET's texts", async () => {
    const c = await connect(`${host.url}/chat`);
    await assert.rejects(c.invoke("Sum"), {
      message: "An unexpected error occurred invoking 'Sum' on the server. HubException: Client sent 0 stream(s), Hub method expects 1.",
    });
    await assert.rejects(upload(c, "Echo", [], ["x"]), {
      message: "An unexpected error occurred invoking 'Echo' on the server. HubException: Client sent 1 stream(s), Hub method expects 0.",
    });
    await c.stop();
  });

  it("with detailed errors, the client's stream error and a binding failure are named", async () => {
    const h = await startHost({ hubs: ["features", "chat"], args: ["--detailed-errors"] });
    const c = await connect(`${h.url}/features`);
    await assert.rejects(upload(c, "Words", [], ["a", 5]), {
      message: "An unexpected error occurred invoking 'Words' on the server. Exception: Failed to bind Stream message.",
    });
    const chat = await connect(`${h.url}/chat`);
    const subject = new signalR.Subject();
    const call = chat.invoke("Sum", subject);
    subject.error(new Error("changed my mind"));
    await assert.rejects(call, {
      message: "An unexpected error occurred invoking 'Sum' on the server. Exception: changed my mind",
    });
    await Promise.all([c.stop(), chat.stop()]);
    await h.stop();
  });
});
