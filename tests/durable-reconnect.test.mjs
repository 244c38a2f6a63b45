// Durable reconnect (`--durable-reconnect`): what a stateful-reconnect connection has not
// acknowledged is kept in Redis, so a client whose host was killed (SIGKILL: no handover, no
// goodbye) resumes on another host with the same connection, its groups and its user, and
// loses nothing, including what was sent to it while no host held it.
//
// Clients reach their host through a TCP proxy (tests/support/proxy.mjs) that a test points at
// the surviving host before killing the first one, or holds closed while nobody owns it.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { connect, MessagePackHubProtocol, record, signalR, waitUntil } from "./support/client.mjs";
import { metric, startHost, waitReady } from "./support/host.mjs";
import { startProxy } from "./support/proxy.mjs";
import { jwt } from "./support/jwt.mjs";
import { startRedis, startRedisCluster } from "./support/redis.mjs";

const SECRET = "durable-reconnect-test-secret";
/** A bearer token for `user`, valid for ten minutes. */
const bearer = (user) => jwt({ sub: user, exp: Math.floor(Date.now() / 1000) + 600 }, SECRET);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** 0..n-1 as strings. */
const range = (n, prefix = "") => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

/**
 * The official client built `.withStatefulReconnect().withAutomaticReconnect()` (as in
 * stateful-reconnect.test.mjs), as `user` if given, with hooks.
 */
async function resilient(url, { protocol = "json", user } = {}) {
  const events = { reconnecting: 0, reconnected: [] };
  const options = { transport: signalR.HttpTransportType.WebSockets };
  if (user) options.accessTokenFactory = () => bearer(user);
  const connection = await connect(url, options, (builder) => {
    let b = builder.withStatefulReconnect().withAutomaticReconnect([0, 200, 500, 1000, 2000]);
    if (protocol === "messagepack") b = b.withHubProtocol(new MessagePackHubProtocol());
    return b;
  });
  connection.onreconnecting(() => events.reconnecting++);
  connection.onreconnected((id) => events.reconnected.push(id));
  return { connection, events };
}

// The four ways a message reaches the moving client, by the first letter of its text:
// p to its connection id, u to its user, r to its room, a to all.
const KINDS = ["p", "u", "r", "a"];

/** What `connection` receives from senders tagged `tag`, by kind (`p0`…, `pend`). */
function inbox(connection, tag = "B") {
  const got = { p: [], u: [], r: [], a: [] };
  const numbered = /^[pura](\d+|end)$/;
  connection.on("privateMessage", (_from, m) => numbered.test(m) && got[m[0]].push(m));
  connection.on("roomMessage", (_room, name, m) => name === tag && got.r.push(m));
  connection.on("broadcastMessage", (name, m) => name === tag && got.a.push(m));
  return got;
}

/** Sends message `i` of every kind to the client `{ id, user, room }`, one call each. */
const sendOne = (sender, { id, user, room }, i, tag = "B") =>
  Promise.all([
    sender.invoke("SendToConnection", id, `p${i}`),
    sender.invoke("SendToUser", user, `u${i}`),
    sender.invoke("SendToRoom", room, tag, `r${i}`),
    sender.invoke("Send", tag, `a${i}`),
  ]);

/**
 * Sends numbered messages of every kind to `to` continuously (every few ms) until `stop()`,
 * which resolves with how many of each were sent (each call completed).
 */
function pump(sender, to) {
  let running = true;
  let sent = 0;
  const done = (async () => {
    while (running) {
      await sendOne(sender, to, sent);
      sent++;
      await sleep(2);
    }
    return sent;
  })();
  // A failed call shows at `stop()`; until then it must not be an unhandled rejection.
  done.catch(() => {});
  return {
    sent: () => sent,
    stop() {
      running = false;
      return done;
    },
  };
}

/** Sends the sentinel of every kind last and waits for all of them at the client. */
async function sentinels(sender, to, got, timeoutMs = 10_000) {
  await sendOne(sender, to, "end");
  await waitUntil(() => KINDS.every((k) => got[k].at(-1) === `${k}end`), "every kind's sentinel", timeoutMs);
}

