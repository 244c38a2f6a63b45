// The SignalR 2 endpoints (/signalr/...) with a raw client: the exact answers of SignalR 2 to
// good and bad requests, and other clients unaffected by the bad ones.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import WebSocket from "ws";

import { connect } from "./support/client.mjs";
import { metric, startHost } from "./support/host.mjs";
import { startRedis } from "./support/redis.mjs";
import { jwt } from "./support/jwt.mjs";
import { CLIENT_PROTOCOL, hubsData, negotiate, openLongPolling, openWebSocket, query } from "./support/signalr2.mjs";

const SECRET = "signalr2-test-secret";
const token = (sub) => jwt({ sub, exp: Math.floor(Date.now() / 1000) + 600 }, SECRET);

describe("SignalR 2 endpoints", () => {
  let host;
  let detailed;
  let other;

  before(async () => {
    [host, detailed, other] = await Promise.all([
      startHost({ hubs: ["chat"], args: ["--jwt-secret", SECRET] }),
      startHost({ hubs: ["chat"], args: ["--detailed-errors"] }),
      startHost({ hubs: ["chat"], env: { HUBHOST_LOG: "info,hubhost::signalr2=debug" } }),
    ]);
  });
  after(async () => {
    await Promise.all([host, detailed, other].map((h) => h?.stop()));
  });

  it("negotiate answers as SignalR 2 does", async () => {
    const response = await fetch(`${host.url}/signalr/negotiate?${query({ clientProtocol: CLIENT_PROTOCOL, connectionData: hubsData("chatHub"), _: Date.now() })}`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "application/json; charset=UTF-8");
    const body = await response.json();
    assert.deepEqual(Object.keys(body).sort(), [
      "ConnectionId", "ConnectionTimeout", "ConnectionToken", "DisconnectTimeout", "KeepAliveTimeout",
      "LongPollDelay", "ProtocolVersion", "TransportConnectTimeout", "TryWebSockets", "Url",
    ]);
    assert.equal(body.Url, "/signalr");
    assert.equal(body.ProtocolVersion, "2.0");
    assert.equal(body.TryWebSockets, true);
    assert.equal(body.KeepAliveTimeout, 30);
    assert.match(body.ConnectionId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const ping = await fetch(`${host.url}/signalr/ping?_=1`);
    assert.deepEqual(await ping.json(), { Response: "pong" });
  });

  it("serves the hubs proxy script naming chat.wasm chatHub, with its server methods", async () => {
    for (const path of ["hubs", "js"]) {
      const response = await fetch(`${host.url}/signalr/${path}`);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("content-type"), "application/javascript; charset=UTF-8");
      const script = await response.text();
      assert.match(script, /proxies\["chatHub"\] = this\.createHubProxy\("chatHub"\);/);
      assert.match(script, /"send": serverMethod\(proxies\["chatHub"\], "Send"\)/);
      assert.match(script, /"joinRoom": serverMethod\(proxies\["chatHub"\], "JoinRoom"\)/);
      assert.match(script, /\$\.hubConnection\("\/signalr", \{ useDefaultPath: false \}\)/);
    }
  });

  it("long polling: connect, start, send and poll; hub responses, results and errors", async () => {
    const ana = await openLongPolling(other.url);
    assert.equal(ana.init.S, 1);
    assert.deepEqual(ana.init.M, []);
    assert.deepEqual(ana.started, { Response: "started" });
    assert.deepEqual(await ana.send("Echo", ["hi"]), { I: "0", R: "hi" });
    assert.deepEqual(await ana.send("send", ["ana", "lower-case method"]), { I: "1" });
    const calls = await ana.pollUntil((m) => m.M === "broadcastMessage");
    assert.deepEqual(calls.find((m) => m.M === "broadcastMessage"), { H: "ChatHub", M: "broadcastMessage", A: ["ana", "lower-case method"] });
    // A hub's own refusal is a HubException: its text, and H.
    assert.deepEqual(await ana.send("JoinRoom", [""]), { I: "2", E: "Room names must have 1 to 100 characters.", H: true });
    // Anything else is masked, naming hub and method as sent.
    assert.deepEqual(await ana.send("NoSuchMethod", []), { I: "3", E: "There was an error invoking Hub method 'chathub.NoSuchMethod'." });
    assert.deepEqual(await ana.send("Echo", [1, 2, 3]), { I: "4", E: "There was an error invoking Hub method 'chathub.Echo'." });
    assert.deepEqual(await ana.send("Echo", ["x"], { hubName: "nohub" }), { I: "5", E: "'nohub' Hub could not be resolved." });
    assert.deepEqual(await ana.send("Echo", ["still here"]), { I: "6", R: "still here" });
  });

  it("detailed errors say why, as SignalR 2's do", async () => {
    const ana = await openLongPolling(detailed.url);
    assert.deepEqual(await ana.send("NoSuchMethod", []), { I: "0", E: "'NoSuchMethod' method could not be resolved. No method found with that name." });
    const wrong = await ana.send("Echo", [1, 2, 3]);
    assert.equal(wrong.I, "1");
    assert.match(wrong.E, /^'Echo' method could not be resolved: /);
    assert.deepEqual(await ana.send("JoinRoom", [""]), { I: "2", E: "Room names must have 1 to 100 characters.", H: true });
  });

  it("a poll is held until a message comes, and a cursor returns what came after it", async () => {
    const ana = await openLongPolling(other.url);
    const ben = await openLongPolling(other.url);
    const start = ana.cursor;
    // Polls (held while there is nothing) until the message comes.
    const held = ana.pollUntil((m) => m.M === "broadcastMessage" && m.A[1] === "one");
    await ben.send("Send", ["ben", "one"]);
    await held;
    await ben.send("Send", ["ben", "two"]);
    // From the start again: both, in order (what a reconnecting client missed).
    const again = await ana.poll(start);
    const texts = again.M.filter((m) => m.M === "broadcastMessage").map((m) => m.A[1]);
    assert.deepEqual(texts, ["one", "two"]);
    // A cursor this connection never gave means "from now": the next message only. (Sent once
    // the host holds the poll, as its log says.)
    const polls = pollsWaiting(other);
    const unknown = ana.poll("d-1B6FE5B1-B,3");
    await waitFor(() => pollsWaiting(other) > polls);
    await ben.send("Send", ["ben", "three"]);
    const fromNow = await unknown;
    assert.deepEqual(fromNow.M.filter((m) => m.M === "broadcastMessage").map((m) => m.A[1]), ["three"]);
  });

  it("WebSockets: init, invocations as frames, responses and client calls in persistent responses", async () => {
    const ana = await openWebSocket(other.url);
    const ben = await openLongPolling(other.url);
    try {
      assert.deepEqual(ana.started, { Response: "started" });
      const echo = ana.invoke("Echo", ["over ws"]);
      assert.deepEqual(await ana.response(echo), { I: echo, R: "over ws" });
      await ben.send("Send", ["ben", "to ws"]);
      const call = await ana.call((c) => c.M === "broadcastMessage" && c.A[1] === "to ws");
      assert.deepEqual(call, { H: "ChatHub", M: "broadcastMessage", A: ["ben", "to ws"] });
      // A frame that is no invocation is ignored; the connection goes on.
      ana.socket.send("{not json");
      ana.socket.send(JSON.stringify({ H: "chathub", M: "Echo" }));
      const after = ana.invoke("Echo", ["after bad frames"]);
      assert.deepEqual(await ana.response(after), { I: after, R: "after bad frames" });
    } finally {
      ana.socket.close();
    }
  });

  it("refuses bad requests with SignalR 2's answers, and the connection and others go on", async () => {
    const ana = await openLongPolling(other.url);
    const watcher = await connect(`${other.url}/chat`);
    const seen = [];
    watcher.on("broadcastMessage", (_name, message) => seen.push(message));
    const base = { clientProtocol: CLIENT_PROTOCOL, connectionData: hubsData("chathub") };
    const get = async (path, params) => {
      const response = await fetch(`${other.url}/signalr/${path}?${query(params)}`);
      return { status: response.status, text: await response.text() };
    };
    const good = ana.negotiated.ConnectionToken;
    try {
      assert.deepEqual(await get("start", { ...base, connectionToken: good }), { status: 400, text: "Protocol error: Unknown transport." });
      assert.deepEqual(await get("start", { ...base, transport: "carrierPigeon", connectionToken: good }), { status: 400, text: "Protocol error: Unknown transport." });
      assert.deepEqual(await get("start", { ...base, transport: "longPolling" }), { status: 400, text: "Protocol error: Missing connection token." });
      // A token whose id is someone else's, with this token's signature.
      const [, signature] = good.split(".");
      const forged = `${Buffer.from("someone-else:").toString("base64url")}.${signature}`;
      assert.deepEqual(await get("start", { ...base, transport: "longPolling", connectionToken: forged }), { status: 400, text: "The ConnectionId is in the incorrect format." });
      assert.deepEqual(await get("start", { ...base, transport: "longPolling", connectionToken: "garbage" }), { status: 400, text: "The ConnectionId is in the incorrect format." });
      // A token from a host with another key (or one signed before the key changed).
      const foreign = (await negotiate(host.url)).ConnectionToken;
      assert.deepEqual(await get("start", { ...base, transport: "longPolling", connectionToken: foreign }), { status: 400, text: "The ConnectionId is in the incorrect format." });
      // Internet Explorer's forever frame is refused, so IE falls back to long polling.
      assert.deepEqual(await get("connect", { ...base, transport: "foreverFrame", connectionToken: good }), { status: 400, text: "Protocol error: The foreverFrame transport is not supported." });
      assert.deepEqual(await get("connect", { ...base, transport: "webSockets", connectionToken: good }), { status: 400, text: "Not a valid web socket request." });
      assert.deepEqual(await get("frobnicate", { ...base, transport: "longPolling", connectionToken: good }), { status: 404, text: "Not found." });
      // Unknown and duplicate hubs in connectionData: SignalR 2's 500s, on negotiate and after.
      assert.deepEqual(await get("negotiate", { clientProtocol: CLIENT_PROTOCOL, connectionData: hubsData("nohub") }), { status: 500, text: "'nohub' Hub could not be resolved." });
      assert.deepEqual(await get("start", { clientProtocol: CLIENT_PROTOCOL, connectionData: hubsData("chathub", "nohub"), transport: "longPolling", connectionToken: good }), { status: 500, text: "'nohub' Hub could not be resolved." });
      assert.deepEqual(await get("negotiate", { clientProtocol: CLIENT_PROTOCOL, connectionData: hubsData("chathub", "chat") }), { status: 500, text: "Duplicate Hub names found." });
      // Malformed /send bodies.
      const sendRaw = async (body) => {
        const response = await ana.post("send", body);
        return { status: response.status, text: await response.text() };
      };
      assert.deepEqual(await sendRaw(""), { status: 400, text: "Invalid hub request: the form has no 'data'." });
      const notJson = await sendRaw("data=%7Bnope");
      assert.equal(notJson.status, 400);
      assert.match(notJson.text, /^Invalid hub request: /);
      assert.deepEqual(await sendRaw(`data=${encodeURIComponent(JSON.stringify({ H: "chathub", M: "Echo", A: ["x"] }))}`), { status: 400, text: "Invalid hub request: missing 'I'" });
      assert.deepEqual(await sendRaw(`data=${encodeURIComponent(JSON.stringify({ H: "chathub", M: "Echo", A: "x", I: 1 }))}`), { status: 400, text: "Invalid hub request: 'A' must be an array" });
      // Oversized (over --max-message-size, 32 KiB by default).
      const big = JSON.stringify({ H: "chathub", M: "Send", A: ["big", "x".repeat(40 * 1024)], I: 9 });
      assert.deepEqual(await sendRaw(`data=${encodeURIComponent(big)}`), { status: 413, text: "The message is larger than the limit of 32768 bytes." });
      // Nothing of that reached anyone; the connection still works, and the sentinel arrives.
      assert.deepEqual(await ana.send("Send", ["ana", "sentinel"]), { I: "0" });
      await waitFor(() => seen.includes("sentinel"));
      assert.deepEqual(seen, ["sentinel"]);
    } finally {
      await watcher.stop();
    }
  });

  it("an oversized WebSocket message closes the socket with 1009, as SignalR 2 does", async () => {
    const ana = await openWebSocket(other.url);
    ana.socket.send(JSON.stringify({ H: "chathub", M: "Send", A: ["big", "x".repeat(40 * 1024)], I: 0 }));
    const closed = await ana.closed;
    assert.equal(closed.code, 1009);
  });

  it("--rate-limit applies to SignalR 2 clients too: excess invocations fail without reaching the hub", async () => {
    const limited = await startHost({ hubs: ["chat"], args: ["--rate-limit", "2"] });
    try {
      const ana = await openLongPolling(limited.url);
      // A burst of twice the rate passes; the next ones are refused, as a HubException.
      const answers = [];
      for (let i = 0; i < 6; i++) answers.push(await ana.send("Echo", [`call ${i}`]));
      const refused = answers.filter((a) => a.E);
      assert.ok(refused.length >= 1, JSON.stringify(answers));
      for (const a of refused) {
        assert.deepEqual(a, { I: a.I, E: "Rate limit exceeded: at most 2 invocations per second per connection.", H: true });
      }
      assert.deepEqual(answers.slice(0, 4).map((a) => a.R), ["call 0", "call 1", "call 2", "call 3"]);
      assert.ok((await metric(limited, "hubhost_rate_limited_total")) >= 1);
    } finally {
      await limited.stop();
    }
  });

  it("--transports applies to SignalR 2: negotiate stops offering WebSockets, and left-out transports are refused", async () => {
    const pollingOnly = await startHost({ hubs: ["chat"], args: ["--transports", "longpolling"] });
    try {
      const ana = await openLongPolling(pollingOnly.url);
      assert.equal(ana.negotiated.TryWebSockets, false);
      assert.deepEqual(await ana.send("Echo", ["polling works"]), { I: "0", R: "polling works" });
      for (const transport of ["webSockets", "serverSentEvents"]) {
        const response = await fetch(`${pollingOnly.url}/signalr/connect?${ana.params({ transport })}`);
        assert.equal(response.status, 400);
        assert.equal(await response.text(), "Protocol error: Unknown transport.");
      }
    } finally {
      await pollingOnly.stop();
    }
  });

  it("a hub that reads the request sees the page's query (not the protocol's) and cookies", async () => {
    const features = await startHost({ hubs: ["features"] });
    try {
      const ana = await openLongPolling(features.url, {
        hub: "featureshub",
        qs: { room: "blue" },
        headers: { Cookie: "flavor=mint; other=1", "X-SignalR-User-Agent": "jquery 2.4.3" },
      });
      const info = await ana.send("RequestInfo", []);
      assert.equal(info.R.room, "blue");
      assert.equal(info.R.flavor, "mint");
      assert.equal(info.R.signalrAgent, "jquery 2.4.3");
      assert.equal(info.R.id, null);
    } finally {
      await features.stop();
    }
  });

  it("a token belongs to its user: another user's requests get SignalR 2's 403", async () => {
    const ana = await openLongPolling(host.url, { qs: { access_token: token("ana") } });
    assert.deepEqual(await ana.send("WhoamiUser", []), { I: "0", R: "ana" });
    const asBen = await fetch(`${host.url}/signalr/start?${ana.params({ access_token: token("ben") })}`);
    assert.equal(asBen.status, 403);
    assert.equal(await asBen.text(), "Unrecognized user identity.  The user identity cannot change during an active SignalR connection.");
    const anonymous = await fetch(`${host.url}/signalr/start?${ana.params({ access_token: "" })}`);
    assert.equal(anonymous.status, 403);
    // The user's name is matched ignoring case, as in SignalR 2.
    const anaAgain = await fetch(`${host.url}/signalr/start?${ana.params({ access_token: token("ANA") })}`);
    assert.equal(anaAgain.status, 200);
    const bad = await fetch(`${host.url}/signalr/negotiate?${query({ clientProtocol: CLIENT_PROTOCOL, connectionData: hubsData("chathub"), access_token: "not-a-jwt" })}`);
    assert.equal(bad.status, 401);
  });

  it("abort ends the connection: the hub's on-disconnected runs", async () => {
    // A host of its own: no other connection comes or goes meanwhile.
    const alone = await startHost({ hubs: ["chat"] });
    const watcher = await connect(`${alone.url}/chat`);
    const online = [];
    watcher.on("online", (n) => online.push(n));
    try {
      const ana = await openLongPolling(alone.url);
      await waitFor(() => online.at(-1) === 2);
      const response = await ana.abort();
      assert.equal(response.status, 200);
      assert.equal(await response.text(), "");
      await waitFor(() => online.at(-1) === 1);
    } finally {
      await watcher.stop();
      await alone.stop();
    }
  });
});

