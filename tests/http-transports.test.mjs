// Server-Sent Events and long polling request by request, as ASP.NET Core answers them: status
// codes, texts, headers, timeouts, and bad requests that change nothing for anyone else.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { RS, connectOver, rawHub, record, waitUntil, waitUntilAsync } from "./support/client.mjs";
import { labelledMetric, startHost } from "./support/host.mjs";
import { framed, handshake, negotiate, poll, post, rawEventStream, remove, unframe } from "./support/wire.mjs";

const NO_CONNECTION = "No Connection with that ID";
const onTransport = (host, transport) => labelledMetric(host, "hubhost_transport_connections", "transport", transport);

/** Polls until the concatenated answers hold `count` records; returns them. */
async function pollRecords(url, token, count) {
  let text = "";
  while (text.split(RS).length - 1 < count) {
    const { status, body } = await poll(url, token);
    assert.equal(status, 200, `poll answered ${status} after ${text.split(RS).length - 1} records`);
    text += body.toString();
  }
  return text.split(RS).slice(0, -1);
}

describe("long polling, request by request", () => {
  let host;
  let url;
  before(async () => {
    // The values hub sends nothing of its own accord (the chat hub announces who is online).
    host = await startHost({
      hubs: ["values"],
      args: ["--long-polling-timeout", "300ms", "--disconnect-timeout", "1s", "--keep-alive", "100ms"],
    });
    url = `${host.url}/values`;
  });
  after(() => host.stop());

  it("answers the first poll at once, empty, with headers that forbid caching", async () => {
    const token = await negotiate(url);
    const first = await poll(url, token);
    assert.equal(first.status, 200);
    assert.equal(first.type, "application/octet-stream");
    assert.equal(first.body.length, 0);
    assert.equal(first.headers.get("cache-control"), "no-cache, no-store");
    assert.equal(first.headers.get("pragma"), "no-cache");
    assert.equal(first.headers.get("expires"), "Thu, 01 Jan 1970 00:00:00 GMT");
    await remove(url, token);
  });

  it("takes the handshake and several messages in one POST, and answers in polls", async () => {
    const token = await negotiate(url);
    await poll(url, token);
    const sent = await post(
      url,
      token,
      `${handshake("json")}{"type":1,"invocationId":"1","target":"Echo","arguments":["a"]}${RS}{"type":1,"invocationId":"2","target":"Echo","arguments":["b"]}${RS}`,
    );
    assert.deepEqual(sent, { status: 200, text: "" });
    assert.deepEqual(await pollRecords(url, token, 3), [
      "{}",
      '{"type":3,"invocationId":"1","result":"a"}',
      '{"type":3,"invocationId":"2","result":"b"}',
    ]);
    await remove(url, token);
  });

  it("takes messages posted before the first poll", async () => {
    const token = await negotiate(url);
    assert.equal((await post(url, token, `${handshake("json")}{"type":1,"invocationId":"1","target":"Echo","arguments":["early"]}${RS}`)).status, 200);
    await poll(url, token);
    assert.deepEqual(await pollRecords(url, token, 2), ["{}", '{"type":3,"invocationId":"1","result":"early"}']);
    await remove(url, token);
  });

  it("answers an idle poll empty (text/plain) after the poll timeout, and sends no pings", async () => {
    const token = await negotiate(url);
    await poll(url, token);
    await post(url, token, handshake("json"));
    assert.deepEqual(await pollRecords(url, token, 1), ["{}"]);
    // The keep-alive interval is 100 ms: a WebSocket would have had pings by now.
    const idle = await poll(url, token);
    assert.equal(idle.status, 200);
    assert.equal(idle.type, "text/plain");
    assert.equal(idle.body.length, 0);
    await remove(url, token);
  });

  it("answers 204 to a poll a newer poll replaced; the newer one gets the messages", async () => {
    const token = await negotiate(url);
    await poll(url, token);
    await post(url, token, handshake("json"));
    assert.deepEqual(await pollRecords(url, token, 1), ["{}"]);
    const older = poll(url, token);
    await new Promise((r) => setTimeout(r, 50));
    const newer = poll(url, token);
    assert.equal((await older).status, 204);
    await post(url, token, `{"type":1,"invocationId":"1","target":"Echo","arguments":["to the newer"]}${RS}`);
    const answer = await newer;
    assert.equal(answer.status, 200);
    assert.equal(answer.body.toString(), `{"type":3,"invocationId":"1","result":"to the newer"}${RS}`);
    await remove(url, token);
  });

  it("ends on DELETE: 202, the waiting poll gets 204, the hub sees the client go", async () => {
    const token = await negotiate(url);
    await poll(url, token);
    await post(url, token, handshake("json"));
    assert.deepEqual(await pollRecords(url, token, 1), ["{}"]);
    const before = await onTransport(host, "LongPolling");
    const waiting = poll(url, token);
    assert.deepEqual(await remove(url, token), { status: 202, text: "" });
    assert.equal((await waiting).status, 204);
    await waitUntilAsync(async () => (await onTransport(host, "LongPolling")) === before - 1, "the connection to end");
    assert.equal((await post(url, token, `{"type":6}${RS}`)).status, 404);
  });

  it("closes the connection with the error in the last poll when the client sends bad JSON", async () => {
    const token = await negotiate(url);
    await poll(url, token);
    await post(url, token, `${handshake("json")}{"type":1,"target":"Send",${RS}`);
    const records = await pollRecords(url, token, 2);
    assert.equal(records[0], "{}");
    const close = JSON.parse(records[1]);
    assert.equal(close.type, 7);
    assert.match(close.error, /^Connection closed with an error\. InvalidDataException: Error reading JSON: /);
    assert.equal((await poll(url, token)).status, 204);
  });

  it("disconnects a client that stops polling, after the disconnect timeout", async () => {
    const watcher = await connectOver(url, { transport: "WebSockets" });
    const token = await negotiate(url);
    await poll(url, token);
    await post(url, token, handshake("json"));
    assert.deepEqual(await pollRecords(url, token, 1), ["{}"]);
    const before = await onTransport(host, "LongPolling");
    // No more polls: within the disconnect timeout (1 s) and the poll timeout, it is gone.
    await waitUntilAsync(async () => (await onTransport(host, "LongPolling")) === before - 1, "the silent client to be dropped", 5000);
    assert.equal((await poll(url, token)).status, 204);
    await watcher.stop();
  });

  it("passes POST bodies through whatever their size: a big batch works, one message over the limit closes", async () => {
    const token = await negotiate(url);
    await poll(url, token);
    await post(url, token, handshake("json"));
    assert.deepEqual(await pollRecords(url, token, 1), ["{}"]);
    // 300 messages in one POST, 200 KB: more than any one message may be (within the rate
    // limit's burst and the outbox, which hold back faster clients).
    const batch = Array.from({ length: 300 }, (_, i) => `{"type":1,"invocationId":"${i}","target":"Echo","arguments":["${"x".repeat(700)}"]}${RS}`).join("");
    assert.ok(batch.length > 200_000);
    assert.deepEqual(await post(url, token, batch), { status: 200, text: "" });
    const records = await pollRecords(url, token, 300);
    assert.deepEqual(
      records.map((r) => JSON.parse(r).invocationId),
      Array.from({ length: 300 }, (_, i) => String(i)),
    );
    assert.deepEqual(JSON.parse(records.at(-1)), { type: 3, invocationId: "299", result: "x".repeat(700) });
    // One message of 200 KB: the connection closes with ASP.NET's text (the POST itself may
    // be answered before or after the session has seen enough of it).
    const big = await post(url, token, `{"type":1,"invocationId":"big","target":"Echo","arguments":["${"y".repeat(200_000)}"]}${RS}`);
    assert.ok([200, 404].includes(big.status), `POST answered ${big.status}`);
    const [close] = await pollRecords(url, token, 1);
    assert.deepEqual(JSON.parse(close), {
      type: 7,
      error:
        "Connection closed with an error. InvalidDataException: The maximum message size of 32768B was exceeded. The message size can be configured with --max-message-size.",
    });
    assert.equal((await poll(url, token)).status, 204);
  });

  it("carries MessagePack: binary polls after a JSON handshake, messages split over POSTs", async () => {
    const token = await negotiate(url);
    await poll(url, token);
    const message = framed([1, {}, "1", "Echo", ["binary"]]);
    await post(url, token, Buffer.concat([Buffer.from(handshake("messagepack")), message.subarray(0, 1)]));
    await post(url, token, message.subarray(1));
    let bytes = Buffer.alloc(0);
    while (true) {
      const answer = await poll(url, token);
      assert.equal(answer.status, 200);
      bytes = Buffer.concat([bytes, answer.body]);
      const end = bytes.indexOf(0x1e);
      if (end >= 0 && unframe(bytes.subarray(end + 1))[0].length === 1) break;
    }
    const end = bytes.indexOf(0x1e);
    assert.equal(bytes.subarray(0, end).toString(), "{}");
    assert.deepEqual(unframe(bytes.subarray(end + 1))[0], [[3, {}, "1", 3, "binary"]]);
    await remove(url, token);
  });
});

