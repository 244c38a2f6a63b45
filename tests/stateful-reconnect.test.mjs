// Stateful reconnect (ASP.NET Core 8's `withStatefulReconnect`): a client whose WebSocket is cut
// resumes the same connection on a new one and loses nothing, in either direction.
//
// Clients go through a TCP proxy (tests/support/proxy.mjs) that resets their connections the way
// a network failure does: no WebSocket close, both ends see a reset.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { join, resolve } from "node:path";
import WebSocket from "ws";

import { connect, MessagePackHubProtocol, record, RS, signalR, waitUntil, waitUntilAsync } from "./support/client.mjs";
import { launchChromium } from "./support/browser.mjs";
import { metric, startHost, waitReady } from "./support/host.mjs";
import { startNginx } from "./support/nginx.mjs";
import { startProxy } from "./support/proxy.mjs";
import { jwt } from "./support/jwt.mjs";
import { startRedis, startRedisCluster } from "./support/redis.mjs";

/** An official client built `.withStatefulReconnect().withAutomaticReconnect()`, with hooks. */
async function resilient(url, { protocol = "json", bufferSize } = {}) {
  const events = { reconnecting: 0, reconnected: [] };
  const connection = await connect(url, { transport: signalR.HttpTransportType.WebSockets }, (builder) => {
    let b = builder.withStatefulReconnect(bufferSize ? { bufferSize } : undefined).withAutomaticReconnect([0, 200, 500, 1000, 2000]);
    if (protocol === "messagepack") b = b.withHubProtocol(new MessagePackHubProtocol());
    return b;
  });
  connection.onreconnecting(() => events.reconnecting++);
  connection.onreconnected((id) => events.reconnected.push(id));
  return { connection, events };
}

/** Negotiates with stateful reconnect at the host `url`; the answer's JSON. */
async function negotiateStateful(url) {
  const res = await fetch(`${url}/chat/negotiate?negotiateVersion=1&useStatefulReconnect=true`, { method: "POST" });
  return res.json();
}

/** Runs `body({ host, gate })` with a host started with `args` behind a resetting proxy. */
async function behindGate(args, body) {
  const host = await startHost({ args });
  const gate = await startProxy([host.address]);
  try {
    await body({ host, gate });
  } finally {
    await gate.close();
    await host.stop();
  }
}

/** `[sender, n]` pairs of calls recorded by `record`, for comparing orders. */
const numbers = (calls, index = 1) => calls.map((args) => args[index]);

/** 0..n-1 as strings. */
const range = (n, prefix = "") => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

