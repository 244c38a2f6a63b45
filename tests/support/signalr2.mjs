// A raw SignalR 2 client over HTTP and WebSockets, for what the jQuery client would never send
// (forged tokens, malformed bodies) and for reading exact answers.

import WebSocket from "ws";

export const CLIENT_PROTOCOL = "2.1";

/** `[{"name":"chathub"}]` for `connectionData`. */
export function hubsData(...names) {
  return JSON.stringify(names.map((name) => ({ name: name.toLowerCase() })));
}

/** A query string of the given parameters (values URL-encoded). */
export function query(params) {
  return new URLSearchParams(params).toString();
}

/** GET `/signalr/negotiate`; the parsed body, or the raw response when not 200. */
export async function negotiate(base, { hubs = hubsData("chathub"), qs = {} } = {}) {
  const response = await fetch(`${base}/signalr/negotiate?${query({ clientProtocol: CLIENT_PROTOCOL, connectionData: hubs, ...qs })}`);
  if (response.status !== 200) return { status: response.status, text: await response.text() };
  return await response.json();
}

/**
 * A long-polling connection made by hand: negotiate, connect, start. `send(H, M, A)` invokes
 * and returns the hub response; `poll()` takes what came since the last poll.
 */
export async function openLongPolling(base, { hub = "chathub", qs = {}, negotiateAt = base, headers = {} } = {}) {
  const hubs = hubsData(hub);
  const negotiated = await negotiate(negotiateAt, { hubs, qs });
  const params = (extra = {}) =>
    query({ transport: "longPolling", clientProtocol: CLIENT_PROTOCOL, connectionToken: negotiated.ConnectionToken, connectionData: hubs, ...qs, ...extra });
  const post = (path, body = "", extra = {}) =>
    fetch(`${base}/signalr/${path}?${params(extra)}`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded; charset=UTF-8", ...headers },
      body,
    });
  const init = await (await post("connect")).json();
  const started = await (await fetch(`${base}/signalr/start?${params()}`, { headers })).json();
  let cursor = init.C;
  let nextId = 0;
  return {
    negotiated,
    init,
    started,
    params,
    post,
    get cursor() {
      return cursor;
    },
    /** POST `/send`; the response object (or `{ status, text }` when not 200). */
    async send(method, args = [], { hubName = hub, raw } = {}) {
      const data = raw ?? JSON.stringify({ H: hubName, M: method, A: args, I: nextId++ });
      const response = await post("send", `data=${encodeURIComponent(data)}`);
      if (response.status !== 200) return { status: response.status, text: await response.text() };
      return await response.json();
    },
    /** POST `/poll` from the last cursor (or `from`); the persistent response. */
    async poll(from = cursor) {
      const response = await post("poll", `messageId=${encodeURIComponent(from)}`);
      const body = await response.json();
      cursor = body.C;
      return body;
    },
    /** Polls until a client call satisfies `predicate`; every call taken on the way. */
    async pollUntil(predicate, { limit = 50 } = {}) {
      const seen = [];
      for (let i = 0; i < limit; i++) {
        const body = await this.poll();
        seen.push(...body.M);
        if (body.M.some(predicate)) return seen;
      }
      throw new Error(`not received in ${limit} polls: ${JSON.stringify(seen)}`);
    },
    abort: () => post("abort"),
  };
}

/**
 * A WebSocket connection made by hand (negotiate, connect, start). `messages` collects every
 * parsed message; `next(predicate)` waits for one.
 */
export async function openWebSocket(base, { hub = "chathub", also = [], qs = {} } = {}) {
  const hubs = hubsData(hub, ...also);
  const negotiated = await negotiate(base, { hubs, qs });
  const params = query({ transport: "webSockets", clientProtocol: CLIENT_PROTOCOL, connectionToken: negotiated.ConnectionToken, connectionData: hubs, ...qs });
  const socket = new WebSocket(`${base.replace(/^http/, "ws")}/signalr/connect?${params}&tid=1`);
  const messages = [];
  const waiters = [];
  socket.on("message", (data) => {
    const message = JSON.parse(data.toString());
    messages.push(message);
    for (const waiter of [...waiters]) waiter();
  });
  const closed = new Promise((res) => socket.on("close", (code, reason) => res({ code, reason: reason.toString() })));
  await new Promise((res, rej) => {
    socket.once("open", res);
    socket.once("error", rej);
  });
  const next = (predicate, timeoutMs = 10_000) =>
    new Promise((res, rej) => {
      const check = () => {
        const found = messages.find(predicate);
        if (found) {
          waiters.splice(waiters.indexOf(check), 1);
          clearTimeout(timer);
          res(found);
        }
      };
      const timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(check), 1);
        rej(new Error(`timed out; got ${JSON.stringify(messages)}`));
      }, timeoutMs);
      waiters.push(check);
      check();
    });
  await next((m) => m.S === 1);
  const started = await (await fetch(`${base}/signalr/start?${params}`)).json();
  let nextId = 0;
  return {
    negotiated,
    socket,
    messages,
    closed,
    next,
    started,
    /** Sends an invocation; its id. */
    invoke(method, args = [], hubName = hub) {
      const id = nextId++;
      socket.send(JSON.stringify({ H: hubName, M: method, A: args, I: id }));
      return String(id);
    },
    /** The hub response with this id, from the persistent responses. */
    response(id) {
      return next((m) => (m.M ?? []).some((r) => r.I === id)).then((m) => m.M.find((r) => r.I === id));
    },
    /** A client call satisfying `predicate`. */
    call(predicate) {
      return next((m) => (m.M ?? []).some((c) => c.M && predicate(c))).then((m) => m.M.find((c) => c.M && predicate(c)));
    },
  };
}
