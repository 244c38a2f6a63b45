// Several hosts sharing one real Redis act as one server: every routing kind crosses hosts,
// prefixes isolate deployments, shared state is exact, and Redis outages are survived.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { connect, record, waitUntil } from "./support/client.mjs";
import { metric, readyz, startHost, waitReady } from "./support/host.mjs";
import { startRedis } from "./support/redis.mjs";
import { routingSuite, startBackendHost } from "./support/routing.mjs";

function startRedisHost(redis, options) {
  return startBackendHost({ args: () => ["--redis", redis.url] }, options);
}

routingSuite("three hosts on one Redis", async () => {
  const redis = await startRedis();
  return {
    redis,
    kind: "redis",
    args: () => ["--redis", redis.url],
    subscribers: (channel) => Number(redis.cli("PUBSUB", "NUMSUB", channel).trim().split("\n")[1]),
    allChannel: (prefix, hub) => `${prefix}:${hub}:all`,
    stop: () => redis.stop(),
  };
});

describe("shared state across hosts", () => {
  let redis;
  let hosts = [];
  before(async () => {
    redis = await startRedis();
    hosts = await Promise.all([0, 1, 2].map(() => startRedisHost(redis, { prefix: "count" })));
    await Promise.all(hosts.map((h) => waitReady(h)));
  });
  after(async () => {
    await Promise.all(hosts.map((h) => h.stop()));
    await redis.stop();
  });

  it("counts 300 concurrent connects and disconnects exactly", async () => {
    const observer = await connect(`${hosts[0].url}/chat`);
    const n = 300;
    const crowd = await Promise.all(
      Array.from({ length: n }, (_, i) => connect(`${hosts[i % 3].url}/chat`)),
    );
    // Each hub's on-connected runs right after the handshake, so the count settles just after
    // the last start() resolves (as with ASP.NET Core's OnConnectedAsync).
    // The hub counts through presence, which every host writes to Redis.
    const online = () => Number(redis.cli("HLEN", "{count:chat}:presence:n").trim());
    await waitUntil(() => online() === n + 1, "the count at 301", 15_000);
    assert.equal(await observer.invoke("Online"), n + 1);
    await Promise.all(crowd.map((c) => c.stop()));
    // on-disconnected runs after each close; wait for the last of them.
    await waitUntil(() => online() === 1, "the count back to 1", 15_000);
    assert.equal(await observer.invoke("Online"), 1);
    await observer.stop();
  });
});

describe("Redis outages", () => {
  it("hosts stay up, count what they drop, restore subscriptions within 2 s, and deliver again", async () => {
    const redis = await startRedis();
    const hosts = await Promise.all([0, 1, 2].map(() => startRedisHost(redis)));
    await Promise.all(hosts.map((h) => waitReady(h)));
    const [a, b, c] = await Promise.all(hosts.map((h) => connect(`${h.url}/chat`)));
    const a2 = await connect(`${hosts[0].url}/chat`);
    const got = [a, b, a2, c].map((x) => record(x, "broadcastMessage"));
    try {
      await a.invoke("Send", "ana", "before");
      await waitUntil(() => got.every((g) => g.length === 1), "delivery before the outage");

      await redis.stop();
      const started = Date.now();
      while ((await readyz(hosts[0])).status === 200) {
        if (Date.now() - started > 5000) throw new Error("host still ready without Redis");
        await new Promise((r) => setTimeout(r, 20));
      }
      // Down: hosts answer, local clients still chat, and the loss is counted.
      assert.equal(await (await fetch(`${hosts[0].url}/healthz`)).text(), "ok");
      assert.equal((await readyz(hosts[0])).body.backplane, false);
      await a.invoke("Send", "ana", "during");
      await waitUntil(() => got[2].length === 2, "local delivery during the outage");
      assert.ok((await metric(hosts[0], "hubhost_backplane_dropped_total")) >= 1);
      assert.equal(await metric(hosts[0], "hubhost_backplane_connected"), 0);

      await redis.start();
      const restoredIn = await Promise.all(hosts.map((h) => waitReady(h, 2000)));
      console.log(`subscriptions restored ${Math.max(...restoredIn)} ms after Redis came back`);
      await a.invoke("Send", "ana", "after");
      await waitUntil(() => got[1].length >= 2 && got[3].length >= 2 && got[0].length === 3, "delivery after the outage");
      // "after" came from the same sender on the same path: "during" never reached the other hosts.
      assert.deepEqual(got[1].map((m) => m[1]), ["before", "after"]);
      assert.deepEqual(got[3].map((m) => m[1]), ["before", "after"]);
      assert.deepEqual(got[0].map((m) => m[1]), ["before", "during", "after"], "the sender's own host delivered all three once");
      assert.ok((await metric(hosts[0], "hubhost_backplane_reconnects_total")) >= 1);
      // The outage is logged once when it begins and once when it ends, with its count:
      // not once per message (local clients got every one of them).
      const begun = hosts[0].logsMatching("lost the Redis link").length + hosts[0].logsMatching("cannot publish to Redis").length;
      assert.equal(begun, 1);
      assert.equal(hosts[0].logsMatching("dropped;").length + hosts[0].logsMatching("send dropped").length, 0);
      const ended = hosts[0].logs.filter((l) => String(l.fields?.message).includes("could not reach other servers meanwhile"));
      assert.equal(ended.length, 1);
      assert.equal(ended[0].fields.dropped, await metric(hosts[0], "hubhost_backplane_dropped_total"));
      assert.ok(ended[0].fields.dropped >= 1);
      assert.equal(await metric(hosts[0], "hubhost_backplane_outages_total"), 1);
      for (const host of hosts) assert.equal(host.logsMatching("panicked").length, 0);
    } finally {
      await Promise.all([a, b, c, a2].map((x) => x.stop()));
      await Promise.all(hosts.map((h) => h.stop()));
      await redis.stop();
    }
  });

  it("a host started while Redis is down serves local clients, then joins", async () => {
    const redis = await startRedis();
    await redis.stop();
    const host = await startRedisHost(redis);
    try {
      assert.equal((await readyz(host)).status, 503);
      const a = await connect(`${host.url}/chat`);
      const b = await connect(`${host.url}/chat`);
      const got = record(b, "broadcastMessage");
      await a.invoke("Send", "ana", "local only");
      await waitUntil(() => got.length === 1, "local delivery without Redis");
      await redis.start();
      await waitReady(host, 5000);
      await a.invoke("Send", "ana", "through Redis");
      await waitUntil(() => got.length === 2, "delivery through Redis");
      await Promise.all([a.stop(), b.stop()]);
    } finally {
      await host.stop();
      await redis.stop();
    }
  });

  it("a wrong password fails at start with one clear line", async () => {
    const redis = await startRedis();
    try {
      const error = await startHost({
        hubs: ["chat"],
        args: ["--redis", `redis://:wrong@127.0.0.1:${redis.port}`],
      }).catch((e) => e);
      assert.ok(error instanceof Error);
      assert.match(error.message, /Redis at redis:\/\/\*\*\*@127\.0\.0\.1:\d+ rejected the credentials/);
      assert.doesNotMatch(error.message, /wrong/, "the password is not logged");
      const lines = error.message.split("\n").filter((l) => l.includes("rejected the credentials"));
      assert.ok(lines.length <= 2, `one error (log line + exit message), got ${lines.length}`);
      assert.doesNotMatch(error.message, /Stack backtrace|panicked/);
    } finally {
      await redis.stop();
    }
  });
});