describe("stateful reconnect on one host", () => {
  let host;
  let proxy;

  before(async () => {
    // Senders here send faster than the default rate limit allows.
    host = await startHost({ args: ["--rate-limit", "0"] });
    proxy = await startProxy([host.address]);
  });
  after(async () => {
    await proxy.close();
    await host.stop();
  });

  test("negotiate grants it only to a client that asks", async () => {
    const asked = await negotiateStateful(host.url);
    assert.equal(asked.useStatefulReconnect, true);
    const plain = await (await fetch(`${host.url}/chat/negotiate?negotiateVersion=1`, { method: "POST" })).json();
    assert.equal("useStatefulReconnect" in plain, false);
  });

  for (const protocol of ["json", "messagepack"]) {
    test(`a cut socket resumes with every message exactly once, in order (${protocol})`, async () => {
      const { connection: client, events } = await resilient(`${proxy.url}/chat`, { protocol });
      const sender = await connect(`${host.url}/chat`);
      const id = client.connectionId;
      const privates = record(client, "privateMessage");
      const rooms = record(client, "roomMessage");
      const broadcasts = record(client, "broadcastMessage");
      const seenBySender = record(sender, "broadcastMessage");
      await client.invoke("JoinRoom", "r");

      const replayedBefore = await metric(host, "hubhost_reconnect_replayed_messages_total");
      const resumesBefore = await metric(host, "hubhost_reconnect_resumes_total");
      const n = 150;
      const sends = [];
      for (let i = 0; i < n; i++) {
        sends.push(sender.invoke("SendToConnection", id, `p${i}`));
        sends.push(sender.invoke("SendToRoom", "r", "sender", `r${i}`));
        sends.push(sender.invoke("Send", "sender", `a${i}`));
        if (i === 50) {
          // Mid-stream, the network drops the client's connection; it keeps sending.
          assert.ok(proxy.cut() >= 1);
          for (let j = 0; j < 10; j++) sends.push(client.send("Send", "client", `c${j}`));
        }
        if (i % 10 === 0) await Promise.all(sends.splice(0));
      }
      await Promise.all(sends);
      // The sentinel: sent after everything, so once it arrived everything else had to.
      await sender.invoke("SendToConnection", id, "end");
      await waitUntil(() => privates.length === n + 1, "the sentinel", 20_000);

      assert.deepEqual(numbers(privates), [...range(n, "p"), "end"]);
      assert.deepEqual(numbers(rooms, 2), range(n, "r"));
      const fromSender = broadcasts.filter(([name]) => name === "sender");
      assert.deepEqual(numbers(fromSender), range(n, "a"));
      // The client's own sends made during the cut reached others once each, in order.
      await sender.invoke("Send", "sender", "end");
      await waitUntil(() => seenBySender.some(([, m]) => m === "end"), "the sender's sentinel");
      assert.deepEqual(numbers(seenBySender.filter(([name]) => name === "client")), range(10, "c"));
      assert.deepEqual(numbers(broadcasts.filter(([name]) => name === "client")), range(10, "c"));

      assert.equal(client.connectionId, id, "the same connection");
      assert.equal(events.reconnecting, 0, "resumed without the automatic reconnect");
      assert.ok((await metric(host, "hubhost_reconnect_resumes_total")) > resumesBefore);
      assert.ok((await metric(host, "hubhost_reconnect_replayed_messages_total")) >= replayedBefore);
      // Still in its room, still its user.
      await sender.invoke("SendToRoom", "r", "sender", "after");
      await waitUntil(() => rooms.length === n + 1, "a room message after the resume");

      await client.stop();
      await sender.stop();
    });
  }

  test("a stream to the client that fills its buffer waits for the resume and loses nothing", async () => {
    await behindGate(["--reconnect-buffer", "2000"], async ({ host: small, gate }) => {
      const { connection: client } = await resilient(`${gate.url}/chat`);
      const items = [];
      let completed;
      const done = new Promise((res, rej) => {
        completed = { res, rej };
      });
      client.stream("Counter", 400, 0).subscribe({
        next: (item) => {
          items.push(item);
          if (items.length === 20) {
            // The network drops, and the client cannot get through for a while.
            gate.hold();
            gate.cut();
          }
        },
        complete: () => completed.res(),
        error: (e) => completed.rej(e),
      });
      // The buffer fills to its limit and stays there: the stream waits instead of dropping.
      const buffered = () => metric(small, "hubhost_reconnect_buffer_bytes");
      await waitUntilAsync(async () => (await buffered()) >= 2000, "the buffer to fill", 10_000);
      for (let i = 0; i < 10; i++) {
        const bytes = await buffered();
        // One batch of frames may cross the limit, as in ASP.NET a write may; no more.
        assert.ok(bytes < 2000 + 64 * 64, `the buffer stays bounded (${bytes} bytes)`);
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(items.length < 400, "the stream was waiting");
      gate.release();
      await done;
      assert.deepEqual(items, Array.from({ length: 400 }, (_, i) => i));
      await client.stop();
    });
  });

  test("a client that stays away past the window gets a new connection", async () => {
    await behindGate(["--reconnect-window", "1s"], async ({ host: brief, gate }) => {
      const { connection: client, events } = await resilient(`${gate.url}/chat`);
      const id = client.connectionId;
      const refusedBefore = await metric(brief, "hubhost_reconnect_resumes_refused_total");
      gate.hold();
      gate.cut();
      await waitUntilAsync(
        async () => (await metric(brief, "hubhost_sessions_running")) === 0,
        "the host to give the connection up",
        10_000,
      );
      gate.release();
      await waitUntil(() => events.reconnected.length === 1, "a new connection", 10_000);
      assert.notEqual(events.reconnected[0], id, "a new connection id");
      assert.ok(events.reconnecting >= 1);
      assert.ok((await metric(brief, "hubhost_reconnect_resumes_refused_total")) > refusedBefore);
      assert.equal(await client.invoke("Echo", "still here"), "still here");
      await client.stop();
    });
  });
});

const SECRET = "stateful-reconnect-test-secret";
/** A bearer token for `user`, valid for ten minutes. */
const bearer = (user) => jwt({ sub: user, exp: Math.floor(Date.now() / 1000) + 600 }, SECRET);

/**
 * The official client with stateful reconnect on host `from`, through a path a test can cut
 * and point at another host.
 */
async function onPath(from, options) {
  const path = await startProxy([from.address]);
  const { connection, events } = await resilient(`${path.url}/chat`, options);
  return {
    client: connection,
    events,
    path,
    /** Cuts the client's connection, as a network does; it resumes on `host`. */
    moveTo(host) {
      path.retarget([host.address]);
      assert.ok(path.cut() >= 1);
    },
    async close() {
      await connection.stop();
      await path.close();
    },
  };
}

// On one Redis, and on a Redis Cluster, where each hub's channels share a slot so that both hosts
// see a hub's messages in one order, which the move's marker cuts in the same place.
for (const [where, startBackend] of [
  ["on one Redis", async () => {
    const redis = await startRedis();
    return { args: ["--redis", redis.url], stop: () => redis.stop() };
  }],
  ["on a Redis Cluster", async () => {
    const cluster = await startRedisCluster();
    return { args: cluster.args(), stop: () => cluster.stop() };
  }],
]) describe(`stateful reconnect across hosts ${where}`, () => {
  let backend;
  let hosts;

  before(async () => {
    backend = await startBackend();
    const args = [...backend.args, "--rate-limit", "0", "--jwt-secret", SECRET];
    hosts = await Promise.all([0, 1].map(() => startHost({ args })));
    await Promise.all(hosts.map((h) => waitReady(h)));
  });
  after(async () => {
    await Promise.all(hosts.map((h) => h.stop()));
    await backend.stop();
  });

  for (const protocol of ["json", "messagepack"]) {
    test(`a client cut from one host resumes on the other, and back, with every message exactly once, in order (${protocol})`, async () => {
      const [a, b] = hosts;
      // The client's path leads to host A, until the cut; then to host B.
      const { client, events, moveTo, close } = await onPath(a, { protocol });
      // Senders on both hosts: each host's own sends reach the moving client in order too.
      const senders = [await connect(`${a.url}/chat`), await connect(`${b.url}/chat`)];
      const tags = ["A", "B"];
      const id = client.connectionId;
      const privates = record(client, "privateMessage");
      const rooms = record(client, "roomMessage");
      const broadcasts = record(client, "broadcastMessage");
      const seenBySenders = senders.map((s) => record(s, "broadcastMessage"));
      await client.invoke("JoinRoom", "r");
      const [movesIn, movesOut] = [await metric(b, "hubhost_reconnect_moves_in_total"), await metric(a, "hubhost_reconnect_moves_out_total")];
      const [backIn, backOut] = [await metric(a, "hubhost_reconnect_moves_in_total"), await metric(b, "hubhost_reconnect_moves_out_total")];

      const n = 120;
      const sends = [];
      for (let i = 0; i < n; i++) {
        senders.forEach((sender, s) => {
          sends.push(sender.invoke("SendToConnection", id, `${tags[s]}p${i}`));
          sends.push(sender.invoke("SendToRoom", "r", tags[s], `r${i}`));
          sends.push(sender.invoke("Send", tags[s], `a${i}`));
        });
        if (i === 40) {
          moveTo(b);
          for (let j = 0; j < 10; j++) sends.push(client.send("Send", "client", `c${j}`));
        }
        if (i === 80) {
          // And back: a connection that moved moves on again.
          await waitUntilAsync(async () => (await metric(b, "hubhost_reconnect_moves_in_total")) === movesIn + 1, "the first move");
          moveTo(a);
        }
        if (i % 10 === 0) await Promise.all(sends.splice(0));
      }
      await Promise.all(sends);
      // Sentinels from both hosts, after everything.
      await Promise.all(senders.map((sender, s) => sender.invoke("SendToConnection", id, `${tags[s]}end`)));
      await waitUntil(() => privates.length === 2 * (n + 1), "both sentinels", 20_000);

      tags.forEach((tag) => {
        const mine = numbers(privates).filter((m) => m.startsWith(tag));
        assert.deepEqual(mine, [...range(n, `${tag}p`), `${tag}end`], `private messages from host ${tag}`);
        assert.deepEqual(numbers(rooms.filter(([, name]) => name === tag), 2), range(n, "r"), `room messages from host ${tag}`);
        assert.deepEqual(numbers(broadcasts.filter(([name]) => name === tag)), range(n, "a"), `broadcasts from host ${tag}`);
      });
      // The client's sends made during the cut reached others once each, in order.
      await Promise.all(senders.map((sender, s) => sender.invoke("Send", tags[s], "end")));
      await waitUntil(() => seenBySenders.every((seen) => seen.filter(([, m]) => m === "end").length === 2), "the senders' sentinels");
      for (const seen of seenBySenders) assert.deepEqual(numbers(seen.filter(([name]) => name === "client")), range(10, "c"));
      assert.deepEqual(numbers(broadcasts.filter(([name]) => name === "client")), range(10, "c"));

      assert.equal(client.connectionId, id, "the same connection");
      assert.equal(events.reconnecting, 0, "resumed without the automatic reconnect");
      assert.equal(await metric(b, "hubhost_reconnect_moves_in_total"), movesIn + 1);
      assert.equal(await metric(a, "hubhost_reconnect_moves_out_total"), movesOut + 1);
      assert.equal(await metric(a, "hubhost_reconnect_moves_in_total"), backIn + 1, "moved back");
      assert.equal(await metric(b, "hubhost_reconnect_moves_out_total"), backOut + 1);
      // Its room came along: a room message from host B reaches it on host A.
      await senders[1].invoke("SendToRoom", "r", "B", "after");
      await waitUntil(() => rooms.some(([, , m]) => m === "after"), "a room message after the moves");

      await close();
      await Promise.all(senders.map((s) => s.stop()));
    });
  }

  test("another user presenting a connection's token to another host gets 404; the connection stays", async () => {
    const [a, b] = hosts;
    const ana = bearer("ana");
    const negotiated = await (
      await fetch(`${a.url}/chat/negotiate?negotiateVersion=1&useStatefulReconnect=true`, {
        method: "POST",
        headers: { authorization: `Bearer ${ana}` },
      })
    ).json();
    const token = negotiated.connectionToken;
    const raw = await rawStateful(a.url, `${token}&access_token=${ana}`);
    raw.send({ protocol: "json", version: 2 });
    await raw.until((r) => Object.keys(r).length === 0, "the handshake's answer");
    raw.send({ type: 6 });
    const attempt = (user) => upgradeStatus(`${b.url}/chat?id=${token}&access_token=${bearer(user)}`);
    const refusedBefore = await metric(b, "hubhost_reconnect_resumes_refused_total");
    const movedBefore = await metric(a, "hubhost_reconnect_moves_out_total");
    assert.equal(await attempt("ben"), 404);
    assert.equal(await metric(b, "hubhost_reconnect_resumes_refused_total"), refusedBefore + 1);
    // Ana's connection did not move: a message to it still reaches her socket on host A.
    const sender = await connect(`${b.url}/chat`);
    await sender.invoke("SendToConnection", negotiated.connectionId, "still yours");
    await raw.until((r) => r.type === 1 && r.arguments?.includes("still yours"), "the message on host A");
    assert.equal(await metric(a, "hubhost_reconnect_moves_out_total"), movedBefore);
    await sender.stop();
    raw.socket.terminate();
  });

  test("a call in flight when the client moves finishes on the old host, and its result reaches the client on the new one", async () => {
    const [a, b] = hosts;
    const { client, events, moveTo, close } = await onPath(a);
    const id = client.connectionId;
    // Another client takes its time answering the question the call asks it (2 s, longer
    // than a host waits for an answer to its claim).
    const answerer = await connect(`${b.url}/chat`);
    let asked;
    const questioned = new Promise((resolve) => (asked = resolve));
    answerer.on("Answer", async (question) => {
      asked();
      await new Promise((r) => setTimeout(r, 2000));
      return `${question} yes`;
    });
    const call = client.invoke("Ask", answerer.connectionId, "slow?");
    await questioned;
    moveTo(b);
    assert.equal(await call, "slow? yes");
    assert.equal(client.connectionId, id);
    assert.equal(events.reconnecting, 0, "moved, not started over");
    assert.equal(await client.invoke("Echo", "on B"), "on B");
    await answerer.stop();
    await close();
  });

  test("a client whose host was killed cannot resume elsewhere (no durable mode): it starts over on the other host", async () => {
    const doomed = await startHost({ args: [...backend.args, "--jwt-secret", SECRET] });
    const survivor = hosts[1];
    const { client, events, path, close } = await onPath(doomed);
    const id = client.connectionId;
    const refusedBefore = await metric(survivor, "hubhost_reconnect_resumes_refused_total");
    path.retarget([survivor.address]);
    doomed.kill();
    await doomed.exited;
    await waitUntil(() => events.reconnected.length === 1, "a new connection on the surviving host", 10_000);
    assert.notEqual(events.reconnected[0], id, "a new connection id: what it had not acknowledged died with its host");
    assert.ok((await metric(survivor, "hubhost_reconnect_resumes_refused_total")) > refusedBefore);
    assert.equal(await client.invoke("Echo", "on the survivor"), "on the survivor");
    await close();
    await doomed.stop();
  });

  test("a client result asked before the move is answered after it, from the new host", async () => {
    const [a, b] = hosts;
    const { client, events, moveTo, close } = await onPath(a);
    let asked;
    const questioned = new Promise((resolve) => (asked = resolve));
    client.on("Answer", async (question) => {
      asked();
      // Answered once the client is on host B.
      await waitUntilAsync(async () => (await metric(b, "hubhost_reconnect_moves_in_total")) > movesIn, "the move", 10_000);
      return `${question} yes`;
    });
    const movesIn = await metric(b, "hubhost_reconnect_moves_in_total");
    const asker = await connect(`${a.url}/chat`);
    const answer = asker.invoke("Ask", client.connectionId, "there?");
    await questioned;
    moveTo(b);
    assert.equal(await answer, "there? yes");
    assert.equal(events.reconnecting, 0);
    await asker.stop();
    await close();
  });

  test("an upload from a client that moves ends with an error; the connection goes on", async () => {
    const [a, b] = hosts;
    const { client, events, moveTo, close } = await onPath(a);
    const id = client.connectionId;
    const numbers = new signalR.Subject();
    const sum = client.invoke("Sum", numbers);
    numbers.next(1);
    numbers.next(2);
    // A round trip behind the items: the upload runs on host A.
    assert.equal(await client.invoke("Echo", "uploading"), "uploading");
    moveTo(b);
    await assert.rejects(sum, { message: "The upload ended because the connection moved to another server." });
    numbers.complete();
    assert.equal(await client.invoke("Echo", "on B"), "on B");
    assert.equal(client.connectionId, id);
    assert.equal(events.reconnecting, 0);
    await close();
  });

  test("a stream to a client that moves ends with an error; the connection goes on", async () => {
    const [a, b] = hosts;
    const { client, events, moveTo, close } = await onPath(a);
    const id = client.connectionId;
    const items = [];
    const ended = new Promise((resolve) => {
      client.stream("Counter", 100_000, 10).subscribe({
        next: (item) => {
          items.push(item);
          if (items.length === 10) {
            moveTo(b);
          }
        },
        complete: () => resolve("completed"),
        error: (e) => resolve(e.message),
      });
    });
    assert.equal(await ended, "The stream ended because the connection moved to another server.");
    assert.deepEqual(items, Array.from({ length: items.length }, (_, i) => i), "the items before, once each");
    assert.equal(await client.invoke("Echo", "still here"), "still here");
    assert.equal(client.connectionId, id);
    assert.equal(events.reconnecting, 0);
    await close();
  });
});

describe("stateful reconnect behind a round-robin nginx", () => {
  test("with --public-url, clients whose path changes hosts resume on the other host, and nothing is lost", async () => {
    const redis = await startRedis();
    // Each host's public address is a resetting proxy in front of it; nginx balances negotiate.
    const proxies = [await startProxy(["127.0.0.1:1"]), await startProxy(["127.0.0.1:1"])];
    const hosts = await Promise.all(
      proxies.map((proxy) => startHost({ args: ["--redis", redis.url, "--rate-limit", "0", "--public-url", proxy.url] })),
    );
    hosts.forEach((host, i) => proxies[i].retarget([host.address]));
    const nginx = await startNginx(hosts.map((h) => h.address));
    const clients = [];
    try {
      await Promise.all(hosts.map((h) => waitReady(h)));
      for (let i = 0; i < 4; i++) clients.push(await resilient(`${nginx.url}/chat`));
      const counts = await Promise.all(hosts.map((h) => metric(h, "hubhost_connections")));
      assert.ok(counts[0] > 0 && counts[1] > 0, `both hosts hold clients (${counts})`);
      const ids = clients.map(({ connection }) => connection.connectionId);
      const got = clients.map(({ connection }) => record(connection, "privateMessage"));
      // Straight to a host, past its --public-url redirect (which would lead through a proxy).
      const sender = await connect(`${hosts[0].url}/chat`, { skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets });
      const n = 100;
      for (let i = 0; i < n; i++) {
        await Promise.all(ids.map((id) => sender.invoke("SendToConnection", id, `${i}`)));
        if (i === 30) {
          // Each host's public address now leads to the other host (as when a balancer's
          // sticky target changes), and the network drops every client.
          proxies.forEach((proxy, p) => proxy.retarget([hosts[1 - p].address]));
          for (const proxy of proxies) proxy.cut();
        }
      }
      await Promise.all(ids.map((id) => sender.invoke("SendToConnection", id, "end")));
      await waitUntil(() => got.every((g) => g.length === n + 1), "every message and the sentinel", 20_000);
      for (const g of got) assert.deepEqual(numbers(g), [...range(n), "end"]);
      clients.forEach(({ connection, events }, i) => {
        assert.equal(connection.connectionId, ids[i]);
        assert.equal(events.reconnecting, 0);
      });
      const movesIn = await Promise.all(hosts.map((h) => metric(h, "hubhost_reconnect_moves_in_total")));
      const movesOut = await Promise.all(hosts.map((h) => metric(h, "hubhost_reconnect_moves_out_total")));
      assert.deepEqual([movesIn[0] + movesIn[1], movesOut[0] + movesOut[1]], [4, 4], "every client moved");
      assert.ok(movesIn[0] > 0 && movesIn[1] > 0, `clients moved to both hosts (${movesIn})`);
      await sender.stop();
    } finally {
      await Promise.all(clients.map(({ connection }) => connection.stop()));
      await nginx.stop();
      await Promise.all(proxies.map((p) => p.close()));
      await Promise.all(hosts.map((h) => h.stop()));
      await redis.stop();
    }
  });
});

describe("stateful reconnect in Chromium", () => {
  test("the browser client resumes a cut socket with every message once, in order", async () => {
    await behindGate(["--rate-limit", "0"], async ({ host, gate: proxy }) => {
      const browser = await launchChromium();
      try {
        const tab = await browser.newPage();
        // The page comes from the host; the hub is reached through the proxy (another origin).
        await tab.goto(`${host.url}/`);
        const modules = resolve(import.meta.dirname, "..", "node_modules");
        await tab.addScriptTag({ path: join(modules, "@microsoft/signalr/dist/browser/signalr.js") });
        const id = await tab.evaluate(async (hubUrl) => {
          const connection = new signalR.HubConnectionBuilder()
            .withUrl(hubUrl, { transport: signalR.HttpTransportType.WebSockets })
            .withStatefulReconnect()
            .withAutomaticReconnect()
            .configureLogging(signalR.LogLevel.Warning)
            .build();
          window.got = [];
          window.reconnecting = 0;
          connection.on("privateMessage", (_, message) => window.got.push(message));
          connection.onreconnecting(() => window.reconnecting++);
          await connection.start();
          window.connection = connection;
          return connection.connectionId;
        }, `${proxy.url}/chat`);
        const sender = await connect(`${host.url}/chat`);
        const n = 100;
        for (let i = 0; i < n; i++) {
          await sender.invoke("SendToConnection", id, `${i}`);
          if (i === 40) proxy.cut();
        }
        await sender.invoke("SendToConnection", id, "end");
        await tab.waitForFunction(() => window.got.includes("end"), null, { timeout: 20_000 });
        const seen = await tab.evaluate(() => ({ got: window.got, id: window.connection.connectionId, reconnecting: window.reconnecting }));
        assert.deepEqual(seen.got, [...range(n), "end"]);
        assert.equal(seen.id, id);
        assert.equal(seen.reconnecting, 0);
        assert.ok((await metric(host, "hubhost_reconnect_resumes_total")) >= 1);
        await sender.stop();
      } finally {
        await browser.close();
      }
    });
  });
});

/** The HTTP status refusing a WebSocket to `url`, or "open" if it was accepted (and closed). */
function upgradeStatus(url) {
  return new Promise((resolve) => {
    const socket = new WebSocket(url.replace("http", "ws"));
    socket.on("error", () => {});
    socket.on("unexpected-response", (request, response) => {
      // With this listener, ws leaves the request to us: end it, or its socket stays open.
      response.resume();
      request.destroy();
      resolve(response.statusCode);
    });
    socket.on("open", () => {
      socket.terminate();
      resolve("open");
    });
  });
}

/** Opens a raw WebSocket for a connection negotiated with stateful reconnect. */
async function rawStateful(url, token) {
  const socket = new WebSocket(`${url.replace("http", "ws")}/chat?id=${token}`);
  const records = [];
  let waiters = [];
  socket.on("message", (data) => {
    for (const r of data.toString().split(RS).filter(Boolean)) records.push(JSON.parse(r));
    for (const w of waiters) w();
    waiters = [];
  });
  socket.closed = new Promise((res) => socket.on("close", (code) => res(code)));
  await new Promise((res, rej) => {
    socket.on("open", res);
    socket.on("error", rej);
  });
  return {
    socket,
    records,
    send: (...messages) => socket.send(messages.map((m) => JSON.stringify(m) + RS).join("")),
    async until(predicate, what) {
      await waitUntil(() => records.some(predicate), what, 5000);
      return records.find(predicate);
    },
  };
}

describe("stateful reconnect on the wire", () => {
  let host;

  before(async () => {
    host = await startHost();
  });
  after(() => host.stop());

  const negotiated = async () => (await negotiateStateful(host.url)).connectionToken;

  test("acks, Sequence and replay on a new socket, duplicates skipped", async () => {
    const token = await negotiated();
    const first = await rawStateful(host.url, token);
    first.send({ protocol: "json", version: 2 });
    await first.until((r) => r.type === undefined, "the handshake answer");
    first.send({ type: 1, invocationId: "1", target: "Echo", arguments: ["one"] });
    await first.until((r) => r.type === 3 && r.invocationId === "1", "the first completion");
    // The server's numbered messages: the chat hub's `online` broadcast (1), the completion (2).
    assert.deepEqual(first.records.slice(1, 3), [
      { type: 1, target: "online", arguments: [1] },
      { type: 3, invocationId: "1", result: "one" },
    ]);
    // The server acknowledges the client's message 1 within a second.
    assert.deepEqual(await first.until((r) => r.type === 8, "an Ack"), { type: 8, sequenceId: 1 });
    // The socket dies without a close; the client acknowledged nothing.
    first.socket.terminate();

    const second = await rawStateful(host.url, token);
    // No handshake: the server's Sequence names its oldest unacknowledged message, and it sends
    // everything from there again.
    await second.until((r) => r.type === 3, "the replayed completion");
    assert.deepEqual(second.records.slice(0, 3), [
      { type: 9, sequenceId: 1 },
      { type: 1, target: "online", arguments: [1] },
      { type: 3, invocationId: "1", result: "one" },
    ]);
    // The client resends its message 1 (skipped: the server had it), sends message 2, and
    // acknowledges the server's 1 and 2.
    second.send(
      { type: 9, sequenceId: 1 },
      { type: 1, invocationId: "1", target: "Echo", arguments: ["one"] },
      { type: 1, invocationId: "2", target: "Echo", arguments: ["two"] },
      { type: 8, sequenceId: 2 },
    );
    await second.until((r) => r.type === 3 && r.invocationId === "2", "the second completion");
    assert.equal(second.records.filter((r) => r.type === 3 && r.invocationId === "1").length, 1, "message 1 ran once");
    assert.deepEqual(await second.until((r) => r.type === 8 && r.sequenceId === 2, "an Ack of 2"), { type: 8, sequenceId: 2 });

    // A third socket gets only what is still unacknowledged: the second completion (3).
    second.socket.terminate();
    const third = await rawStateful(host.url, token);
    await third.until((r) => r.type === 3, "the replay");
    assert.deepEqual(third.records.slice(0, 2), [
      { type: 9, sequenceId: 3 },
      { type: 3, invocationId: "2", result: "two" },
    ]);
    third.socket.close();
  });

  test("a new socket replaces one that still seems open", async () => {
    const token = await negotiated();
    const first = await rawStateful(host.url, token);
    first.send({ protocol: "json", version: 2 });
    await first.until((r) => r.type === undefined, "the handshake answer");
    first.send({ type: 1, invocationId: "1", target: "Echo", arguments: ["one"] });
    await first.until((r) => r.type === 3, "a completion");
    // The client thinks its socket is dead; the server has not noticed anything.
    const second = await rawStateful(host.url, token);
    await second.until((r) => r.type === 3, "the replay on the new socket");
    assert.deepEqual(second.records[0], { type: 9, sequenceId: 1 });
    // The old socket is let go (without a close frame, as ASP.NET cancels it).
    assert.equal(await first.socket.closed, 1006);
    second.send({ type: 9, sequenceId: 2 }, { type: 1, invocationId: "2", target: "Echo", arguments: ["two"] });
    await second.until((r) => r.type === 3 && r.invocationId === "2", "an answer on the new socket");
    second.socket.close();
  });

  test("a new socket takes over from one whose writes are stuck", async () => {
    // The old socket stops reading while a sender floods it: the host's writes to it block on
    // a full send buffer, as they do when a network path dies without a reset.
    const roomy = await startHost({ args: ["--rate-limit", "0", "--reconnect-buffer", "64MiB", "--outbox", "4096"] });
    try {
      const token = (await negotiateStateful(roomy.url)).connectionToken;
      const first = await rawStateful(roomy.url, token);
      first.send({ protocol: "json", version: 2 });
      await first.until((r) => r.type === undefined, "the handshake answer");
      first.send({ type: 1, invocationId: "1", target: "WhoAmI", arguments: [] });
      const id = (await first.until((r) => r.type === 3, "its connection id")).result;
      first.socket.pause();
      const sender = await connect(`${roomy.url}/chat`);
      const big = "x".repeat(16 * 1024);
      const n = 2000;
      // A few at a time: the client joins what it sends at once into one WebSocket message.
      for (let i = 0; i < n; i += 4) {
        await Promise.all(Array.from({ length: 4 }, (_, j) => sender.invoke("SendToConnection", id, `${i + j} ${big}`)));
      }
      const buffered = await metric(roomy, "hubhost_reconnect_buffer_bytes");
      // What the host wrote before its writes blocked (the rest waits in the outbox).
      assert.ok(buffered > 1024 * 1024, `the host holds what the client has not acknowledged (${buffered} bytes)`);
      const second = await rawStateful(roomy.url, token);
      const last = (r) => r.type === 1 && r.arguments[1]?.startsWith(`${n - 1} `);
      await waitUntil(() => second.records.some(last), "the last message on the new socket", 30_000);
      const privates = second.records.filter((r) => r.type === 1 && r.target === "privateMessage");
      assert.deepEqual(privates.map((r) => Number(r.arguments[1].split(" ")[0])), Array.from({ length: n }, (_, i) => i));
      second.socket.close();
      first.socket.terminate();
      await sender.stop();
    } finally {
      await roomy.stop();
    }
  });

  test("a Sequence ahead of what was received closes the connection with ASP.NET's text", async () => {
    const token = await negotiated();
    const client = await rawStateful(host.url, token);
    client.send({ protocol: "json", version: 2 });
    await client.until((r) => r.type === undefined, "the handshake answer");
    client.send({ type: 9, sequenceId: 5 });
    const close = await client.until((r) => r.type === 7, "a Close");
    assert.deepEqual(close, {
      type: 7,
      error: "Connection closed with an error. InvalidOperationException: Sequence ID greater than amount of messages we've received.",
      allowReconnect: true,
    });
    await client.socket.closed;
  });

  test("a second socket is refused before the handshake, and after a version 1 handshake", async () => {
    const refused = (token) => upgradeStatus(`${host.url}/chat?id=${token}`);
    const token = await negotiated();
    const client = await rawStateful(host.url, token);
    assert.equal(await refused(token), 409, "no handshake yet: nothing to resume");
    // Version 1 cannot resume: the connection is a plain one, as in ASP.NET.
    client.send({ protocol: "json", version: 1 });
    await client.until((r) => r.type === undefined, "the handshake answer");
    assert.equal(await refused(token), 409);
    client.socket.close();
  });
});