/** Asserts `got` is exactly `expected`; on failure says what was missing, doubled or out of order (not a 4000-line diff). */
function assertExactly(got, expected, what) {
  if (got.length === expected.length && got.every((m, i) => m === expected[i])) return;
  const counts = new Map();
  for (const m of got) counts.set(m, (counts.get(m) ?? 0) + 1);
  const missing = expected.filter((m) => !counts.has(m));
  const doubled = [...counts].filter(([, c]) => c > 1).map(([m]) => m);
  const at = got.findIndex((m, i) => m !== expected[i]);
  assert.fail(
    `${what}: ${got.length} received, ${expected.length} expected; missing ${missing.length} [${missing.slice(0, 10)}], ` +
      `doubled ${doubled.length} [${doubled.slice(0, 10)}], first difference at ${at}: [${got.slice(at, at + 5)}] for [${expected.slice(at, at + 5)}]`,
  );
}

/** Every numbered message of every kind, 0..n-1, then the sentinel, once each, in order. */
function assertAllOnce(got, n) {
  for (const k of KINDS) assertExactly(got[k], [...range(n, k), `${k}end`], `kind ${k}`);
}

/**
 * A client on host A (started here, since it dies) receives a continuous stream
 * from a sender on host `b`; mid-stream its path turns to `b` and A is SIGKILLed. It resumes on
 * `b` with nothing lost or doubled.
 */
async function crashMidStream(b, hostArgs, protocol) {
  const a = await startHost({ args: hostArgs });
  const path = await startProxy([a.address]);
  const user = `ana-${protocol}`;
  let client;
  let sender;
  let stream;
  try {
    await waitReady(a);
    const resumed = await resilient(`${path.url}/chat`, { protocol, user });
    client = resumed.connection;
    const { events } = resumed;
    const id = client.connectionId;
    const to = { id, user, room: "r" };
    const got = inbox(client);
    await client.invoke("JoinRoom", "r");
    sender = await connect(`${b.url}/chat`);

    stream = pump(sender, to);
    // Long enough on A for a periodic checkpoint (every 2 s here) mid-stream: the resume starts
    // from frames kept then and a place in the log, not from the join's record.
    const started = Date.now();
    await waitUntil(() => got.p.length >= 30 && Date.now() - started >= 2500, "the stream to flow to the client on host A");
    path.retarget([b.address]);
    a.kill();
    await a.exited;
    // No cut: A's death closes the client's socket, and a cut now could reset its resume to B.
    const atDeath = stream.sent();
    // Messages sent well after the kill arriving prove the client resumed on B.
    await waitUntil(() => events.reconnecting > 0 || got.p.includes(`p${atDeath + 30}`), "the stream to flow again on host B", 15_000);
    assert.equal(events.reconnecting, 0, "resumed, not started over on a new connection");
    const n = await stream.stop();
    await sentinels(sender, to, got);

    assertAllOnce(got, n);
    assert.equal(client.connectionId, id, "the same connection");
    assert.equal(events.reconnecting, 0, "resumed without the automatic reconnect");
    assert.deepEqual(events.reconnected, [], "no new connection");
    // Its user came along (the u kind above too).
    assert.equal(await client.invoke("WhoamiUser"), user);
  } finally {
    await stream?.stop().catch(() => {});
    await client?.stop();
    await sender?.stop();
    await path.close();
    await a.stop();
  }
}

