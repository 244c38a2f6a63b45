// The official client (@microsoft/signalr, with @microsoft/signalr-protocol-msgpack) over every
// transport and hub protocol it offers: WebSockets, Server-Sent Events and long polling, JSON
// and MessagePack (never MessagePack over Server-Sent Events, which carry text only). Each
// combination calls, receives, fails and stops exactly as the others do.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { COMBINATIONS, connectOver, record, signalR, waitUntil, waitUntilAsync } from "./support/client.mjs";
import { labelledMetric, startHost } from "./support/host.mjs";
import { jwt } from "./support/jwt.mjs";
import { rawEventStream } from "./support/wire.mjs";

const MAX_SIZE_TEXT =
  "Connection closed with an error. InvalidDataException: The maximum message size of 32768B was exceeded. The message size can be configured with --max-message-size.";

const onTransport = (host, transport) => labelledMetric(host, "hubhost_transport_connections", "transport", transport);
const onProtocol = (host, protocol) => labelledMetric(host, "hubhost_protocol_connections", "protocol", protocol);

describe("the official client over every transport and protocol", () => {
  let host;
  const clients = [];
  const join = async (transport, protocol, hub = "chat") => {
    const c = await connectOver(`${host.url}/${hub}`, { transport, protocol });
    clients.push(c);
    return c;
  };
  before(async () => {
    host = await startHost({ hubs: ["chat", "values"] });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await host.stop();
  });

  for (const [transport, protocol] of COMBINATIONS) {
    describe(`${transport} with ${protocol}`, () => {
      it("connects over it, and the id it was told is the server's", async () => {
        const [before, beforeProtocol] = [await onTransport(host, transport), await onProtocol(host, protocol)];
        const c = await join(transport, protocol);
        assert.equal(await onTransport(host, transport), before + 1);
        assert.equal(await onProtocol(host, protocol), beforeProtocol + 1);
        assert.match(c.connectionId, /^[A-Za-z0-9_-]{22}$/);
        assert.equal(await c.invoke("Whoami"), c.connectionId);
      });

      it("calls methods, and gets their results and ASP.NET's error texts", async () => {
        const c = await join(transport, protocol);
        const text = "line one\nline two\r\n\u001e not a separator, é ✓ 𝄞";
        assert.equal(await c.invoke("Echo", text), text);
        await assert.rejects(c.invoke("NoSuchMethod", 1), {
          message: "Failed to invoke 'NoSuchMethod' due to an error on the server. HubException: Method does not exist.",
        });
        await assert.rejects(c.invoke("Send", "only one"), {
          message: "Failed to invoke 'Send' due to an error on the server. InvalidDataException: Invocation provides 1 argument(s) but target expects 2.",
        });
        await assert.rejects(c.invoke("JoinRoom", ""), {
          message: "An unexpected error occurred invoking 'JoinRoom' on the server. HubException: Room names must have 1 to 100 characters.",
        });
        assert.equal(c.state, signalR.HubConnectionState.Connected);
        assert.equal(await c.invoke("Echo", "still here"), "still here");
      });

      it("carries values of every JSON type both ways", async () => {
        const c = await join(transport, protocol, "values");
        const value = {
          text: "é ✓",
          empty: "",
          integer: 42,
          negative: -7,
          large: 2 ** 53 - 1,
          fraction: 1.5,
          yes: true,
          no: false,
          nothing: null,
          list: [1, "two", [3], { four: 4 }],
          nested: { a: { b: { c: [] } } },
        };
        assert.deepEqual(await c.invoke("Echo", value), value);
        const got = record(c, "value");
        await c.invoke("Broadcast", value);
        await waitUntil(() => got.length === 1, "the broadcast value");
        assert.deepEqual(got, [[value]]);
        for (const [input, kind] of [[null, "null"], [true, "bool"], [1, "number"], ["s", "string"], [[], "array"], [{}, "object"]]) {
          assert.equal(await c.invoke("Kind", input), kind);
        }
        // Dates travel as ISO 8601 text in JSON and as MessagePack timestamps; hubs see text.
        const date = new Date(Date.UTC(2025, 0, 15, 13, 5, 9, 123));
        assert.equal(await c.invoke("Echo", date), "2025-01-15T13:05:09.123Z");
        assert.equal(await c.invoke("Kind", date), "string");
        if (protocol === "messagepack") {
          // MessagePack binary reaches a hub as base64 text.
          assert.equal(await c.invoke("Echo", new Uint8Array([1, 2, 3, 250])), "AQID+g==");
          assert.equal(await c.invoke("Kind", new Uint8Array(0)), "string");
        }
      });

      it("closes with ASP.NET's error for a message over the limit, and only that connection", async () => {
        const bystander = await join(transport, protocol);
        const before = await onTransport(host, transport);
        const c = await join(transport, protocol);
        const call = c.invoke("Echo", "x".repeat(40_000)).catch((e) => e);
        const closeError = await c.closed;
        assert.equal(closeError.message, `Server returned an error on close: ${MAX_SIZE_TEXT}`);
        assert.ok((await call) instanceof Error);
        assert.equal(await bystander.invoke("Echo", "unaffected"), "unaffected");
        // The server lets it go too (the next test counts connections).
        await waitUntilAsync(async () => (await onTransport(host, transport)) === before, "the server to let the closed connection go");
      });

      it("stops cleanly, and the server sees it go", async () => {
        const c = await join(transport, protocol);
        const before = await onTransport(host, transport);
        await c.stop();
        assert.equal(await c.closed, undefined);
        await waitUntilAsync(async () => (await onTransport(host, transport)) === before - 1, "the server to see the client go");
      });
    });
  }

  it("clients on every transport and protocol hear each other, each sender's messages in order", async () => {
    const group = await Promise.all(COMBINATIONS.map(([transport, protocol]) => join(transport, protocol)));
    const got = group.map((c) => record(c, "broadcastMessage"));
    await Promise.all(
      group.map(async (c, i) => {
        for (let n = 0; n < 5; n++) await c.invoke("Send", COMBINATIONS[i].join("/"), `message ${n}`);
      }),
    );
    await waitUntil(() => got.every((g) => g.length === 25), "25 messages at every client");
    for (const g of got) {
      for (const [name] of COMBINATIONS.map((pair) => [pair.join("/")])) {
        assert.deepEqual(
          g.filter(([from]) => from === name).map(([, message]) => message),
          ["message 0", "message 1", "message 2", "message 3", "message 4"],
        );
      }
    }
  });
});

