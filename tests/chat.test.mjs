// The chat hub with the official SignalR client: broadcast, results, groups, exclusions.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { broadcastSentinel, connect, privateSentinel, record, signalR, waitUntil, waitUntilAsync } from "./support/client.mjs";
import { metric, startHost } from "./support/host.mjs";

describe("chat hub with the official client", () => {
  let host;
  const clients = [];
  const join = async (options) => {
    const c = await connect(`${host.url}/chat`, options);
    clients.push(c);
    return c;
  };

  before(async () => {
    host = await startHost({ hubs: ["chat"] });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await host.stop();
  });

  it("broadcasts Send to three clients, negotiated and skipNegotiation alike", async () => {
    const a = await join();
    const b = await join({ skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets });
    const c = await join({ transport: signalR.HttpTransportType.WebSockets });
    const got = [a, b, c].map((x) => record(x, "broadcastMessage"));
    await a.invoke("Send", "ana", "hello, everyone");
    await waitUntil(() => got.every((g) => g.length === 1), "three deliveries");
    for (const g of got) assert.deepEqual(g, [["ana", "hello, everyone"]]);
    assert.equal(a.state, signalR.HubConnectionState.Connected);
  });

  it("resolves invoke with the method's result", async () => {
    const a = await join();
    assert.equal(await a.invoke("Echo", "ping"), "ping");
    assert.equal(await a.invoke("Whoami"), a.connectionId);
    // Unicode and JSON specials survive the round trip.
    const tricky = 'quote " backslash \\ emoji 🎉 \u2028 end';
    assert.equal(await a.invoke("Echo", tricky), tricky);
  });

  it("matches method names case-insensitively", async () => {
    const a = await join();
    assert.equal(await a.invoke("echo", "x"), "x");
    assert.equal(await a.invoke("ECHO", "y"), "y");
    assert.equal(await a.invoke("sendtoothers", "n", "m"), undefined);
  });

  it("completes void methods without a result", async () => {
    const a = await join();
    assert.equal(await a.invoke("JoinRoom", "void-room"), undefined);
  });

  it("sends to a group only its members", async () => {
    const [a, b, c] = [await join(), await join(), await join()];
    const got = [a, b, c].map((x) => record(x, "roomMessage"));
    const joined = record(a, "joined");
    await a.invoke("JoinRoom", "lobby");
    await b.invoke("JoinRoom", "lobby");
    // The joiner is a member by the time the hub's own send to the group goes out.
    await waitUntil(() => joined.length === 2, "joined notices");
    assert.deepEqual(joined, [["lobby", a.connectionId], ["lobby", b.connectionId]]);

    await c.invoke("SendToRoom", "lobby", "cy", "from outside");
    await waitUntil(() => got[0].length === 1 && got[1].length === 1, "group delivery");
    await privateSentinel(c, c);
    assert.deepEqual(got[0], [["lobby", "cy", "from outside"]]);
    assert.deepEqual(got[1], [["lobby", "cy", "from outside"]]);
    assert.deepEqual(got[2], [], "a non-member receives nothing");

    await b.invoke("LeaveRoom", "lobby");
    await c.invoke("SendToRoom", "lobby", "cy", "second");
    await waitUntil(() => got[0].length === 2, "second group delivery");
    await privateSentinel(c, b);
    assert.equal(got[1].length, 1, "a member who left receives nothing more");
  });

  it("leaves groups on disconnect", async () => {
    const a = await join();
    const b = await join();
    const got = record(a, "roomMessage");
    const memberships = () => metric(host, "hubhost_group_memberships");
    const before = await memberships();
    await b.invoke("JoinRoom", "gone");
    await a.invoke("JoinRoom", "gone");
    assert.equal(await memberships(), before + 2);
    await b.stop();
    // The server forgets b's membership: the count goes back down by exactly one.
    await waitUntilAsync(async () => (await memberships()) === before + 1, "b's membership gone");
    await a.invoke("SendToRoom", "gone", "a", "still here?");
    await waitUntil(() => got.length === 1, "delivery to the remaining member");
  });

  it("excludes the caller with Others (AllExcept)", async () => {
    const [a, b, c] = [await join(), await join(), await join()];
    const got = [a, b, c].map((x) => record(x, "broadcastMessage"));
    await a.invoke("SendToOthers", "ana", "not to me");
    await waitUntil(() => got[1].length === 1 && got[2].length === 1, "delivery to the others");
    await privateSentinel(a, a);
    assert.deepEqual(got[0], [], "the caller is excluded");
    assert.deepEqual(got[1], [["ana", "not to me"]]);
  });

  it("sends to one connection by id", async () => {
    const [a, b, c] = [await join(), await join(), await join()];
    const got = [a, b, c].map((x) => record(x, "privateMessage"));
    await a.invoke("SendToConnection", c.connectionId, "psst");
    await waitUntil(() => got[2].length === 1, "private delivery");
    await broadcastSentinel(a, [a, b]);
    assert.deepEqual(got[2], [[a.connectionId, "psst"]]);
    assert.deepEqual([got[0], got[1]], [[], []]);
  });

  it("runs fire-and-forget sends (no invocation id) without a completion", async () => {
    const a = await join();
    const b = await join();
    const got = record(b, "broadcastMessage");
    await a.send("Send", "ana", "no answer wanted");
    await waitUntil(() => got.some((m) => m[1] === "no answer wanted"), "fire-and-forget delivery");
  });
});