describe("durable reconnect on one Redis", () => {
  let redis;
  let b;
  let durable;
  let hostArgs;

  before(async () => {
    redis = await startRedis();
    // Senders here send faster than the default rate limit allows.
    durable = ["--redis", redis.url, "--durable-reconnect", "--rate-limit", "0", "--jwt-secret", SECRET];
    // A 6 s window: a checkpoint every 2 s, so the crash tests see one mid-stream.
    hostArgs = [...durable, "--reconnect-window", "6s"];
    b = await startHost({ args: hostArgs });
    await waitReady(b);
  });
  after(async () => {
    await b.stop();
    await redis.stop();
  });

  for (const protocol of ["json", "messagepack"]) {
    test(`a client whose host was killed mid-stream resumes on another host with every message exactly once, in order (${protocol})`, async () => {
      await crashMidStream(b, hostArgs, protocol);
    });
  }

  test("the surviving host counts the durable resumes", async () => {
    // After the crashes above (one per protocol) B resumed what A held.
    assert.ok((await metric(b, "hubhost_reconnect_durable_resumes_total")) >= 1);
  });

  test("messages sent while no host holds the connection reach it once it resumes, once each, in order", async () => {
    const a = await startHost({ args: hostArgs });
    const path = await startProxy([a.address]);
    const user = "ben";
    let client;
    let sender;
    let listener;
    try {
      await waitReady(a);
      const resumed = await resilient(`${path.url}/chat`, { user });
      client = resumed.connection;
      const { events } = resumed;
      const id = client.connectionId;
      const to = { id, user, room: "r" };
      const got = inbox(client);
      await client.invoke("JoinRoom", "r");
      sender = await connect(`${b.url}/chat`);
      // Another member of the room on B, to see that the sends went out.
      listener = await connect(`${b.url}/chat`);
      await listener.invoke("JoinRoom", "r");
      const heard = { private: record(listener, "privateMessage"), room: record(listener, "roomMessage"), all: record(listener, "broadcastMessage") };

      // The client cannot get anywhere: its resume waits in the proxy while A dies.
      path.hold();
      a.kill();
      await a.exited;
      const n = 100;
      for (let i = 0; i < n; i += 10) {
        await Promise.all(Array.from({ length: 10 }, (_, j) => sendOne(sender, to, i + j)));
      }
      // Sentinels to the listener, sent after the messages: they went out while nobody held the client.
      await Promise.all([
        sender.invoke("SendToConnection", listener.connectionId, "sentinel"),
        sender.invoke("SendToRoom", "r", "L", "sentinel"),
        sender.invoke("Send", "L", "sentinel"),
      ]);
      await waitUntil(
        () => [heard.private, heard.room, heard.all].every((calls) => calls.some((args) => args.at(-1) === "sentinel")),
        "the listener's sentinels",
      );

      // Only now does the client reach B.
      path.retarget([b.address]);
      path.cut();
      path.release();
      await sentinels(sender, to, got, 15_000);

      assertAllOnce(got, n);
      assert.equal(client.connectionId, id, "the same connection");
      assert.equal(events.reconnecting, 0, "resumed without the automatic reconnect");
      assert.deepEqual(events.reconnected, []);
    } finally {
      await client?.stop();
      await sender?.stop();
      await listener?.stop();
      await path.close();
      await a.stop();
    }
  });

  test("what a client sends while its host is killed reaches others at least once, in order", async (t) => {
    const a = await startHost({ args: hostArgs });
    const path = await startProxy([a.address]);
    let client;
    let listener;
    let running = true;
    let sending;
    try {
      await waitReady(a);
      const resumed = await resilient(`${path.url}/chat`);
      client = resumed.connection;
      const { events } = resumed;
      const id = client.connectionId;
      listener = await connect(`${b.url}/chat`);
      const heard = [];
      listener.on("broadcastMessage", (name, m) => name === "client" && heard.push(m));

      // The client broadcasts continuously (Send), noting when it sent each.
      const sentAt = [];
      sending = (async () => {
        while (running) {
          sentAt.push(Date.now());
          await client.send("Send", "client", `c${sentAt.length - 1}`);
          await sleep(5);
        }
      })();
      sending.catch(() => {});
      // Over 2 s on A, so that sends older than the last second before the kill exist (and
      // must not arrive twice).
      await waitUntil(() => heard.length >= 30 && Date.now() - sentAt[0] >= 2500, "the client's sends to flow through host A");
      path.retarget([b.address]);
      const killedAt = Date.now();
      a.kill();
      await a.exited;
      const exitedAt = Date.now();
      const atDeath = sentAt.length;
      await waitUntil(() => events.reconnecting > 0 || heard.includes(`c${atDeath + 30}`), "the client's sends to flow again through host B", 15_000);
      assert.equal(events.reconnecting, 0, "resumed, not started over on a new connection");
      running = false;
      await sending;
      const n = sentAt.length;
      await client.send("Send", "client", "cend");
      await waitUntil(() => heard.includes("cend"), "the client's sentinel");

      const sent = range(n, "c");
      const counts = new Map();
      for (const m of heard) counts.set(m, (counts.get(m) ?? 0) + 1);
      const missing = sent.filter((m) => !counts.has(m));
      assert.deepEqual(missing, [], "nothing the client sent was lost");
      // In order: the first time each arrived, they come in the order sent.
      const firsts = [...new Set(heard)];
      assertExactly(firsts, [...sent, "cend"], "the client's sends, first arrivals");
      // A crash may run again what the dead host handled but had not recorded yet: only the
      // last second's (it records what it handled before each Ack, every second), plus slack.
      const doubled = sent.filter((m) => counts.get(m) > 1).map((m) => Number(m.slice(1)));
      t.diagnostic(`${doubled.length} of ${n} client sends arrived more than once: [${doubled.join(", ")}]`);
      for (const i of doubled) {
        assert.ok(sentAt[i] >= killedAt - 1500 && sentAt[i] <= exitedAt, `c${i}, sent ${killedAt - sentAt[i]} ms before the kill, arrived twice`);
      }
      assert.equal(client.connectionId, id, "the same connection");
      assert.equal(events.reconnecting, 0, "resumed without the automatic reconnect");
    } finally {
      running = false;
      await sending?.catch(() => {});
      await client?.stop();
      await listener?.stop();
      await path.close();
      await a.stop();
    }
  });

  test("a client that stays away past the window gets a new connection", async () => {
    // Both hosts of this test keep a connection for 2 s only.
    const brief = [...durable, "--reconnect-window", "2s"];
    const [a, survivor] = await Promise.all([startHost({ args: brief }), startHost({ args: brief })]);
    const path = await startProxy([a.address]);
    let client;
    try {
      await Promise.all([waitReady(a), waitReady(survivor)]);
      const resumed = await resilient(`${path.url}/chat`);
      client = resumed.connection;
      const { events } = resumed;
      const id = client.connectionId;
      await client.invoke("JoinRoom", "r");
      const refusedBefore = await metric(survivor, "hubhost_reconnect_resumes_refused_total");
      path.hold();
      a.kill();
      await a.exited;
      // A window's expiry, not an absence: well past the 2 s window and the record's lifetime
      // after the last checkpoint (window + two checkpoints of a third of it, at least 1 s each).
      await sleep(5000);
      path.retarget([survivor.address]);
      path.cut();
      path.release();
      await waitUntil(() => events.reconnected.length === 1, "a new connection", 10_000);
      assert.notEqual(events.reconnected[0], id, "a new connection id");
      assert.ok(events.reconnecting >= 1);
      assert.ok((await metric(survivor, "hubhost_reconnect_resumes_refused_total")) > refusedBefore);
      assert.equal(await client.invoke("Echo", "still here"), "still here");
    } finally {
      await client?.stop();
      await path.close();
      await Promise.all([a.stop(), survivor.stop()]);
    }
  });
});

