// Presence (the `presence` import): counts of the hub's connections, users and groups over every
// server, on one host and across hosts sharing a Redis, and what happens when a host dies, is
// paused, or Redis loses everything.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { isDeepStrictEqual } from "node:util";

import { connect, waitUntil, waitUntilAsync } from "./support/client.mjs";
import { jwt } from "./support/jwt.mjs";
import { hubPath, metric, startHost, waitReady } from "./support/host.mjs";
import { startRedis } from "./support/redis.mjs";

const SECRET = "presence-test-secret";
const as = (user) => ({ accessTokenFactory: () => jwt({ sub: user, exp: Math.floor(Date.now() / 1000) + 600 }, SECRET) });

/** The features hub's view: counts of the hub, of user `ana` and of group `room`. */
const counts = (client) => client.invoke("PresenceCounts", "ana", "room");

/** Waits until `client` reads `expected` counts (a connection that stopped is unregistered by
 * its server a moment after the client's `stop()` resolves). */
const countsBecome = (client, expected, what, timeoutMs) =>
  waitUntilAsync(async () => isDeepStrictEqual(await counts(client).catch(() => null), expected), what, timeoutMs);

/** One host in memory, or two hosts sharing a Redis (clients alternate between them). */
function onEveryBackplane(title, scenario) {
  it(`${title} (one host, in memory)`, async () => {
    const host = await startHost({ hubs: ["features"], args: ["--jwt-secret", SECRET] });
    try {
      await scenario([host, host]);
    } finally {
      await host.stop();
    }
  });
  it(`${title} (two hosts, Redis)`, async () => {
    const redis = await startRedis();
    const hosts = await Promise.all(
      [0, 1].map(() => startHost({ hubs: ["features"], args: ["--jwt-secret", SECRET, "--redis", redis.url] })),
    );
    try {
      await Promise.all(hosts.map((h) => waitReady(h)));
      await scenario(hosts);
    } finally {
      await Promise.all(hosts.map((h) => h.stop()));
      await redis.stop();
    }
  });
}

describe("presence", () => {
  onEveryBackplane("counts connections, users once however many tabs, and groups", async ([a, b]) => {
    const ana1 = await connect(`${a.url}/features`, as("ana"));
    const ana2 = await connect(`${b.url}/features`, as("ana"));
    const ben = await connect(`${a.url}/features`, as("ben"));
    const anonymous = await connect(`${b.url}/features`);
    assert.deepEqual(await counts(anonymous), { connections: 4, users: 2, user: 2, online: true, group: 0 });

    await ana1.invoke("JoinGroup", "room");
    await anonymous.invoke("JoinGroup", "room");
    // A group change for a connection on the other host counts once it completes.
    await ana2.invoke("AddToGroup", ben.connectionId, "room");
    assert.equal((await counts(ana2)).group, 3);
    const members = [
      { connectionId: ana1.connectionId, userId: "ana" },
      { connectionId: ben.connectionId, userId: "ben" },
      { connectionId: anonymous.connectionId, userId: null },
    ].sort((x, y) => (x.connectionId < y.connectionId ? -1 : 1));
    assert.deepEqual(await ana2.invoke("PresenceMembers", "room", 10), members);
    // The limit bounds the list (and a limit past the host's cap of 1,000 is capped, not refused).
    assert.equal((await ana2.invoke("PresenceMembers", "room", 2)).length, 2);
    assert.deepEqual(await ana2.invoke("PresenceMembers", "room", 5000), members);
    assert.deepEqual(await ana2.invoke("PresenceMembers", "nowhere", 10), []);

    await anonymous.invoke("LeaveGroup", "room");
    assert.equal((await counts(ana2)).group, 2);
    // A connection that leaves leaves its groups; its user stays online while a tab is open.
    await ana1.stop();
    await countsBecome(ana2, { connections: 3, users: 2, user: 1, online: true, group: 1 }, "ana's first tab gone");
    await ana2.stop();
    await countsBecome(anonymous, { connections: 2, users: 1, user: 0, online: false, group: 1 }, "ana offline");
    await Promise.all([ben.stop(), anonymous.stop()]);
  });

  it("the chat's online count includes the caller in on-connected and not in on-disconnected", async () => {
    const host = await startHost({ hubs: ["chat"] });
    try {
      const first = await connect(`${host.url}/chat`);
      const announced = [];
      first.on("online", (n) => announced.push(n));
      const second = await connect(`${host.url}/chat`);
      await second.stop();
      // `first`'s own announcement may come before or after it listens: what matters is that
      // `second` was announced as the second one online, and its leaving as one left.
      await waitUntilAsync(async () => announced.includes(2) && announced.at(-1) === 1, "both announcements");
      assert.ok(announced.every((n) => n === 1 || n === 2), `announced ${announced}`);
      assert.equal(await first.invoke("Online"), 1);
      await first.stop();
    } finally {
      await host.stop();
    }
  });
});

