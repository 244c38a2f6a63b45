// Failover as users run it: nginx in front of two hosts sharing a real Redis; one host gets
// SIGTERM; its clients reconnect through nginx to the other host and keep chatting with the
// clients already there, losing nothing once reconnected.
//
// Without sticky sessions a load balancer may send negotiate and the WebSocket to different
// hosts, so, as with ASP.NET Core SignalR, clients behind a plain round-robin balancer connect
// WebSockets-only with skipNegotiation.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { COMBINATIONS, connect, connectOver, record, signalR, waitUntil } from "./support/client.mjs";
import { metric, startHost, waitReady } from "./support/host.mjs";
import { startNginx } from "./support/nginx.mjs";
import { freePort, startRedis } from "./support/redis.mjs";

describe("failover behind nginx", () => {
  it("clients of a host that stops reconnect to the other one and keep chatting", async () => {
    const redis = await startRedis();
    // Debug logs of sessions name each connection a host accepts.
    const env = { HUBHOST_LOG: "info,hub=trace,hubhost::session=debug" };
    const hosts = await Promise.all([0, 1].map(() => startHost({ hubs: ["chat"], env, args: ["--redis", redis.url, "--drain-timeout", "5s"] })));
    const nginx = await startNginx(hosts.map((h) => h.address));
    const clients = [];
    try {
      await Promise.all(hosts.map((h) => waitReady(h)));
      for (let i = 0; i < 8; i++) {
        const c = await connect(
          `${nginx.url}/chat`,
          { skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets },
          (b) => b.withAutomaticReconnect([0, 200, 500, 1000, 2000]),
        );
        c.reconnected = 0;
        c.onreconnected(() => c.reconnected++);
        clients.push(c);
      }
      // Round robin spreads them; find who is where through each host's connection gauge.
      const onHost = (host) => metric(host, "hubhost_connections");
      const [onA, onB] = [await onHost(hosts[0]), await onHost(hosts[1])];
      assert.equal(onA + onB, 8);
      assert.ok(onA > 0 && onB > 0, `both hosts serve clients (${onA}/${onB})`);

      // Which clients live on host A? Its log names the connections it accepted.
      const acceptedBy = (host) =>
        new Set(host.logs.filter((l) => l.fields?.message === "connected").map((l) => l.fields.connection));
      // The log line may trail the client's start (it is read from the host's output).
      await waitUntil(() => acceptedBy(hosts[0]).size === onA, "host A's log naming its connections");
      const onHostA = acceptedBy(hosts[0]);
      // The id of each client's connection, as the server knows it (with skipNegotiation the
      // client itself is never told).
      const ids = async () => new Map(await Promise.all(clients.map(async (c) => [c, await c.invoke("Whoami")])));
      const idBefore = await ids();
      assert.equal(new Set(idBefore.values()).size, 8);
      assert.ok([...onHostA].every((id) => [...idBefore.values()].includes(id)), "host A's connections are ours");
      const got = clients.map((c) => record(c, "broadcastMessage"));
      await clients[0].invoke("Send", "x", "before");
      await waitUntil(() => got.every((g) => g.length === 1), "delivery to all 8 before the failover");

      const { code } = await hosts[0].stop(); // SIGTERM: Close with allowReconnect to its clients
      assert.equal(code, 0);
      await waitUntil(() => clients.every((c) => c.state === signalR.HubConnectionState.Connected), "every client connected again", 15_000);
      const moved = clients.filter((c) => c.reconnected > 0);
      assert.deepEqual(new Set(moved.map((c) => idBefore.get(c))), onHostA, "exactly host A's clients reconnected");
      const idAfter = await ids();
      for (const c of clients) {
        if (moved.includes(c)) assert.notEqual(idAfter.get(c), idBefore.get(c), "a reconnect is a new connection");
        else assert.equal(idAfter.get(c), idBefore.get(c), "host B's clients were not disturbed");
      }
      assert.equal(await onHost(hosts[1]), 8, "all eight now on host B");

      // Nothing is lost after the reconnect: everyone sends, everyone receives everything.
      for (const g of got) g.length = 0;
      await Promise.all(clients.map((c, i) => c.invoke("Send", `client ${i}`, "after the failover")));
      await waitUntil(() => got.every((g) => g.length === 8), "all 8 messages at all 8 clients", 10_000);
      for (const g of got) {
        assert.deepEqual(g.map((m) => m[0]).sort(), clients.map((_, i) => `client ${i}`).sort());
      }
    } finally {
      await Promise.all(clients.map((c) => c.stop()));
      await nginx.stop();
      await Promise.all(hosts.map((h) => h.stop()));
      await redis.stop();
    }
  });
});

