// Helpers around the official @microsoft/signalr client and a raw WebSocket client for bytes the
// official client would never send.

import * as signalR from "@microsoft/signalr";
import WebSocket from "ws";

export { signalR };

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

/** Gives in-flight messages time to arrive before asserting that something did *not* happen. */
export function settle(ms = 300) {
  return new Promise((r) => setTimeout(r, ms));
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
