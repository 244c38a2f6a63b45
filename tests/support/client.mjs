// Helpers around the official @microsoft/signalr client and a raw WebSocket client for bytes the
// official client would never send.

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import WebSocket from "ws";

export { MessagePackHubProtocol, signalR };

export const RS = "\u001e";

/**
 * Connects an official client; `options` go to `withUrl`, `configure(builder)` may change the
 * builder (keep-alive, reconnect, ...).
 */
export async function connect(url, options = {}, configure = (builder) => builder) {
  const connection = configure(
    new signalR.HubConnectionBuilder().withUrl(url, options).configureLogging(signalR.LogLevel.None),
  ).build();
  connection.closed = new Promise((res) => connection.onclose((error) => res(error)));
  await connection.start();
  return connection;
}

/** Every transport with every hub protocol it carries (MessagePack is binary; SSE is text). */
export const COMBINATIONS = [
  ["WebSockets", "json"],
  ["WebSockets", "messagepack"],
  ["ServerSentEvents", "json"],
  ["LongPolling", "json"],
  ["LongPolling", "messagepack"],
];

/**
 * Connects an official client over one transport (`"WebSockets"`, `"ServerSentEvents"`,
 * `"LongPolling"`, or `null` to let it choose) with one hub protocol (`"json"`,
 * `"messagepack"`).
 */
export function connectOver(url, { transport = null, protocol = "json", options = {}, configure = (b) => b } = {}) {
  const withTransport = transport ? { transport: signalR.HttpTransportType[transport], ...options } : options;
  return connect(url, withTransport, (builder) =>
    configure(protocol === "messagepack" ? builder.withHubProtocol(new MessagePackHubProtocol()) : builder),
  );
}

/** Records every call of client method `method` on `connection` as an array of argument lists. */
export function record(connection, method) {
  const calls = [];
  connection.on(method, (...args) => {
    calls.push(args);
  });
  return calls;
}

/** Waits until `predicate()` is true, polling; fails after `timeoutMs`. */
export async function waitUntil(predicate, what = "condition", timeoutMs = 5000) {
  const started = Date.now();
  while (!predicate()) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Like `waitUntil`, for an async predicate. */
export async function waitUntilAsync(predicate, what = "condition", timeoutMs = 5000) {
  const started = Date.now();
  while (!(await predicate())) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Resolves as `promise` does, or fails naming `what` after `timeoutMs`: for waits a test cannot
 * leave unbounded (an invocation whose completion never comes would otherwise hang the file
 * until the runner's timeout, which says nothing of where).
 */
export async function within(promise, what, timeoutMs = 10_000) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

let sentinels = 0;

/**
 * Proves that what `sender` sent before cannot still reach `receiver`: `sender` sends
 * `receiver` a private message (the chat hub's `SendToConnection`), and this resolves when it
 * arrives. Messages from one sender reach a connection in the order they were sent, through one
 * server or through Redis, so anything sent earlier that was going to arrive has arrived.
 * Assert "did not arrive" after this, never after a sleep.
 */
export async function privateSentinel(sender, receiver) {
  const text = `sentinel ${++sentinels}`;
  let seen = false;
  const handler = (_from, message) => {
    if (message === text) seen = true;
  };
  receiver.on("privateMessage", handler);
  await sender.invoke("SendToConnection", receiver.connectionId, text);
  await waitUntil(() => seen, `the sentinel at ${receiver.connectionId}`);
  receiver.off("privateMessage", handler);
}

/**
 * `privateSentinel` for tests that record private messages: `sender` broadcasts (`Send`) and
 * this resolves when every one of `receivers` has the broadcast.
 */
export async function broadcastSentinel(sender, receivers) {
  const text = `sentinel ${++sentinels}`;
  const seen = new Set();
  const handlers = receivers.map((receiver) => {
    const handler = (_name, message) => {
      if (message === text) seen.add(receiver);
    };
    receiver.on("broadcastMessage", handler);
    return handler;
  });
  await sender.invoke("Send", "sentinel", text);
  await waitUntil(() => seen.size === receivers.length, "the broadcast sentinel everywhere");
  receivers.forEach((receiver, i) => receiver.off("broadcastMessage", handlers[i]));
}

/**
 * A raw WebSocket client: `records` collects every record received (separator removed),
 * `closed` resolves with the close code.
 */
export async function rawSocket(url) {
  const ws = new WebSocket(url.replace(/^http/, "ws"));
  const records = [];
  let buffer = "";
  ws.on("message", (data) => {
    buffer += data.toString();
    let end;
    while ((end = buffer.indexOf(RS)) >= 0) {
      records.push(buffer.slice(0, end));
      buffer = buffer.slice(end + 1);
    }
  });
  const closed = new Promise((res) => ws.on("close", (code) => res(code)));
  await new Promise((res, rej) => {
    ws.once("open", res);
    ws.once("error", rej);
    ws.once("unexpected-response", (_req, response) => {
      let body = "";
      response.on("data", (c) => (body += c));
      response.on("end", () => rej(Object.assign(new Error(`HTTP ${response.statusCode}`), { status: response.statusCode, body })));
    });
  });
  return { ws, records, closed, send: (text) => ws.send(text) };
}

/** Opens a raw socket and completes the JSON handshake. */
export async function rawHub(url) {
  const raw = await rawSocket(url);
  raw.send(`{"protocol":"json","version":1}${RS}`);
  await waitUntil(() => raw.records.length > 0, "handshake answer");
  if (raw.records[0] !== "{}") throw new Error(`handshake failed: ${raw.records[0]}`);
  raw.records.shift();
  return raw;
}
