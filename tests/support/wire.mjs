// Raw clients for bytes the official client would never send: MessagePack framing, a raw
// MessagePack WebSocket, and the HTTP requests of Server-Sent Events and long polling.

import { decode, encode } from "@msgpack/msgpack";
import WebSocket from "ws";

import { RS, waitUntil } from "./client.mjs";

/** A MessagePack hub message as sent: its varint length, then the bytes of `body`. */
export function framed(body) {
  const bytes = body instanceof Uint8Array ? body : encode(body);
  const prefix = [];
  let length = bytes.length;
  do {
    let byte = length & 0x7f;
    length >>>= 7;
    if (length > 0) byte |= 0x80;
    prefix.push(byte);
  } while (length > 0);
  return Buffer.concat([Buffer.from(prefix), Buffer.from(bytes)]);
}

/** Splits bytes into MessagePack hub messages, decoded; returns `[messages, rest]`. */
export function unframe(buffer) {
  const messages = [];
  let offset = 0;
  while (offset < buffer.length) {
    let length = 0;
    let shift = 0;
    let i = offset;
    for (; i < buffer.length; i++) {
      length |= (buffer[i] & 0x7f) << shift;
      shift += 7;
      if ((buffer[i] & 0x80) === 0) break;
    }
    if (i >= buffer.length || i + 1 + length > buffer.length) break;
    messages.push(decode(buffer.subarray(i + 1, i + 1 + length)));
    offset = i + 1 + length;
  }
  return [messages, buffer.subarray(offset)];
}

/** The handshake request as text (the handshake is JSON whatever the protocol). */
export const handshake = (protocol, version = 1) => `{"protocol":"${protocol}","version":${version}}${RS}`;

/**
 * A raw WebSocket speaking MessagePack after a JSON handshake: `handshakes` collects handshake
 * answers (text before the first RS), `messages` the decoded messages, `closed` the close code.
 */
export async function rawMessagePackSocket(url, { version = 1 } = {}) {
  const ws = new WebSocket(url.replace(/^http/, "ws"));
  const state = { ws, messages: [], handshakes: [], binaryHandshake: null, pending: Buffer.alloc(0) };
  ws.on("message", (data, isBinary) => {
    let bytes = Buffer.from(data);
    if (state.handshakes.length === 0) {
      const end = bytes.indexOf(0x1e);
      state.handshakes.push(bytes.subarray(0, end).toString());
      state.binaryHandshake = isBinary;
      bytes = bytes.subarray(end + 1);
    }
    const [messages, rest] = unframe(Buffer.concat([state.pending, bytes]));
    state.messages.push(...messages);
    state.pending = rest;
  });
  state.closed = new Promise((res) => ws.on("close", (code) => res(code)));
  await new Promise((res, rej) => {
    ws.once("open", res);
    ws.once("error", rej);
  });
  ws.send(handshake("messagepack", version));
  await waitUntil(() => state.handshakes.length > 0, "the handshake answer");
  state.send = (...messages) => ws.send(Buffer.concat(messages.map((m) => framed(m))));
  state.sendBytes = (bytes) => ws.send(bytes);
  return state;
}

/** Negotiates (version 1) and returns the connection token. */
export async function negotiate(url) {
  const res = await fetch(`${url}/negotiate?negotiateVersion=1`, { method: "POST" });
  if (res.status !== 200) throw new Error(`negotiate: HTTP ${res.status}`);
  return (await res.json()).connectionToken;
}

/** One long poll: `{ status, type, body (Buffer), headers }`. */
export async function poll(url, token, init = {}) {
  const res = await fetch(`${url}?id=${token}&_=${Date.now()}`, init);
  return { status: res.status, type: res.headers.get("content-type"), body: Buffer.from(await res.arrayBuffer()), headers: res.headers };
}

/** A POST of `body` to a connection: `{ status, text }`. */
export async function post(url, token, body) {
  const res = await fetch(`${url}?id=${token}`, { method: "POST", body });
  return { status: res.status, text: await res.text() };
}

/** A DELETE of a connection: `{ status, text }`. */
export async function remove(url, token) {
  const res = await fetch(`${url}?id=${token}`, { method: "DELETE" });
  return { status: res.status, text: await res.text() };
}

/**
 * A raw event stream: `chunks` collects the raw text received, `data()` the concatenated
 * `data:` payloads of complete events, `ended` resolves when the server ends the response.
 */
export async function rawEventStream(url, token) {
  const controller = new AbortController();
  const res = await fetch(`${url}?id=${token}`, { headers: { Accept: "text/event-stream" }, signal: controller.signal });
  const stream = { res, status: res.status, headers: res.headers, chunks: [], abort: () => controller.abort() };
  if (res.status !== 200) {
    stream.text = await res.text();
    return stream;
  }
  const decoder = new TextDecoder();
  stream.ended = (async () => {
    try {
      for await (const chunk of res.body) stream.chunks.push(decoder.decode(chunk, { stream: true }));
    } catch {
      // Aborted by the test.
    }
  })();
  stream.raw = () => stream.chunks.join("");
  stream.data = () =>
    stream
      .raw()
      .split("\r\n\r\n")
      .slice(0, -1)
      .map((event) =>
        event
          .split("\r\n")
          .filter((line) => line.startsWith("data: "))
          .map((line) => line.slice(6))
          .join("\n"),
      )
      .join("");
  return stream;
}
