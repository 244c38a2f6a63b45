// The SignalR wire protocol: negotiate, connect, handshake, framing, keep-alive and bad input,
// each with the exact observed behaviour.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { RS, connect, rawHub, rawSocket, record, signalR, waitUntil } from "./support/client.mjs";
import { metric, startHost } from "./support/host.mjs";

const MAX_SIZE_TEXT =
  "Connection closed with an error. InvalidDataException: The maximum message size of 32768B was exceeded. The message size can be configured with --max-message-size.";

describe("negotiate and connect", () => {
  let host;
  before(async () => {
    host = await startHost({ hubs: ["chat"] });
  });
  after(() => host.stop());

  it("answers negotiate version 1 with a separate connection token", async () => {
    const res = await fetch(`${host.url}/chat/negotiate?negotiateVersion=1`, { method: "POST" });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.negotiateVersion, 1);
    assert.match(body.connectionId, /^[A-Za-z0-9_-]{22}$/);
    assert.match(body.connectionToken, /^[A-Za-z0-9_-]{22}$/);
    assert.notEqual(body.connectionId, body.connectionToken);
    assert.deepEqual(body.availableTransports, [
      { transport: "WebSockets", transferFormats: ["Text", "Binary"] },
      { transport: "ServerSentEvents", transferFormats: ["Text"] },
      { transport: "LongPolling", transferFormats: ["Text", "Binary"] },
    ]);
    assert.equal(body.useStatefulReconnect, undefined);
  });

  it("answers negotiate version 0 without a token, and the connection id is the id", async () => {
    const res = await fetch(`${host.url}/chat/negotiate`, { method: "POST" });
    const body = await res.json();
    assert.equal(body.negotiateVersion, 0);
    assert.equal(body.connectionToken, undefined);
    const raw = await rawHub(`${host.url}/chat?id=${body.connectionId}`);
    raw.ws.close();
  });

  it("answers 404 for an unknown hub, on negotiate, on the socket, and to the client", async () => {
    const res = await fetch(`${host.url}/nope/negotiate?negotiateVersion=1`, { method: "POST" });
    assert.equal(res.status, 404);
    await assert.rejects(rawSocket(`${host.url}/nope`), (e) => e.status === 404);
    await assert.rejects(connect(`${host.url}/nope`), /404/);
  });

  it("answers 404 for an unknown connection id and 409 for a second socket", async () => {
    await assert.rejects(rawSocket(`${host.url}/chat?id=bogus`), (e) => e.status === 404 && e.body === "No Connection with that ID");
    const { connectionToken } = await (await fetch(`${host.url}/chat/negotiate?negotiateVersion=1`, { method: "POST" })).json();
    const first = await rawSocket(`${host.url}/chat?id=${connectionToken}`);
    await assert.rejects(rawSocket(`${host.url}/chat?id=${connectionToken}`), (e) => e.status === 409);
    first.ws.close();
  });

  it("answers a plain GET without an id with 400", async () => {
    const res = await fetch(`${host.url}/chat`);
    assert.equal(res.status, 400);
    assert.equal(await res.text(), "Connection ID required");
  });

  it("allows browsers' cross-origin negotiate with credentials", async () => {
    const res = await fetch(`${host.url}/chat/negotiate?negotiateVersion=1`, {
      method: "OPTIONS",
      headers: {
        Origin: "http://example.test",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-requested-with,x-signalr-user-agent",
      },
    });
    assert.equal(res.headers.get("access-control-allow-origin"), "http://example.test");
    assert.equal(res.headers.get("access-control-allow-credentials"), "true");
    assert.match(res.headers.get("access-control-allow-headers"), /x-signalr-user-agent/);
  });

  it("serves health, readiness and the demo page", async () => {
    assert.equal(await (await fetch(`${host.url}/healthz`)).text(), "ok");
    const ready = await fetch(`${host.url}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { ready: true, hubs: ["chat"], backplane: true, backplaneKind: "memory" });
    const page = await (await fetch(`${host.url}/`)).text();
    assert.match(page, /<html/i);
  });
});

describe("negotiations waiting for their transport", () => {
  it("are capped: past --max-pending-negotiations negotiate answers 503, and a connection frees its place", async () => {
    const host = await startHost({ hubs: ["chat"], args: ["--max-pending-negotiations", "3"] });
    try {
      const negotiate = () => fetch(`${host.url}/chat/negotiate?negotiateVersion=1`, { method: "POST" });
      const tokens = [];
      for (let i = 0; i < 3; i++) {
        const res = await negotiate();
        assert.equal(res.status, 200);
        tokens.push((await res.json()).connectionToken);
      }
      const refused = await negotiate();
      assert.equal(refused.status, 503);
      assert.equal(await refused.text(), "Too many connections are being negotiated; try again shortly.");
      assert.match(refused.headers.get("retry-after"), /^[1-5]$/);
      // The official client says why, and clients that skip negotiation are not affected.
      await assert.rejects(connect(`${host.url}/chat`), /503/);
      const direct = await connect(`${host.url}/chat`, { skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets });
      assert.equal(await direct.invoke("Echo", "unaffected"), "unaffected");
      // A negotiated connection that takes its transport no longer waits: room for one more.
      const raw = await rawHub(`${host.url}/chat?id=${tokens[0]}`);
      assert.equal((await negotiate()).status, 200);
      assert.equal((await negotiate()).status, 503);
      assert.equal(await metric(host, "hubhost_negotiations_refused_total"), 3);
      assert.equal(await metric(host, "hubhost_negotiations_waiting"), 3);
      raw.ws.close();
      await direct.stop();
    } finally {
      await host.stop();
    }
  });
});

describe("handshake", () => {
  let host;
  before(async () => {
    host = await startHost({ hubs: ["chat"], args: ["--handshake-timeout", "500ms"] });
  });
  after(() => host.stop());

  const handshake = async (request) => {
    const raw = await rawSocket(`${host.url}/chat`);
    if (request !== null) raw.send(request);
    const code = await raw.closed;
    return { records: raw.records, code };
  };

  it("accepts json versions 0 to 2, and messages in the same frame", async () => {
    for (const version of [0, 1, 2]) {
      const raw = await rawSocket(`${host.url}/chat`);
      raw.send(`{"protocol":"json","version":${version}}${RS}{"type":1,"invocationId":"1","target":"Echo","arguments":["same frame"]}${RS}`);
      const completions = () => raw.records.slice(1).map((r) => JSON.parse(r)).filter((m) => m.type === 3);
      await waitUntil(() => completions().length === 1, "handshake and completion");
      assert.equal(raw.records[0], "{}");
      assert.deepEqual(completions(), [{ type: 3, invocationId: "1", result: "same frame" }]);
      raw.ws.close();
    }
  });

  it("rejects an unknown protocol with ASP.NET's text, then closes", async () => {
    const { records, code } = await handshake(`{"protocol":"bson","version":1}${RS}`);
    assert.deepEqual(records, ['{"error":"The protocol \'bson\' is not supported."}']);
    assert.equal(code, 1000);
  });

  it("rejects an unsupported version", async () => {
    const { records } = await handshake(`{"protocol":"json","version":3}${RS}`);
    assert.deepEqual(records.map((r) => JSON.parse(r)), [{ error: "The server does not support version 3 of the 'json' protocol." }]);
  });

  it("rejects a malformed handshake", async () => {
    const { records } = await handshake(`{"version":1}${RS}`);
    assert.deepEqual(records.map((r) => JSON.parse(r)), [
      { error: "An unexpected error occurred during connection handshake. InvalidDataException: Missing required property 'protocol'." },
    ]);
  });

  it("gives up on a client that sends no handshake", async () => {
    const { records, code } = await handshake(null);
    assert.deepEqual(records.map((r) => JSON.parse(r)), [{ error: "Handshake was canceled." }]);
    assert.equal(code, 1000);
  });
});

describe("--write-delay", () => {
  let host;
  before(async () => {
    host = await startHost({ hubs: ["chat"], args: ["--write-delay", "300ms"] });
  });
  after(() => host.stop());

  it("sends the frames queued within the delay in one WebSocket message", async () => {
    const raw = await rawHub(`${host.url}/chat`);
    const messages = [];
    raw.ws.on("message", (data) => messages.push(data.toString()));
    raw.send(`{"type":1,"invocationId":"a","target":"Echo","arguments":["1"]}${RS}`);
    // Well inside the delay: the first answer is still waiting for company.
    await new Promise((r) => setTimeout(r, 50));
    raw.send(`{"type":1,"invocationId":"b","target":"Echo","arguments":["2"]}${RS}`);
    await waitUntil(() => raw.records.filter((r) => JSON.parse(r).type === 3).length === 2, "two completions");
    const carrying = (id) => messages.filter((m) => m.includes(`"invocationId":"${id}"`));
    assert.equal(carrying("a").length, 1);
    assert.equal(carrying("a")[0], carrying("b")[0], "both answers in one message");
    raw.ws.close();
  });

  it("the official client works as before, only later", async () => {
    const client = await connect(`${host.url}/chat`);
    assert.equal(await client.invoke("Echo", "late"), "late");
    await client.stop();
  });
});

describe("messages and bad input", () => {
  let host;
  const clients = [];
  const join = async () => {
    const c = await connect(`${host.url}/chat`);
    clients.push(c);
    return c;
  };
  before(async () => {
    host = await startHost({ hubs: ["chat"], args: ["--keep-alive", "200ms", "--client-timeout", "1s"] });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await host.stop();
  });

  it("answers an unknown method with SignalR's error and keeps the connection", async () => {
    const a = await join();
    await assert.rejects(a.invoke("NoSuchMethod", 1), {
      message: "Failed to invoke 'NoSuchMethod' due to an error on the server. HubException: Method does not exist.",
    });
    assert.equal(a.state, signalR.HubConnectionState.Connected);
    assert.equal(await a.invoke("Echo", "still open"), "still open");
  });

  it("answers a wrong argument count", async () => {
    const a = await join();
    await assert.rejects(a.invoke("Send", "only one"), {
      message: "Failed to invoke 'Send' due to an error on the server. InvalidDataException: Invocation provides 1 argument(s) but target expects 2.",
    });
    await assert.rejects(a.invoke("Echo"), {
      message: "Failed to invoke 'Echo' due to an error on the server. InvalidDataException: Invocation provides 0 argument(s) but target expects 1.",
    });
    assert.equal(a.state, signalR.HubConnectionState.Connected);
  });

  it("answers wrong argument types", async () => {
    const a = await join();
    for (const args of [[1, 2], ["a", null], [{}, []]]) {
      await assert.rejects(a.invoke("Send", ...args), {
        message:
          "Failed to invoke 'Send' due to an error on the server. InvalidDataException: Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked.",
      });
    }
    assert.equal(await a.invoke("Echo", "fine"), "fine");
  });

  it("shows a hub's deliberate rejection (HubException) to the caller", async () => {
    const a = await join();
    await assert.rejects(a.invoke("JoinRoom", ""), {
      message: "An unexpected error occurred invoking 'JoinRoom' on the server. HubException: Room names must have 1 to 100 characters.",
    });
  });

  it("rejects streaming invocations of non-streaming methods", async () => {
    const a = await join();
    const error = await new Promise((res) => {
      a.stream("Echo", "x").subscribe({ next: () => {}, complete: () => res(null), error: res });
    });
    assert.equal(error.message, "The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation.");
  });

  it("closes a connection that sends invalid JSON, and only that one", async () => {
    const bystander = await join();
    const got = record(bystander, "broadcastMessage");
    const raw = await rawHub(`${host.url}/chat`);
    raw.send(`{"type":1,"target":"Send",${RS}`);
    const code = await raw.closed;
    assert.equal(code, 1000);
    const close = JSON.parse(raw.records.at(-1));
    assert.equal(close.type, 7);
    assert.match(close.error, /^Connection closed with an error\. InvalidDataException: Error reading JSON: /);
    assert.equal(close.allowReconnect, undefined);
    // Everyone else carries on.
    await bystander.invoke("Send", "b", "after the bad frame");
    await waitUntil(() => got.length === 1, "bystander delivery");
  });

  it("closes a connection whose message lacks required fields", async () => {
    const raw = await rawHub(`${host.url}/chat`);
    raw.send(`{"type":1,"arguments":[]}${RS}`);
    assert.equal(await raw.closed, 1000);
    assert.deepEqual(JSON.parse(raw.records.at(-1)), {
      type: 7,
      error: "Connection closed with an error. InvalidDataException: Missing required property 'target'.",
    });
  });

  it("closes an official client that sends a message over the maximum size", async () => {
    const bystander = await join();
    const a = await join();
    const call = a.invoke("Echo", "x".repeat(40_000)).catch((e) => e);
    const closeError = await a.closed;
    assert.equal(closeError.message, `Server returned an error on close: ${MAX_SIZE_TEXT}`);
    assert.ok((await call) instanceof Error);
    assert.equal(await bystander.invoke("Echo", "unaffected"), "unaffected");
  });

  it("accepts a message of just under the maximum size", async () => {
    const a = await join();
    const big = "y".repeat(32 * 1024 - 200);
    assert.equal(await a.invoke("Echo", big), big);
  });

  it("ignores messages of unknown types and answers several messages in one frame", async () => {
    const raw = await rawHub(`${host.url}/chat`);
    raw.send(
      `{"type":99,"whatever":true}${RS}{"type":1,"invocationId":"a","target":"Echo","arguments":["1"]}${RS}{"type":1,"invocationId":"b","target":"Echo","arguments":["2"]}${RS}`,
    );
    await waitUntil(() => raw.records.filter((r) => JSON.parse(r).type === 3).length === 2, "two completions");
    const completions = raw.records.map((r) => JSON.parse(r)).filter((m) => m.type === 3);
    assert.deepEqual(completions, [
      { type: 3, invocationId: "a", result: "1" },
      { type: 3, invocationId: "b", result: "2" },
    ]);
    raw.ws.close();
  });

  it("sends keep-alive pings", async () => {
    const raw = await rawHub(`${host.url}/chat`);
    await waitUntil(() => raw.records.includes('{"type":6}'), "a ping", 3000);
    raw.ws.close();
  });

  it("drops a client that pinged and then went silent past the client timeout", async () => {
    const raw = await rawHub(`${host.url}/chat`);
    raw.send(`{"type":6}${RS}`);
    assert.equal(await raw.closed, 1000);
    assert.deepEqual(JSON.parse(raw.records.at(-1)), {
      type: 7,
      error:
        "Connection closed with an error. OperationCanceledException: Client hasn't sent a message/ping within the configured ClientTimeoutInterval.",
      allowReconnect: true,
    });
  });

  it("answers a client's Close with a Close and a normal closure", async () => {
    const raw = await rawHub(`${host.url}/chat`);
    raw.send(`{"type":7}${RS}`);
    assert.equal(await raw.closed, 1000);
    assert.equal(raw.records.at(-1), '{"type":7}');
  });

  it("keeps an official client that pings more often than the client timeout connected", async () => {
    const a = await connect(`${host.url}/chat`, {}, (b) => b.withKeepAliveInterval(300));
    clients.push(a);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(a.state, signalR.HubConnectionState.Connected);
    assert.equal(await a.invoke("Echo", "alive"), "alive");
  });
});