describe("presence on Redis is kept only for hubs that read it", () => {
  it("writes nothing for a hub whose code never asks, and starts when a new version does", async () => {
    const redis = await startRedis();
    const host = await startHost({ hubs: ["lobby", "features"], args: ["--redis", redis.url] });
    try {
      await waitReady(host);
      const presenceKeys = (hub) => redis.cli("--scan", "--pattern", `{hubhost:${hub}}:presence:*`).trim();
      const players = await Promise.all([0, 1].map(() => connect(`${host.url}/lobby`)));
      // The sentinel: presence is written in the registry's order, so once the features
      // client's connection is in Redis, the lobby's were weighed before it.
      const sentinel = await connect(`${host.url}/features`);
      await waitUntil(() => redis.cli("HLEN", "{hubhost:features}:presence:n").trim() === "1", "the features client counted");
      assert.equal(presenceKeys("lobby"), "");
      // The lobby is replaced by code that reads presence: its connections count at once.
      copyFileSync(hubPath("features"), join(host.dir, "lobby.wasm"));
      await waitUntil(() => redis.cli("HLEN", "{hubhost:lobby}:presence:n").trim() === "2", "the lobby's share written", 10_000);
      assert.deepEqual(await players[0].invoke("PresenceCounts", "ana", "room"), { connections: 2, users: 0, user: 0, online: false, group: 0 });
      await Promise.all([...players, sentinel].map((c) => c.stop()));
    } finally {
      await host.stop();
      await redis.stop();
    }
  });
});

