// A Python client (PyPI signalrcore 1.0.2) over every transport and protocol it supports, on
// one host, talking with the official JavaScript client on another (the hosts share Redis).
//
// signalrcore cannot use MessagePack over long polling (it splits polls on the JSON record
// separator), and no client may use it over Server-Sent Events; its long-polling client also
// handles one message per poll, so each step here gives it one message to receive (the values
// hub, unlike the chat hub, sends nothing of its own accord).

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { connectOver, record, waitUntil, waitUntilAsync } from "./support/client.mjs";
import { labelledMetric, startHost, waitReady } from "./support/host.mjs";
import { startPythonClient } from "./support/python.mjs";
import { startRedis } from "./support/redis.mjs";

const PYTHON_COMBINATIONS = [
  ["WebSockets", "websockets", "json"],
  ["WebSockets", "websockets", "messagepack"],
  ["ServerSentEvents", "sse", "json"],
  ["LongPolling", "longpolling", "json"],
];

describe("the Python client (signalrcore)", () => {
  let redis;
  let host;
  let other;
  let js;
  before(async () => {
    redis = await startRedis();
    [host, other] = await Promise.all([0, 1].map(() => startHost({ hubs: ["values"], args: ["--redis", redis.url] })));
    await Promise.all([host, other].map((h) => waitReady(h)));
    js = await connectOver(`${other.url}/values`, { transport: "WebSockets", protocol: "messagepack" });
  });
  after(async () => {
    await js?.stop();
    await Promise.all([host, other].map((h) => h?.stop()));
    await redis?.stop();
  });

  for (const [transport, flag, protocol] of PYTHON_COMBINATIONS) {
    it(`calls, receives and sends over ${transport} with ${protocol}`, async () => {
      const onTransport = () => labelledMetric(host, "hubhost_transport_connections", "transport", transport);
      const before = await onTransport();
      const py = await startPythonClient(`${host.url}/values`, flag, protocol);
      try {
        assert.equal(await onTransport(), before + 1);
        assert.deepEqual(await py.invoke("Echo", "héllo ✓"), { result: "héllo ✓" });
        assert.deepEqual(await py.invoke("NoSuchMethod"), {
          error: "Failed to invoke 'NoSuchMethod' due to an error on the server. HubException: Method does not exist.",
        });

        // From the JavaScript client to Python.
        py.on("value");
        const value = { from: "js", list: [1, 2.5, null, true], text: `to python over ${transport}` };
        await js.invoke("Others", value);
        const call = await py.next((e) => e.event === "call", "the message at the Python client");
        assert.deepEqual(call, { event: "call", method: "value", args: [value] });

        // From Python to the JavaScript client.
        const got = record(js, "value");
        assert.deepEqual(await py.invoke("Others", { from: "python", text: transport }), { result: null });
        await waitUntil(() => got.length === 1, "the Python client's message");
        assert.deepEqual(got, [[{ from: "python", text: transport }]]);
      } finally {
        await py.stop();
      }
      await waitUntilAsync(async () => (await onTransport()) === before, "the server to see the Python client go");
    });
  }
});
