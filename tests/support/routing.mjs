// The routing suite every backplane passes: three hosts sharing one, every routing kind crossing
// hosts, prefixes kept apart. `startBackend` starts a Redis (or a cluster) and says how hosts
// reach it.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { broadcastSentinel, connect, connectOver, privateSentinel, record, waitUntil, waitUntilAsync } from "./client.mjs";
import { readyz, startHost, waitReady } from "./host.mjs";
import { jwt } from "./jwt.mjs";

export const SECRET = "backplane-test-secret";

/** A host of the chat hub on `backend`. */
export function startBackendHost(backend, { prefix = "hubhost", args = [] } = {}) {
  return startHost({
    hubs: ["chat"],
    args: [...backend.args(), "--redis-prefix", prefix, "--jwt-secret", SECRET, "--redis-ack-timeout", "1s", ...args],
  });
}

export function routingSuite(name, startBackend) {
describe(name, () => {
  let backend;
  let hosts = [];
  const clients = [];
  const join = async (host, options = {}) => {
    const c = await connect(`${host.url}/chat`, options);
    clients.push(c);
    return c;
  };

  before(async () => {
    backend = await startBackend();
    hosts = await Promise.all([0, 1, 2].map(() => startBackendHost(backend)));
    await Promise.all(hosts.map((h) => waitReady(h)));
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await Promise.all(hosts.map((h) => h.stop()));
    await backend.stop();
  });

  it("reports the Redis backplane as ready", async () => {
    for (const host of hosts) {
      assert.deepEqual((await readyz(host)).body, { ready: true, hubs: ["chat"], backplane: true, backplaneKind: backend.kind });
    }
  });

  it("sends to all across hosts", async () => {
    const [a, b, c] = await Promise.all(hosts.map((h) => join(h)));
    const got = [a, b, c].map((x) => record(x, "broadcastMessage"));
    await b.invoke("Send", "ben", "hello from B");
    await waitUntil(() => got.every((g) => g.length === 1), "delivery on every host");
    for (const g of got) assert.deepEqual(g, [["ben", "hello from B"]]);
  });

  it("carries messages between transports and protocols across hosts", async () => {
    // Long polling with MessagePack on A, Server-Sent Events with JSON on B, WebSockets on C.
    const [a, b, c] = await Promise.all([
      connectOver(`${hosts[0].url}/chat`, { transport: "LongPolling", protocol: "messagepack" }),
      connectOver(`${hosts[1].url}/chat`, { transport: "ServerSentEvents", protocol: "json" }),
      connectOver(`${hosts[2].url}/chat`, { transport: "WebSockets", protocol: "messagepack" }),
    ]);
    clients.push(a, b, c);
    const got = [a, b, c].map((x) => record(x, "broadcastMessage"));
    await a.invoke("Send", "ana", "from long polling on A");
    await b.invoke("Send", "ben", "from SSE on B");
    await c.invoke("Send", "cai", "from WebSockets on C");
    await waitUntil(() => got.every((g) => g.length === 3), "every message at every client");
    for (const g of got) {
      assert.deepEqual(
        g.slice().sort(),
        [
          ["ana", "from long polling on A"],
          ["ben", "from SSE on B"],
          ["cai", "from WebSockets on C"],
        ],
      );
    }
    // A private message from the WebSocket on C to the long-polling client on A.
    await privateSentinel(c, a);
  });

  it("excludes the caller with Others across hosts", async () => {
    const [a, b, c] = await Promise.all(hosts.map((h) => join(h)));
    const got = [a, b, c].map((x) => record(x, "broadcastMessage"));
    await a.invoke("SendToOthers", "ana", "not me");
    await waitUntil(() => got[1].length === 1 && got[2].length === 1, "delivery to the others");
    await privateSentinel(a, a);
    assert.deepEqual(got[0], []);
  });

  it("sends to one connection on another host", async () => {
    const [a, b, c] = await Promise.all(hosts.map((h) => join(h)));
    const got = [a, b, c].map((x) => record(x, "privateMessage"));
    await a.invoke("SendToConnection", c.connectionId, "psst");
    await waitUntil(() => got[2].length === 1, "delivery on host C");
    await broadcastSentinel(a, [a, b]);
    assert.deepEqual(got[2], [[a.connectionId, "psst"]]);
    assert.deepEqual([got[0], got[1]], [[], []]);
  });

  it("groups span hosts, with members added from another host than their own", async () => {
    const [a, b, c] = await Promise.all(hosts.map((h) => join(h)));
    const outsider = await join(hosts[0]);
    const got = [a, b, c, outsider].map((x) => record(x, "roomMessage"));
    // Each completion arrives only once the owning host has acknowledged the change.
    await b.invoke("AddToRoom", a.connectionId, "crew");
    await c.invoke("AddToRoom", b.connectionId, "crew");
    await a.invoke("AddToRoom", c.connectionId, "crew");
    await outsider.invoke("SendToRoom", "crew", "out", "to the crew");
    await waitUntil(() => got.slice(0, 3).every((g) => g.length === 1), "group delivery on three hosts");
    await privateSentinel(outsider, outsider);
    for (const g of got.slice(0, 3)) assert.deepEqual(g, [["crew", "out", "to the crew"]]);
    assert.deepEqual(got[3], [], "a non-member receives nothing");

    // Leaving is seen everywhere too.
    await b.invoke("LeaveRoom", "crew");
    await a.invoke("SendToRoom", "crew", "ana", "second");
    await waitUntil(() => got[0].length === 2 && got[2].length === 2, "second delivery");
    await privateSentinel(a, b);
    assert.equal(got[1].length, 1, "b left: nothing more for it");
  });

  it("fails a group change for a connection no host has, after the ack timeout", async () => {
    const a = await join(hosts[0]);
    await assert.rejects(a.invoke("AddToRoom", "no-such-connection", "crew"), {
      message: "An unexpected error occurred invoking 'AddToRoom' on the server.",
    });
  });

  it("sends to a user's connections on two hosts", async () => {
    const token = jwt({ sub: "ana", exp: Math.floor(Date.now() / 1000) + 600 }, SECRET);
    const ana1 = await join(hosts[0], { accessTokenFactory: () => token });
    const ana2 = await join(hosts[1], { accessTokenFactory: () => token });
    const ben = await join(hosts[2], { accessTokenFactory: () => jwt({ sub: "ben", exp: Math.floor(Date.now() / 1000) + 600 }, SECRET) });
    assert.equal(await ana2.invoke("WhoamiUser"), "ana");
    const got = [ana1, ana2, ben].map((x) => record(x, "privateMessage"));
    await ben.invoke("SendToUser", "ana", "hi ana");
    await waitUntil(() => got[0].length === 1 && got[1].length === 1, "both of ana's connections");
    await broadcastSentinel(ben, [ben]);
    assert.deepEqual(got[2], []);
  });

  it("asks a client on another host for a result", async () => {
    const [asker, asked] = await Promise.all([join(hosts[0]), join(hosts[2])]);
    asked.on("Answer", (question) => `${question} 42`);
    assert.equal(await asker.invoke("Ask", asked.connectionId, "six times seven?"), "six times seven? 42");
  });

  it("counts who is online over every host", async () => {
    const before = await (await join(hosts[0])).invoke("Online");
    const more = await Promise.all(hosts.map((h) => join(h)));
    // A client hears it is connected before its host has written it to presence (a moment
    // later): the count gets there, and stays.
    await waitUntilAsync(async () => (await more[2].invoke("Online")) === before + 3, `${before + 3} online`);
    assert.equal(await more[0].invoke("Online"), before + 3);
  });

  it("refuses an invalid token with 401", async () => {
    await assert.rejects(join(hosts[0], { accessTokenFactory: () => jwt({ sub: "eve", exp: Math.floor(Date.now() / 1000) + 600 }, "wrong-secret") }), /401/);
  });

  it("keeps two prefixes on one Redis apart", async () => {
    const other = await startBackendHost(backend, { prefix: "other-app" });
    try {
      await waitReady(other);
      const mine = await join(hosts[0]);
      const theirs = await join(other);
      const neighbour = await join(hosts[1]);
      const gotMine = record(mine, "broadcastMessage");
      const gotTheirs = record(theirs, "broadcastMessage");
      await theirs.invoke("Send", "x", "for other-app only");
      await waitUntil(() => gotTheirs.length === 1, "the other deployment's delivery");
      // Sent through Redis after x was: on one Redis, had x reached host 0's subscriber link, it
      // would have arrived at mine before y. On a cluster the subscriber counts below show no
      // host of this deployment listens on the other's channels.
      await neighbour.invoke("Send", "y", "for hubhost only");
      await waitUntil(() => gotMine.length === 1, "own-prefix delivery");
      assert.deepEqual(gotMine, [["y", "for hubhost only"]]);
      await privateSentinel(theirs, theirs);
      assert.deepEqual(gotTheirs, [["x", "for other-app only"]]);
      // And on Redis: each deployment's hosts subscribe to their own prefix only.
      assert.equal(backend.subscribers(backend.allChannel("other-app", "chat")), 1);
      assert.equal(backend.subscribers(backend.allChannel("hubhost", "chat")), 3);
      // Their state is apart too.
      assert.equal(await theirs.invoke("Online"), 1);
      await theirs.stop();
    } finally {
      await other.stop();
    }
  });
});
}