describe("presence across hosts that fail", () => {
  const TTL_MS = 3000;

  /** Runs `scenario(redis, start)` on a Redis of its own; `start()` starts a host on it. */
  function withRedis(title, scenario) {
    it(title, async () => {
      const redis = await startRedis();
      const hosts = [];
      const start = async () => {
        const host = await startHost({
          hubs: ["chat", "features"],
          args: ["--redis", redis.url, "--presence-ttl", `${TTL_MS}ms`, "--detailed-errors", "--jwt-secret", SECRET],
        });
        hosts.push(host);
        await waitReady(host);
        return host;
      };
      try {
        await scenario(redis, start);
      } finally {
        await Promise.all(hosts.map((h) => h.stop()));
        await redis.stop();
      }
    });
  }

  withRedis("a host killed with 5 clients drops out of the count within the TTL, and out of its groups", async (_redis, start) => {
    const [doomed, survivor] = await Promise.all([start(), start()]);
    const watcher = await connect(`${survivor.url}/chat`);
    await Promise.all([0, 1, 2, 3, 4].map(() => connect(`${doomed.url}/chat`)));
    const inRoom = await connect(`${doomed.url}/features`);
    await inRoom.invoke("JoinGroup", "room");
    const observer = await connect(`${survivor.url}/features`);
    assert.equal(await watcher.invoke("Online"), 6);
    assert.equal((await counts(observer)).group, 1);

    const killed = Date.now();
    doomed.kill();
    await doomed.exited;
    // Each hub's share dies TTL after the host last wrote or beat for it.
    await waitUntilAsync(async () => (await watcher.invoke("Online")) === 1, "the true count", TTL_MS + 2000);
    await countsBecome(observer, { connections: 1, users: 0, user: 0, online: false, group: 0 }, "the room emptied", TTL_MS + 2000);
    // Its share dies TTL after its last heartbeat; the survivor's next heartbeat (a third of
    // the TTL later at most) drops it.
    const took = Date.now() - killed;
    assert.ok(took <= (TTL_MS * 4) / 3 + 1000, `the counts were right again after ${took} ms (TTL ${TTL_MS} ms)`);
    // The chat goes on: a newcomer is counted, and everyone hears it.
    const heard = [];
    watcher.on("online", (n) => heard.push(n));
    const newcomer = await connect(`${survivor.url}/chat`);
    assert.equal(await newcomer.invoke("Online"), 2);
    await waitUntilAsync(async () => heard.includes(2), "the newcomer announced");
    await Promise.all([watcher.stop(), newcomer.stop(), observer.stop()]);
  });

  withRedis("a host paused past its TTL drops out, and counts again once it runs", async (_redis, start) => {
    const [paused, other] = await Promise.all([start(), start()]);
    const clients = await Promise.all([0, 1, 2].map(() => connect(`${paused.url}/chat`)));
    const watcher = await connect(`${other.url}/chat`);
    assert.equal(await watcher.invoke("Online"), 4);
    process.kill(paused.pid, "SIGSTOP");
    try {
      // Dropped within the TTL and a third of it after its last heartbeat.
      await waitUntilAsync(async () => (await watcher.invoke("Online")) === 1, "the paused host dropped", (TTL_MS * 4) / 3 + 2000);
    } finally {
      process.kill(paused.pid, "SIGCONT");
    }
    // Its next heartbeat finds its share gone and writes it again.
    await waitUntilAsync(async () => (await watcher.invoke("Online")) === 4, "the host counted again", TTL_MS + 2000);
    assert.ok(paused.logsMatching("presence had expired in Redis").length >= 1);
    await Promise.all([...clients, watcher].map((c) => c.stop()));
  });

  withRedis("a share too large for one script is written again whole, and dropped when its host dies, in parts", async (redis, start) => {
    const [host, survivor] = await Promise.all([start(), start()]);
    // Two chunks of 500 connections.
    const clients = await Promise.all(Array.from({ length: 700 }, () => connect(`${host.url}/features`)));
    await Promise.all(clients.map((c) => c.invoke("JoinGroup", "room")));
    const expected = { connections: 700, users: 0, user: 0, online: false, group: 700 };
    assert.deepEqual(await counts(clients[0]), expected);
    redis.cli("FLUSHALL");
    await countsBecome(clients[0], expected, "the share written again", TTL_MS + 2000);
    assert.ok((await metric(host, "hubhost_presence_rewrites_total")) >= 2);
    // 700 connections and 700 memberships: three scripts of 500 drop them.
    const observer = await connect(`${survivor.url}/features`);
    host.kill();
    await host.exited;
    await countsBecome(observer, { connections: 1, users: 0, user: 0, online: false, group: 0 }, "the share dropped", (TTL_MS * 4) / 3 + 2000);
    assert.equal(redis.cli("ZCARD", "{hubhost:features}:presence:servers").trim(), "1");
    assert.equal(redis.cli("--scan", "--pattern", "{hubhost:features}:presence:g:*").trim(), "");
    assert.equal(await metric(survivor, "hubhost_presence_reaped_total"), 1);
    await observer.stop();
  });

  withRedis("after Redis restarts empty, every host writes its share again", async (redis, start) => {
    const hosts = await Promise.all([start(), start()]);
    const [a, b] = await Promise.all(hosts.map((h) => connect(`${h.url}/features`, as("ana"))));
    await a.invoke("JoinGroup", "room");
    assert.deepEqual(await counts(b), { connections: 2, users: 1, user: 2, online: true, group: 1 });

    await redis.stop();
    // While Redis is away, presence fails with the store's error (detailed errors are on).
    await assert.rejects(counts(b), (e) =>
      e.message.startsWith(
        "An unexpected error occurred invoking 'PresenceCounts' on the server. Exception: Presence::connections() failed: presence unavailable:",
      ),
    );
    await redis.start();
    await Promise.all(hosts.map((h) => waitReady(h)));
    await countsBecome(b, { connections: 2, users: 1, user: 2, online: true, group: 1 }, "the shares written again", TTL_MS + 2000);
    await Promise.all([a.stop(), b.stop()]);
  });
});
