// Client results with the official client: a hub asks one connection (on the same host or
// another one through Redis) to run a client method and awaits its answer. Answers, a client
// without a handler, a throwing handler, a client that leaves before answering, a timeout, a
// hub asking its own caller, every protocol.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { COMBINATIONS, connect, connectOver } from "./support/client.mjs";
import { startHost } from "./support/host.mjs";
import { startRedis } from "./support/redis.mjs";

const generic = (method) => `An unexpected error occurred invoking '${method}' on the server.`;
const whoami = (c) => c.invoke("Whoami");

describe("client results on one host", () => {
  let host;
  before(async () => {
    host = await startHost({ hubs: ["chat", "features"], args: ["--detailed-errors"] });
  });
  after(() => host.stop());

  for (const [transport, protocol] of COMBINATIONS) {
    it(`${transport}/${protocol}: the asked client's answer reaches the caller`, async () => {
      const asker = await connectOver(`${host.url}/chat`, { transport, protocol });
      const asked = await connectOver(`${host.url}/chat`, { transport, protocol });
      asked.on("Answer", (question) => `${question} 42`);
      assert.equal(await asker.invoke("Ask", await whoami(asked), "six times seven?"), "six times seven? 42");
      await Promise.all([asker.stop(), asked.stop()]);
    });
  }

  it("a hub may ask its own caller: the caller's answer is read while the call waits", async () => {
    const c = await connect(`${host.url}/features`);
    c.on("Answer", (question) => `me: ${question}`);
    assert.equal(await c.invoke("AskCaller", "who?"), "me: who?");
    await c.stop();
  });

  it("an answer may come later (a promise) and be any value", async () => {
    const [asker, asked] = await Promise.all([connect(`${host.url}/features`), connect(`${host.url}/features`)]);
    asked.on("Number", () => new Promise((resolve) => setTimeout(() => resolve(7), 50)));
    assert.equal(await asker.invoke("AskNumber", idOf(asked)), "got 7");
    await Promise.all([asker.stop(), asked.stop()]);
  });

  it("a client without a handler answers with the official client's text", async () => {
    const [asker, asked] = await Promise.all([connect(`${host.url}/chat`), connect(`${host.url}/chat`)]);
    await assert.rejects(asker.invoke("Ask", await whoami(asked), "anyone?"), {
      message: `${generic("Ask")} HubException: Client didn't provide a result.`,
    });
    await Promise.all([asker.stop(), asked.stop()]);
  });

  it("a handler that throws answers with its error", async () => {
    const [asker, asked] = await Promise.all([connect(`${host.url}/chat`), connect(`${host.url}/chat`)]);
    asked.on("Answer", () => {
      throw new Error("not telling");
    });
    await assert.rejects(asker.invoke("Ask", await whoami(asked), "secret?"), {
      message: `${generic("Ask")} HubException: Error: not telling`,
    });
    await Promise.all([asker.stop(), asked.stop()]);
  });

  it("a client that leaves before answering fails the question at once", async () => {
    const [asker, asked] = await Promise.all([connect(`${host.url}/features`), connect(`${host.url}/features`)]);
    const questioned = new Promise((resolve) => {
      asked.on("Answer", () => {
        resolve();
        return new Promise(() => {}); // never answers
      });
    });
    const started = Date.now();
    const call = asker.invoke("AskWithin", idOf(asked), "still there?", 4000);
    await questioned;
    await asked.stop();
    await assert.rejects(call, { message: `${generic("AskWithin")} IOException: The client is not connected.` });
    assert.ok(Date.now() - started < 3000, "not by the timeout");
    await asker.stop();
  });

  it("a client that does not answer in time fails the question with a timeout", async () => {
    const [asker, asked] = await Promise.all([connect(`${host.url}/features`), connect(`${host.url}/features`)]);
    asked.on("Answer", () => new Promise(() => {}));
    await assert.rejects(asker.invoke("AskWithin", idOf(asked), "hello?", 200), {
      message: `${generic("AskWithin")} OperationCanceledException: The client did not answer in time.`,
    });
    // The asked client is still connected and can be asked again.
    asked.off("Answer");
    asked.on("Answer", (q) => `late ${q}`);
    assert.equal(await asker.invoke("AskWithin", idOf(asked), "now?", 2000), "late now?");
    await Promise.all([asker.stop(), asked.stop()]);
  });

  it("asking a connection that does not exist fails at once on one host", async () => {
    const c = await connect(`${host.url}/features`);
    assert.equal(await c.invoke("AskNumber", "no-such-connection"), "Gone");
    await c.stop();
  });
});

/** A connection's id, as the server knows it (the official client exposes it). */
function idOf(connection) {
  return connection.connectionId;
}

describe("client results across hosts sharing Redis", () => {
  let redis;
  let hosts;
  before(async () => {
    redis = await startRedis();
    hosts = await Promise.all(
      [0, 1].map(() => startHost({ hubs: ["chat", "features"], args: ["--redis", redis.url, "--detailed-errors"] })),
    );
  });
  after(async () => {
    await Promise.all(hosts.map((h) => h.stop()));
    await redis.stop();
  });

  for (const protocol of ["json", "messagepack"]) {
    it(`${protocol}: a hub on host A asks a client on host B`, async () => {
      const asker = await connectOver(`${hosts[0].url}/chat`, { protocol });
      const asked = await connectOver(`${hosts[1].url}/chat`, { protocol });
      asked.on("Answer", (question) => `from B: ${question}`);
      assert.equal(await asker.invoke("Ask", await whoami(asked), "hi?"), "from B: hi?");
      await Promise.all([asker.stop(), asked.stop()]);
    });
  }

  it("errors and a client that leaves come back across hosts", async () => {
    const asker = await connect(`${hosts[0].url}/features`);
    const asked = await connect(`${hosts[1].url}/features`);
    assert.equal(await asker.invoke("AskNumber", idOf(asked)), 'Client("Client didn\'t provide a result.")');
    const questioned = new Promise((resolve) => {
      asked.on("Answer", () => {
        resolve();
        return new Promise(() => {});
      });
    });
    const call = asker.invoke("AskWithin", idOf(asked), "there?", 4000);
    await questioned;
    await asked.stop();
    await assert.rejects(call, { message: `${generic("AskWithin")} IOException: The client is not connected.` });
    await asker.stop();
  });

  it("a connection no server holds times out", async () => {
    const c = await connect(`${hosts[0].url}/features`);
    await assert.rejects(c.invoke("AskWithin", "no-such-connection", "?", 300), {
      message: `${generic("AskWithin")} OperationCanceledException: The client did not answer in time.`,
    });
    await c.stop();
  });
});