describe("Server-Sent Events, request by request", () => {
  let host;
  let url;
  before(async () => {
    host = await startHost({ hubs: ["values"], args: ["--keep-alive", "200ms"] });
    url = `${host.url}/values`;
  });
  after(() => host.stop());

  it("streams events with ASP.NET's headers, opening with a comment; sends come as POSTs", async () => {
    const token = await negotiate(url);
    const stream = await rawEventStream(url, token);
    assert.equal(stream.status, 200);
    assert.equal(stream.headers.get("content-type"), "text/event-stream");
    assert.equal(stream.headers.get("cache-control"), "no-cache,no-store");
    assert.equal(stream.headers.get("pragma"), "no-cache");
    assert.equal(stream.headers.get("x-accel-buffering"), "no");
    await waitUntil(() => stream.raw().startsWith(":\r\n"), "the opening comment");
    assert.deepEqual(await post(url, token, handshake("json")), { status: 200, text: "" });
    await post(url, token, `{"type":1,"invocationId":"1","target":"Echo","arguments":["over SSE"]}${RS}`);
    await waitUntil(() => stream.data().includes('"invocationId":"1"'), "the completion event");
    // The handshake answer and the completion may share one event when the writer takes both
    // at once; each is a whole record either way.
    assert.ok(/data: \{\}\u001e/.test(stream.raw()), stream.raw());
    assert.ok(stream.raw().includes(`{"type":3,"invocationId":"1","result":"over SSE"}${RS}\r\n\r\n`), stream.raw());
    // Server-Sent Events do get keep-alive pings.
    await waitUntil(() => stream.data().includes('{"type":6}'), "a ping", 3000);
    stream.abort();
  });

  it("refuses MessagePack with ASP.NET's text, then ends the stream", async () => {
    const token = await negotiate(url);
    const stream = await rawEventStream(url, token);
    await post(url, token, handshake("messagepack"));
    await stream.ended;
    assert.equal(
      stream.data(),
      `{"error":"Cannot use the 'messagepack' protocol on the current transport. The transport does not support 'Binary' transfer format."}${RS}`,
    );
  });

  it("ends the connection when the client goes away", async () => {
    const token = await negotiate(url);
    const before = await onTransport(host, "ServerSentEvents");
    const stream = await rawEventStream(url, token);
    await post(url, token, handshake("json"));
    await waitUntil(() => stream.data().includes("{}"), "the handshake answer");
    assert.equal(await onTransport(host, "ServerSentEvents"), before + 1);
    stream.abort();
    await waitUntilAsync(async () => (await onTransport(host, "ServerSentEvents")) === before, "the connection to end");
    assert.equal((await post(url, token, `{"type":6}${RS}`)).status, 404);
  });
});

