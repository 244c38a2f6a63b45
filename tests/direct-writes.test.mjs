// Direct writes: a frame of a small fan-out (a room, a user, one connection) goes straight to an
// idle WebSocket's socket from the task that delivers it, instead of waking the connection's
// writer. What must hold: nothing lost or reordered when direct and queued frames mix, larger
// fan-outs and connections that keep their frames (stateful reconnect, --write-delay) are left to
// their writers, and keep-alive pings still go out once direct writes stop.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { RS, connect, rawHub, record, waitUntil } from "./support/client.mjs";
import { metric, startHost } from "./support/host.mjs";

const DIRECT = "hubhost_messages_out_direct_total";
const OUT = "hubhost_messages_out_total";

/** Connects `n` clients to `url`, each recording `roomMessage`. */
async function members(url, n, configure) {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const client = await connect(url, {}, configure);
      return { client, got: record(client, "roomMessage") };
    }),
  );
}

/** Every member's messages from each sender, in arrival order. */
function bySender(got) {
  const seen = new Map();
  for (const [, name, message] of got) {
    if (!seen.has(name)) seen.set(name, []);
    seen.get(name).push(Number(message));
  }
  return seen;
}

const sequence = (n) => Array.from({ length: n }, (_, i) => i);

describe("direct writes", () => {
  let host;
  before(async () => {
    host = await startHost({ hubs: ["chat"] });
  });
  after(() => host.stop());

  it("a busy room gets every message once, in each sender's order, most written directly", async () => {
    const room = await members(`${host.url}/chat`, 4);
    for (const { client } of room) await client.invoke("JoinRoom", "busy");
    const [directBefore, outBefore] = [await metric(host, DIRECT), await metric(host, OUT)];
    const PER_SENDER = 300;
    // Not awaited one by one: the four senders' messages overlap, so frames for one socket are
    // sometimes written directly and sometimes queued behind others.
    await Promise.all(
      room.map(({ client }, s) =>
        Promise.all(sequence(PER_SENDER).map((i) => client.send("SendToRoom", "busy", `s${s}`, String(i)))),
      ),
    );
    const total = room.length * PER_SENDER;
    for (const { got } of room) await waitUntil(() => got.length >= total, "every room message", 20_000);
    for (const { got } of room) {
      assert.equal(got.length, total);
      const seen = bySender(got);
      assert.equal(seen.size, room.length);
      for (const messages of seen.values()) assert.deepEqual(messages, sequence(PER_SENDER));
    }
    const direct = (await metric(host, DIRECT)) - directBefore;
    const out = (await metric(host, OUT)) - outBefore;
    assert.ok(out >= total * room.length, `${out} deliveries counted`);
    assert.ok(direct > 0 && direct <= out, `${direct} of ${out} written directly`);
    await Promise.all(room.map(({ client }) => client.stop()));
  });

  it("leaves a fan-out larger than a room to the writers", async () => {
    const everyone = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const client = await connect(`${host.url}/chat`);
        return { client, got: record(client, "broadcastMessage") };
      }),
    );
    const directBefore = await metric(host, DIRECT);
    await everyone[0].client.invoke("Send", "all", "to twenty");
    for (const { got } of everyone) await waitUntil(() => got.length === 1, "the broadcast everywhere");
    assert.equal((await metric(host, DIRECT)) - directBefore, 0);
    await Promise.all(everyone.map(({ client }) => client.stop()));
  });

  it("keeps sending pings once direct writes stop", async () => {
    const pinging = await startHost({ hubs: ["chat"], args: ["--keep-alive", "300ms"] });
    try {
      const raw = await rawHub(`${pinging.url}/chat`);
      const sender = await connect(`${pinging.url}/chat`);
      raw.send(`{"type":1,"invocationId":"1","target":"Whoami","arguments":[]}${RS}`);
      const answered = () => raw.records.find((r) => r.includes('"invocationId":"1"'));
      await waitUntil(answered, "the answer to Whoami");
      const id = JSON.parse(answered()).result;
      const directBefore = await metric(pinging, DIRECT);
      for (let i = 0; i < 5; i++) await sender.invoke("SendToConnection", id, `m${i}`);
      await waitUntil(() => raw.records.filter((r) => r.includes("privateMessage")).length === 5, "the messages");
      assert.ok((await metric(pinging, DIRECT)) - directBefore >= 1, "written directly");
      // The last message is a write: a ping follows it within the keep-alive interval.
      const last = raw.records.length;
      await waitUntil(() => raw.records.slice(last).includes('{"type":6}'), "a ping after the direct writes", 3000);
      raw.ws.close();
      await sender.stop();
    } finally {
      await pinging.stop();
    }
  });
});

describe("connections left to their writers", () => {
  it("with --write-delay, a room's frames wait to be joined: none is written directly", async () => {
    const host = await startHost({ hubs: ["chat"], args: ["--write-delay", "5ms"] });
    try {
      const room = await members(`${host.url}/chat`, 3);
      for (const { client } of room) await client.invoke("JoinRoom", "delayed");
      const directBefore = await metric(host, DIRECT);
      for (let i = 0; i < 20; i++) await room[0].client.invoke("SendToRoom", "delayed", "s", String(i));
      for (const { got } of room) await waitUntil(() => got.length === 20, "the room's messages");
      for (const { got } of room) assert.deepEqual([...bySender(got).get("s")], sequence(20));
      assert.equal((await metric(host, DIRECT)) - directBefore, 0);
      await Promise.all(room.map(({ client }) => client.stop()));
    } finally {
      await host.stop();
    }
  });

  it("under stateful reconnect, frames are numbered and kept by the writer: none is written directly", async () => {
    const host = await startHost({ hubs: ["chat"] });
    try {
      const room = await members(`${host.url}/chat`, 3, (builder) => builder.withStatefulReconnect());
      for (const { client } of room) await client.invoke("JoinRoom", "kept");
      const directBefore = await metric(host, DIRECT);
      for (let i = 0; i < 20; i++) await room[0].client.invoke("SendToRoom", "kept", "s", String(i));
      for (const { got } of room) await waitUntil(() => got.length === 20, "the room's messages");
      assert.equal((await metric(host, DIRECT)) - directBefore, 0);
      await Promise.all(room.map(({ client }) => client.stop()));
    } finally {
      await host.stop();
    }
  });
});
