// The MessagePack hub protocol on the wire: handshakes, framing, what the server writes, and
// bad input, each with ASP.NET Core's text and outcome (connection kept or closed).

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { encode } from "@msgpack/msgpack";

import { connectOver, record, waitUntil } from "./support/client.mjs";
import { startHost } from "./support/host.mjs";
import { framed, rawMessagePackSocket } from "./support/wire.mjs";

const closedWith = (text) => [7, `Connection closed with an error. ${text}`, false];

describe("MessagePack on the wire", () => {
  let host;
  const bystanders = [];
  before(async () => {
    host = await startHost({ hubs: ["chat", "values"] });
  });
  after(async () => {
    await Promise.all(bystanders.map((c) => c.stop()));
    await host.stop();
  });

  it("accepts versions 0 to 2, answering the handshake in a binary frame", async () => {
    for (const version of [0, 1, 2]) {
      const raw = await rawMessagePackSocket(`${host.url}/chat`, { version });
      assert.deepEqual(raw.handshakes, ["{}"]);
      assert.equal(raw.binaryHandshake, true);
      raw.ws.close();
    }
  });

  it("refuses version 3 with ASP.NET's text", async () => {
    const raw = await rawMessagePackSocket(`${host.url}/chat`, { version: 3 });
    assert.deepEqual(raw.handshakes, ['{"error":"The server does not support version 3 of the \'messagepack\' protocol."}']);
    assert.equal(await raw.closed, 1000);
  });

  it("writes invocations, completions and pings as the official client reads them", async () => {
    const raw = await rawMessagePackSocket(`${host.url}/values`);
    // Several messages in one frame; headers are accepted (and ignored).
    raw.send([1, { trace: "abc" }, "1", "Echo", [{ a: [1, -2, 1.5, null, true] }]], [1, {}, "2", "Broadcast", ["all"]]);
    await waitUntil(() => raw.messages.filter((m) => m[0] === 3).length === 2, "two completions");
    const seen = raw.messages.filter((m) => m[0] !== 6);
    assert.deepEqual(seen, [
      [3, {}, "1", 3, { a: [1, -2, 1.5, null, true] }],
      // An invocation has six elements (stream ids last, empty), as ASP.NET writes it.
      [1, {}, null, "value", ["all"], []],
      [3, {}, "2", 2],
    ]);
    raw.ws.close();
  });

  it("answers an invocation without an id with nothing, and an unknown method with an error completion", async () => {
    const raw = await rawMessagePackSocket(`${host.url}/chat`);
    raw.send([1, {}, null, "Echo", ["no answer"]], [1, {}, "", "Echo", ["empty id is no id"]], [1, {}, "9", "Nope", []]);
    await waitUntil(() => raw.messages.some((m) => m[0] === 3), "the completion");
    assert.deepEqual(
      raw.messages.filter((m) => m[0] === 3),
      [[3, {}, "9", 1, "Failed to invoke 'Nope' due to an error on the server. HubException: Method does not exist."]],
    );
    raw.ws.close();
  });

  it("answers arguments it cannot read with a binding failure and keeps the connection", async () => {
    const raw = await rawMessagePackSocket(`${host.url}/values`);
    // [1, {}, "1", "Echo", 5]: arguments that are not an array.
    raw.send([1, {}, "1", "Echo", 5]);
    // [1, {}, "2", "Echo", [ext 5]]: an argument of an extension type hubs cannot read.
    raw.send(new Uint8Array([0x95, 0x01, 0x80, 0xa1, 0x32, 0xa4, 0x45, 0x63, 0x68, 0x6f, 0x91, 0xd4, 0x05, 0x00]));
    raw.send([1, {}, "3", "Echo", ["still open"]]);
    await waitUntil(() => raw.messages.filter((m) => m[0] === 3).length === 3, "three completions");
    assert.deepEqual(
      raw.messages.filter((m) => m[0] === 3),
      [
        [3, {}, "1", 1, "Failed to invoke 'Echo' due to an error on the server. InvalidDataException: Reading array length for 'arguments' failed."],
        [
          3,
          {},
          "2",
          1,
          "Failed to invoke 'Echo' due to an error on the server. InvalidDataException: Error binding argument 1. Make sure that the types of the provided values match the types of the hub method being invoked.",
        ],
        [3, {}, "3", 3, "still open"],
      ],
    );
    raw.ws.close();
  });

  it("waits for the rest of a message split anywhere, even inside its length prefix", async () => {
    const raw = await rawMessagePackSocket(`${host.url}/values`);
    const long = "z".repeat(200);
    // Over 127 bytes: a two-byte length prefix.
    const bytes = framed([1, {}, "1", "Echo", [long]]);
    raw.sendBytes(bytes.subarray(0, 1));
    raw.sendBytes(bytes.subarray(1, 10));
    raw.sendBytes(bytes.subarray(10));
    await waitUntil(() => raw.messages.some((m) => m[0] === 3), "the completion");
    assert.deepEqual(raw.messages.filter((m) => m[0] === 3), [[3, {}, "1", 3, long]]);
    raw.ws.close();
  });

  it("ignores messages of unknown types and keeps the connection", async () => {
    const raw = await rawMessagePackSocket(`${host.url}/values`);
    raw.send([99, "from a future protocol"], [1, {}, "1", "Echo", ["after it"]]);
    await waitUntil(() => raw.messages.some((m) => m[0] === 3), "the completion");
    assert.deepEqual(raw.messages.filter((m) => m[0] === 3), [[3, {}, "1", 3, "after it"]]);
    raw.ws.close();
  });

  for (const [what, bytes, text] of [
    ["a map where the message's array should be", encode({ type: 1 }), "MessagePackSerializationException: Unexpected msgpack code 129 (fixmap) encountered."],
    ["an array announcing more than it holds", Buffer.from([0x95, 0x01]), "EndOfStreamException: Attempted to read past the end of the stream."],
    ["a message type that is not a number", encode(["1"]), "InvalidDataException: Reading 'messageType' as Int32 failed."],
    ["an invocation cut short", encode([1, {}]), "InvalidDataException: Reading 'invocationId' as String failed."],
    ["headers that are not a map", encode([1, [], "1", "Echo", []]), "InvalidDataException: Reading map length for 'headers' failed."],
    ["an empty header key", encode([1, { "": "v" }, "1", "Echo", []]), "InvalidDataException: Null or empty key in header."],
    ["an empty target", encode([1, {}, "1", "", []]), "InvalidDataException: Null or empty target for Invocation message."],
    ["a completion without an id", encode([3, {}, null, 2]), "InvalidDataException: Null or empty invocation ID for Completion message."],
    ["an unknown result kind", encode([3, {}, "1", 7]), "InvalidDataException: Invalid invocation result kind."],
  ]) {
    it(`closes a connection that sends ${what}, with ASP.NET's text, and only that one`, async () => {
      const bystander = await connectOver(`${host.url}/chat`, { transport: "WebSockets", protocol: "messagepack" });
      bystanders.push(bystander);
      const got = record(bystander, "broadcastMessage");
      const raw = await rawMessagePackSocket(`${host.url}/chat`);
      raw.send(bytes instanceof Uint8Array ? new Uint8Array(bytes) : bytes);
      assert.equal(await raw.closed, 1000);
      assert.deepEqual(raw.messages.at(-1), closedWith(text));
      await bystander.invoke("Send", "b", "after the bad message");
      await waitUntil(() => got.length === 1, "the bystander's delivery");
    });
  }

  it("closes a connection whose length prefix is over 2 GB", async () => {
    const raw = await rawMessagePackSocket(`${host.url}/chat`);
    raw.sendBytes(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]));
    assert.equal(await raw.closed, 1000);
    assert.deepEqual(raw.messages.at(-1), closedWith("InvalidDataException: Messages over 2GB in size are not supported."));
  });

  it("closes a connection whose message is over the hub's size limit", async () => {
    const raw = await rawMessagePackSocket(`${host.url}/chat`);
    raw.send([1, {}, "1", "Echo", ["x".repeat(40_000)]]);
    assert.equal(await raw.closed, 1000);
    assert.deepEqual(
      raw.messages.at(-1),
      closedWith(
        "InvalidDataException: The maximum message size of 32768B was exceeded. The message size can be configured with --max-message-size.",
      ),
    );
  });
});