describe("requests that do not fit the connection", () => {
  let host;
  let url;
  const bystanders = [];
  before(async () => {
    host = await startHost({ hubs: ["chat"] });
    url = `${host.url}/chat`;
  });
  after(async () => {
    await Promise.all(bystanders.map((c) => c.stop()));
    await host.stop();
  });

  it("answers requests without an id with 400 'Connection ID required'", async () => {
    for (const init of [{}, { headers: { Accept: "text/event-stream" } }, { method: "POST", body: "x" }, { method: "DELETE" }]) {
      const res = await fetch(url, init);
      assert.equal(res.status, 400, JSON.stringify(init));
      assert.equal(await res.text(), "Connection ID required");
    }
  });

  it("answers requests for an unknown id with 404 'No Connection with that ID'", async () => {
    for (const init of [{}, { headers: { Accept: "text/event-stream" } }, { method: "POST", body: "x" }, { method: "DELETE" }]) {
      const res = await fetch(`${url}?id=nobody`, init);
      assert.equal(res.status, 404, JSON.stringify(init));
      assert.equal(await res.text(), NO_CONNECTION);
    }
  });

  it("refuses POST and DELETE for a WebSocket connection, with ASP.NET's texts", async () => {
    const token = await negotiate(url);
    const raw = await rawHub(`${url}?id=${token}`);
    assert.deepEqual(await post(url, token, `{"type":6}${RS}`), { status: 405, text: "POST requests are not allowed for WebSocket connections." });
    assert.deepEqual(await remove(url, token), { status: 400, text: "Cannot terminate this connection using the DELETE endpoint." });
    assert.equal((await poll(url, token)).status, 400);
    raw.ws.close();
  });

  it("refuses a change of transport mid-connection and a second event stream", async () => {
    const bystander = await connectOver(url, { transport: "LongPolling" });
    bystanders.push(bystander);
    const got = record(bystander, "broadcastMessage");

    const sse = await negotiate(url);
    const stream = await rawEventStream(url, sse);
    const second = await rawEventStream(url, sse);
    assert.equal(second.status, 409);
    const longPoll = await poll(url, sse);
    assert.equal(longPoll.status, 400);
    assert.equal(longPoll.body.toString(), "Cannot change transports mid-connection");
    assert.deepEqual(await remove(url, sse), { status: 400, text: "Cannot terminate this connection using the DELETE endpoint." });

    const lp = await negotiate(url);
    await poll(url, lp);
    const other = await rawEventStream(url, lp);
    assert.equal(other.status, 400);
    assert.equal(other.text, "Cannot change transports mid-connection");

    // The connections refused nothing to anyone else; the first stream still works.
    await post(url, sse, handshake("json"));
    await waitUntil(() => stream.data().includes("{}"), "the first stream's handshake answer");
    await bystander.invoke("Send", "b", "unaffected");
    await waitUntil(() => got.length === 1, "the bystander's delivery");
    stream.abort();
    await remove(url, lp);
  });
});