describe("SignalR 2 and Core clients on hosts sharing Redis", () => {
  const KEY = "shared-token-key";
  let redis;
  let hosts = [];
  let stranger;

  before(async () => {
    redis = await startRedis();
    const args = ["--redis", redis.url, "--jwt-secret", SECRET, "--signalr2-token-key", KEY];
    hosts = await Promise.all([0, 1].map(() => startHost({ hubs: ["chat", "lobby"], args })));
    stranger = await startHost({ hubs: ["chat"], args: ["--redis", redis.url, "--jwt-secret", SECRET] });
  });
  after(async () => {
    await Promise.all([...hosts, stranger].map((h) => h?.stop()));
    await redis?.stop();
  });

  it("groups, user sends and connection sends reach across generations and hosts", async () => {
    const ana = await openWebSocket(hosts[0].url, { qs: { access_token: token("ana") } });
    const ben = await connect(`${hosts[1].url}/chat`, { accessTokenFactory: () => token("ben") });
    const benSaw = [];
    ben.on("roomMessage", (room, name, message) => benSaw.push(["room", room, name, message]));
    ben.on("privateMessage", (from, message) => benSaw.push(["private", from, message]));
    try {
      const joined = ana.invoke("JoinRoom", ["room1"]);
      assert.deepEqual(await ana.response(joined), { I: joined });
      await ben.invoke("JoinRoom", "room1");
      await ben.invoke("SendToRoom", "room1", "ben", "to the room, from Core");
      assert.deepEqual(
        (await ana.call((c) => c.M === "roomMessage" && c.A[2] === "to the room, from Core")).A,
        ["room1", "ben", "to the room, from Core"],
      );
      ana.invoke("SendToRoom", ["room1", "ana", "to the room, from 2.x"]);
      await ben.invoke("SendToUser", "ana", "psst, ana");
      assert.deepEqual((await ana.call((c) => c.M === "privateMessage" && c.A[1] === "psst, ana")).A, [ben.connectionId, "psst, ana"]);
      ana.invoke("SendToUser", ["ben", "psst, ben"]);
      await ben.invoke("SendToConnection", ana.negotiated.ConnectionId, "just you");
      await ana.call((c) => c.M === "privateMessage" && c.A[1] === "just you");
      await waitFor(() => benSaw.length === 3).catch(() => assert.fail(`Core client saw ${JSON.stringify(benSaw)}`));
      assert.deepEqual(benSaw, [
        ["room", "room1", "ben", "to the room, from Core"],
        ["room", "room1", "ana", "to the room, from 2.x"],
        ["private", ana.negotiated.ConnectionId, "psst, ben"],
      ]);
      // After leaving, the room's messages stop; the sentinel, sent after, arrives alone.
      const left = ana.invoke("LeaveRoom", ["room1"]);
      await ana.response(left);
      await ben.invoke("SendToRoom", "room1", "ben", "after ana left");
      await ben.invoke("SendToConnection", ana.negotiated.ConnectionId, "sentinel");
      await ana.call((c) => c.M === "privateMessage" && c.A[1] === "sentinel");
      assert.equal(ana.messages.flatMap((m) => m.M ?? []).filter((c) => c.A?.[2] === "after ana left").length, 0);
    } finally {
      ana.socket.close();
      await ben.stop();
    }
  });

  it("one connection with two hubs in connectionData gets the client calls of both", async () => {
    const ana = await openWebSocket(hosts[0].url, { also: ["lobbyhub"] });
    try {
      const created = ana.invoke("CreateRoom", ["arena"], "lobbyhub");
      assert.deepEqual((await ana.response(created)).R, ["arena"]);
      assert.deepEqual((await ana.call((c) => c.M === "roomsChanged")).H, "LobbyHub");
      ana.invoke("Send", ["ana", "in chat"]);
      assert.deepEqual((await ana.call((c) => c.M === "broadcastMessage")).H, "ChatHub");
    } finally {
      ana.socket.close();
    }
  });

  it("a client that comes back on another host keeps its groups (the groups token, G); a token not its own is ignored", async () => {
    // Joins a room over a WebSocket on host A; the response after the join carries G.
    const away = async () => {
      const c = await openWebSocket(hosts[0].url);
      await c.response(c.invoke("JoinRoom", ["blue-room"]));
      const { G } = await c.next((m) => typeof m.G === "string");
      c.socket.close();
      return { id: c.negotiated.ConnectionId, token: c.negotiated.ConnectionToken, G };
    };
    // Comes back on host B over long polling, with a groups token; returns once the revived
    // connection has settled there.
    const back = async ({ token }, groupsToken) => {
      const params = query({ transport: "longPolling", clientProtocol: CLIENT_PROTOCOL, connectionToken: token, connectionData: hubsData("chathub") });
      const post = (path, body) =>
        fetch(`${hosts[1].url}/signalr/${path}?${params}`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body });
      // Held until the hub's on-connected broadcast (the online count) reaches it; polls go on
      // from its cursor.
      const held = post("reconnect", `messageId=&groupsToken=${encodeURIComponent(groupsToken)}`).then((r) => r.json());
      // The connection's task rejoins before it runs anything: once this answers, it has.
      const echo = await post("send", `data=${encodeURIComponent(JSON.stringify({ H: "chathub", M: "Echo", A: ["back"], I: 100 }))}`);
      assert.deepEqual(await echo.json(), { I: "100", R: "back" });
      let cursor = (await held).C;
      return {
        async pollUntil(predicate) {
          const seen = [];
          for (let i = 0; i < 50; i++) {
            const body = await (await post("poll", `messageId=${encodeURIComponent(cursor)}`)).json();
            cursor = body.C;
            seen.push(...body.M);
            if (body.M.some(predicate)) return seen;
          }
          throw new Error(JSON.stringify(seen));
        },
      };
    };
    const core = await connect(`${hosts[1].url}/chat`);
    try {
      const ana = await away();
      const anaBack = await back(ana, ana.G);
      await core.invoke("SendToRoom", "blue-room", "core", "room message after the move");
      const seen = await anaBack.pollUntil((m) => m.M === "roomMessage");
      assert.deepEqual(seen.find((m) => m.M === "roomMessage").A, ["blue-room", "core", "room message after the move"]);

      // Ben comes back with Ana's groups token: ignored, so he is in no room.
      const ben = await away();
      const benBack = await back(ben, ana.G);
      await core.invoke("SendToRoom", "blue-room", "core", "not for ben");
      await core.invoke("SendToConnection", ben.id, "sentinel");
      const benSaw = await benBack.pollUntil((m) => m.M === "privateMessage");
      assert.equal(benSaw.filter((m) => m.M === "roomMessage").length, 0, JSON.stringify(benSaw));
    } finally {
      await core.stop();
    }
  });

  it("hosts sharing the token key take each other's connections; others refuse them", async () => {
    const ana = await openLongPolling(hosts[1].url, { negotiateAt: hosts[0].url });
    assert.deepEqual(ana.started, { Response: "started" });
    const held = ana.pollUntil((m) => m.M === "broadcastMessage" && m.A[1] === "across hosts");
    const ben = await connect(`${hosts[0].url}/chat`);
    try {
      await ben.invoke("Send", "ben", "across hosts");
      await held;
    } finally {
      await ben.stop();
    }
    const elsewhere = await fetch(`${stranger.url}/signalr/start?${ana.params()}`);
    assert.equal(elsewhere.status, 400);
    assert.equal(await elsewhere.text(), "The ConnectionId is in the incorrect format.");
  });
});