describe("durable reconnect's records", () => {
  test("a durable connection that closes cleanly leaves no key in Redis", async () => {
    // A Redis of its own: any durable key in it is this connection's.
    const redis = await startRedis();
    // A short window: checkpoints every second.
    const host = await startHost({ args: ["--redis", redis.url, "--durable-reconnect", "--reconnect-window", "3s"] });
    let client;
    try {
      await waitReady(host);
      const durableKeys = () => redis.cli("--scan", "--pattern", "*durable*").split("\n").filter(Boolean);
      ({ connection: client } = await resilient(`${host.url}/chat`));
      await client.invoke("JoinRoom", "r");
      // The pattern finds its record while it lives (so "none" below means something).
      await waitUntil(() => durableKeys().length > 0, "the connection's record in Redis");
      await client.stop();
      client = null;
      // Deleting it is asynchronous.
      await waitUntil(() => durableKeys().length === 0, "no durable key left");
    } finally {
      await client?.stop();
      await host.stop();
      await redis.stop();
    }
  });
});

describe("durable reconnect on a Redis Cluster", () => {
  let cluster;
  let b;
  let hostArgs;

  before(async () => {
    cluster = await startRedisCluster();
    hostArgs = [...cluster.args(), "--durable-reconnect", "--rate-limit", "0", "--jwt-secret", SECRET, "--reconnect-window", "6s"];
    b = await startHost({ args: hostArgs });
    await waitReady(b);
  });
  after(async () => {
    await b.stop();
    await cluster.stop();
  });

  test("a client whose host was killed mid-stream resumes on another host with every message exactly once, in order (json)", async () => {
    await crashMidStream(b, hostArgs, "json");
  });
});

/** The error of a host that must refuse to start with `args` (one that starts is stopped, and fails the test). */
async function refusedStart(args) {
  let host;
  try {
    host = await startHost({ args });
  } catch (e) {
    return e.message;
  }
  await host.stop();
  assert.fail(`hubhost started with ${args.join(" ")}`);
}

describe("--durable-reconnect's checks", () => {
  test("it needs Redis", async () => {
    assert.match(await refusedStart(["--durable-reconnect"]), /--durable-reconnect needs --redis or --redis-cluster/);
  });

  test("it needs stateful reconnect", async () => {
    const redis = await startRedis();
    try {
      assert.match(
        await refusedStart(["--redis", redis.url, "--durable-reconnect", "--no-stateful-reconnect"]),
        /--durable-reconnect needs stateful reconnect/,
      );
    } finally {
      await redis.stop();
    }
  });
});