describe("--public-url behind a round-robin nginx", () => {
  it("sends each negotiating client to one host, so every transport works without sticky sessions", async () => {
    const redis = await startRedis();
    const ports = [await freePort(), await freePort()];
    const hosts = await Promise.all(
      ports.map((port) =>
        startHost({
          hubs: ["chat"],
          // Debug logs of sessions name each connection a host accepts.
          env: { HUBHOST_LOG: "info,hub=trace,hubhost::session=debug" },
          args: ["--redis", redis.url, "--listen", `127.0.0.1:${port}`, "--public-url", `http://127.0.0.1:${port}`, "--drain-timeout", "5s"],
        }),
      ),
    );
    const nginx = await startNginx(hosts.map((h) => h.address));
    const clients = [];
    try {
      await Promise.all(hosts.map((h) => waitReady(h)));
      // Through nginx, negotiate answers where to go instead, keeping the caller's token.
      const redirect = await (
        await fetch(`${nginx.url}/Chat/negotiate?negotiateVersion=1`, { method: "POST", headers: { Authorization: "Bearer t0ken" } })
      ).json();
      assert.ok(
        ports.some((p) => redirect.url === `http://127.0.0.1:${p}/chat`),
        `redirected to a host: ${JSON.stringify(redirect)}`,
      );
      assert.equal(redirect.accessToken, "t0ken");
      // Asked directly, a host negotiates as usual.
      const direct = await (await fetch(`${hosts[0].url}/chat/negotiate?negotiateVersion=1`, { method: "POST" })).json();
      assert.equal(direct.negotiateVersion, 1);

      // Two clients of every transport and protocol, all through nginx.
      for (const [transport, protocol] of [...COMBINATIONS, ...COMBINATIONS]) {
        const c = await connectOver(`${nginx.url}/chat`, {
          transport,
          protocol,
          configure: (b) => b.withAutomaticReconnect([0, 200, 500, 1000, 2000]),
        });
        c.reconnected = 0;
        c.onreconnected(() => c.reconnected++);
        c.name = `${transport}/${protocol}/${clients.length}`;
        clients.push(c);
        assert.equal(await c.invoke("Whoami"), c.connectionId);
      }
      const counts = [await metric(hosts[0], "hubhost_connections"), await metric(hosts[1], "hubhost_connections")];
      assert.equal(counts[0] + counts[1], clients.length);
      assert.ok(counts[0] > 0 && counts[1] > 0, `both hosts serve clients (${counts})`);

      const got = clients.map((c) => record(c, "broadcastMessage"));
      for (const c of clients) await c.invoke("Send", c.name, "hello");
      await waitUntil(() => got.every((g) => g.length === clients.length), "every message at every client");
      for (const g of got) assert.deepEqual(g.map(([name]) => name).sort(), clients.map((c) => c.name).sort());

      // Host A stops: its clients, whatever their transport, reconnect through nginx, are sent
      // to host B, and everyone chats again.
      const onA = new Set();
      for (const c of clients) {
        if (hosts[0].logsMatching(c.connectionId).length > 0) onA.add(c);
      }
      assert.equal(onA.size, counts[0]);
      await hosts[0].stop();
      await waitUntil(() => [...onA].every((c) => c.reconnected === 1 && c.state === signalR.HubConnectionState.Connected), "the clients of host A to reconnect", 15_000);
      assert.equal(await metric(hosts[1], "hubhost_connections"), clients.length);
      got.forEach((g) => g.splice(0));
      for (const c of clients) await c.invoke("Send", c.name, "again");
      await waitUntil(() => got.every((g) => g.length === clients.length), "every message at every client after the failover");
    } finally {
      await Promise.all(clients.map((c) => c.stop()));
      await nginx.stop();
      await Promise.all(hosts.map((h) => h.stop()));
      await redis.stop();
    }
  });
});