describe("SignalR 2 timings: keep-alive, disconnect timeout, shutdown", () => {
  let host;

  before(async () => {
    host = await startHost({ hubs: ["chat"], args: ["--keep-alive", "1s", "--client-timeout", "3s", "--disconnect-timeout", "1s"] });
  });
  after(async () => {
    await host?.stop();
  });

  it("a quiet WebSocket gets keep-alives ({}), as SignalR 2 sends them", async () => {
    const ana = await openWebSocket(host.url);
    try {
      const negotiated = await negotiate(host.url);
      assert.equal(negotiated.KeepAliveTimeout, 2);
      assert.equal(negotiated.DisconnectTimeout, 1);
      await ana.next((m) => Object.keys(m).length === 0, 5_000);
    } finally {
      ana.socket.close();
    }
  });

  it("a connection no request carries for the disconnect timeout ends: on-disconnected runs", async () => {
    // A host of its own: no other connection comes or goes meanwhile.
    const alone = await startHost({ hubs: ["chat"], args: ["--disconnect-timeout", "1s"] });
    const watcher = await connect(`${alone.url}/chat`);
    const online = [];
    watcher.on("online", (n) => online.push(n));
    try {
      await openLongPolling(alone.url);
      await waitFor(() => online.at(-1) === 2);
      assert.equal(await metric(alone, "hubhost_signalr2_connections"), 1);
      // No poll follows: the connection ends a second later.
      await waitFor(() => online.at(-1) === 1);
      assert.equal(await metric(alone, "hubhost_signalr2_connections"), 0);
    } finally {
      await watcher.stop();
      await alone.stop();
    }
  });

  it("a host shutting down answers a held poll with T:1, so the client reconnects elsewhere", async () => {
    const leaving = await startHost({ hubs: ["chat"], env: { HUBHOST_LOG: "info,hubhost::signalr2=debug" } });
    const ana = await openLongPolling(leaving.url);
    await ana.poll();
    const polls = pollsWaiting(leaving);
    const held = ana.poll();
    // Stopped once the server holds the poll (it says so in its log).
    await waitFor(() => pollsWaiting(leaving) > polls);
    await leaving.stop();
    const answer = await held;
    assert.equal(answer.T, 1);
    assert.deepEqual(answer.M, []);
  });
});

/** How many long polls a host (logging SignalR 2 at debug) has held so far. */
function pollsWaiting(host) {
  return host.logs.filter((l) => l.fields?.message === "long poll waiting").length;
}

async function waitFor(check, timeoutMs = 10_000) {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}
