// The example hubs beyond chat: a game lobby (rooms as groups, per-room state) and presence with
// shared counters.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { connect, record, waitUntil } from "./support/client.mjs";
import { startHost } from "./support/host.mjs";

describe("example hubs", () => {
  let host;
  const clients = [];
  const join = async (hub) => {
    const c = await connect(`${host.url}/${hub}`);
    clients.push(c);
    return c;
  };
  before(async () => {
    host = await startHost({ hubs: ["lobby", "presence"] });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await host.stop();
  });

  it("lobby: rooms, players, a full start, and a refused late join", async () => {
    const [ana, ben, cy] = [await join("lobby"), await join("lobby"), await join("lobby")];
    const started = [ana, ben].map((c) => record(c, "gameStarted"));
    const joined = record(ana, "playerJoined");
    assert.deepEqual(await ana.invoke("CreateRoom", "arena"), ["arena"]);
    assert.deepEqual(await cy.invoke("ListRooms"), ["arena"]);
    assert.equal(await ana.invoke("JoinRoom", "arena", "ana"), 1);
    await assert.rejects(ana.invoke("StartGame", "arena"), {
      message: "An unexpected error occurred invoking 'StartGame' on the server. HubException: A game needs at least two players.",
    });
    assert.equal(await ben.invoke("JoinRoom", "arena", "ben"), 2);
    await waitUntil(() => joined.length === 2, "join notices in the room");
    assert.deepEqual(joined.at(-1), ["arena", "ben", 2]);
    assert.deepEqual(await cy.invoke("Players", "arena"), ["ana", "ben"]);
    await cy.invoke("StartGame", "arena");
    await waitUntil(() => started.every((s) => s.length === 1), "game start in the room");
    assert.deepEqual(started[0], [["arena", ["ana", "ben"]]]);
    await assert.rejects(cy.invoke("JoinRoom", "arena", "cy"), {
      message: "An unexpected error occurred invoking 'JoinRoom' on the server. HubException: The game in 'arena' has started.",
    });
    await assert.rejects(cy.invoke("JoinRoom", "nowhere", "cy"), /There is no room 'nowhere'/);
  });

  it("presence: who is online, and shared counters", async () => {
    const a = await join("presence");
    const b = await join("presence");
    const online = await a.invoke("Online");
    assert.ok(online.includes(a.connectionId) && online.includes(b.connectionId));
    const counters = record(b, "counter");
    assert.equal(await a.invoke("Increment", "clicks", 2), 2);
    assert.equal(await a.invoke("Increment", "clicks", 3), 5);
    await waitUntil(() => counters.length === 2, "counter broadcasts");
    assert.deepEqual(counters.at(-1), ["clicks", 5]);
    assert.equal(await b.invoke("Get", "clicks"), 5);
    const presence = record(a, "presence");
    await b.stop();
    await waitUntil(() => presence.some((p) => !p[0].includes(b.connectionId)), "b leaving");
  });
});