describe("choosing a transport", () => {
  it("offers only --transports; the client falls back: JSON to Server-Sent Events, MessagePack to long polling", async () => {
    const host = await startHost({ hubs: ["chat"], args: ["--transports", "sse,longpolling"] });
    try {
      const body = await (await fetch(`${host.url}/chat/negotiate?negotiateVersion=1`, { method: "POST" })).json();
      assert.deepEqual(body.availableTransports, [
        { transport: "ServerSentEvents", transferFormats: ["Text"] },
        { transport: "LongPolling", transferFormats: ["Text", "Binary"] },
      ]);
      const json = await connectOver(`${host.url}/chat`, { protocol: "json" });
      assert.equal(await onTransport(host, "ServerSentEvents"), 1);
      const binary = await connectOver(`${host.url}/chat`, { protocol: "messagepack" });
      assert.equal(await onTransport(host, "LongPolling"), 1);
      assert.equal(await onTransport(host, "WebSockets"), 0);
      const got = record(binary, "broadcastMessage");
      await json.invoke("Send", "sse", "to long polling");
      await waitUntil(() => got.length === 1, "delivery across transports");
      assert.deepEqual(got, [["sse", "to long polling"]]);
      await Promise.all([json.stop(), binary.stop()]);
    } finally {
      await host.stop();
    }
  });

  it("refuses a transport it does not offer, with ASP.NET's text and the client's error", async () => {
    const host = await startHost({ hubs: ["chat"], args: ["--transports", "longpolling"] });
    try {
      const { connectionToken } = await (await fetch(`${host.url}/chat/negotiate?negotiateVersion=1`, { method: "POST" })).json();
      const sse = await fetch(`${host.url}/chat?id=${connectionToken}`, { headers: { Accept: "text/event-stream" } });
      assert.equal(sse.status, 404);
      assert.equal(await sse.text(), "ServerSentEvents transport not supported by this end point type");
      await assert.rejects(
        connectOver(`${host.url}/chat`, { transport: "WebSockets" }),
        {
          message:
            "Unable to connect to the server with any of the available transports. LongPolling failed: Error: 'LongPolling' is disabled by the client.",
        },
      );
      await assert.rejects(
        connectOver(`${host.url}/chat`, { transport: "WebSockets", options: { skipNegotiation: true } }),
        /WebSocket failed to connect/,
      );
      // What it offers still works.
      const c = await connectOver(`${host.url}/chat`);
      assert.equal(await c.invoke("Echo", "long polling"), "long polling");
      await c.stop();
    } finally {
      await host.stop();
    }
  });

  it("rejects a bad --transports value at startup", async () => {
    await assert.rejects(startHost({ args: ["--transports", "carrier-pigeon"] }), /carrier-pigeon/);
  });

  it("serves hub paths case-insensitively, as ASP.NET routes them", async () => {
    const host = await startHost({ hubs: ["chat"] });
    try {
      for (const transport of ["WebSockets", "ServerSentEvents", "LongPolling"]) {
        const c = await connectOver(`${host.url}/Chat`, { transport });
        assert.equal(await c.invoke("Echo", transport), transport);
        await c.stop();
      }
    } finally {
      await host.stop();
    }
  });
});

describe("access tokens on every transport", () => {
  const SECRET = "transports-test-secret";
  const token = (sub) => jwt({ sub, exp: Math.floor(Date.now() / 1000) + 600 }, SECRET);
  let host;
  before(async () => {
    host = await startHost({ hubs: ["chat"], args: ["--jwt-secret", SECRET], settings: { chat: "require-auth = true\n" } });
  });
  after(() => host.stop());

  for (const [transport, protocol] of COMBINATIONS) {
    it(`authenticates ${transport} with ${protocol} (header on negotiate, polls and POSTs; query string on WebSockets and SSE)`, async () => {
      const c = await connectOver(`${host.url}/chat`, { transport, protocol, options: { accessTokenFactory: () => token("ana") } });
      assert.equal(await c.invoke("WhoamiUser"), "ana");
      await c.stop();
    });
  }

  it("refuses a client without a token with the official client's text", async () => {
    for (const transport of ["ServerSentEvents", "LongPolling"]) {
      await assert.rejects(connectOver(`${host.url}/chat`, { transport }), {
        message: "Failed to complete negotiation with the server: Error: Unauthorized: Status code '401'",
      });
    }
  });

  it("checks the token on the transport's own requests too", async () => {
    const res = await fetch(`${host.url}/chat/negotiate?negotiateVersion=1`, { method: "POST", headers: { Authorization: `Bearer ${token("ana")}` } });
    const { connectionToken } = await res.json();
    const anonymous = await rawEventStream(`${host.url}/chat`, connectionToken);
    assert.equal(anonymous.status, 401);
    const poll = await fetch(`${host.url}/chat?id=${connectionToken}`);
    assert.equal(poll.status, 401);
    const post = await fetch(`${host.url}/chat?id=${connectionToken}`, { method: "POST", body: "{}" });
    assert.equal(post.status, 401);
  });
});
