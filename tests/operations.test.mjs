// What an operator relies on: bearer tokens, protected hubs, origins, rate limits, metrics and
// the configuration file.

import assert from "node:assert/strict";
import { createSign, generateKeyPairSync } from "node:crypto";
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";

import { connect, rawSocket, record, waitUntil } from "./support/client.mjs";
import { startHost } from "./support/host.mjs";
import { jwt } from "./support/jwt.mjs";

const SECRET = "operations-test-secret";
const now = () => Math.floor(Date.now() / 1000);

describe("bearer tokens", () => {
  let host;
  const clients = [];
  const join = async (hub, token, extra = {}) => {
    const c = await connect(`${host.url}/${hub}`, token === undefined ? extra : { accessTokenFactory: () => token, ...extra });
    clients.push(c);
    return c;
  };
  before(async () => {
    host = await startHost({
      hubs: ["chat", "presence"],
      args: ["--jwt-secret", SECRET, "--jwt-user-claim", "name"],
      settings: { chat: "require-auth = true\n" },
    });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    await host.stop();
  });

  it("a valid token makes the connection that user (claim from --jwt-user-claim)", async () => {
    const c = await join("chat", jwt({ name: "ana", sub: "id-1", exp: now() + 600 }, SECRET));
    assert.equal(await c.invoke("WhoamiUser"), "ana");
  });

  it("refuses expired tokens, wrong signatures, and a missing token on a protected hub", async () => {
    await assert.rejects(join("chat", jwt({ name: "ana", exp: now() - 600 }, SECRET)), /401/);
    await assert.rejects(join("chat", jwt({ name: "ana", exp: now() + 600 }, "not-the-secret")), /401/);
    await assert.rejects(join("chat"), /401/);
    // The WebSocket itself is protected too, not only negotiate.
    await assert.rejects(rawSocket(`${host.url}/chat`), (e) => e.status === 401);
  });

  it("answers refused tokens with 401 and ASP.NET's challenge", async () => {
    const negotiate = (authorization) =>
      fetch(`${host.url}/presence/negotiate?negotiateVersion=1`, { method: "POST", headers: { Authorization: authorization } });
    const challenge = async (token) => {
      const res = await negotiate(`Bearer ${token}`);
      assert.equal(res.status, 401);
      return res.headers.get("www-authenticate");
    };
    // ASP.NET's JwtBearer requires an expiry by default: a token that never expires cannot be revoked.
    assert.equal(await challenge(jwt({ name: "ana" }, SECRET)), 'Bearer error="invalid_token", error_description="The token has no expiration"');
    assert.equal(
      await challenge(jwt({ name: "ana", exp: 1736946309 }, SECRET)),
      `Bearer error="invalid_token", error_description="The token expired at '01/15/2025 13:05:09'"`,
    );
    assert.equal(
      await challenge(jwt({ name: "ana", exp: now() + 600 }, "not-the-secret")),
      'Bearer error="invalid_token", error_description="The signature key was not found"',
    );
    assert.equal(await challenge("garbage"), 'Bearer error="invalid_token"');
  });

  it("matches the Bearer scheme whatever its case, as ASP.NET does", async () => {
    const token = jwt({ name: "ana", exp: now() + 600 }, SECRET);
    for (const scheme of ["bearer", "BEARER", "Bearer"]) {
      const res = await fetch(`${host.url}/chat/negotiate?negotiateVersion=1`, {
        method: "POST",
        headers: { Authorization: `${scheme} ${token}` },
      });
      assert.equal(res.status, 200, `${scheme}: the protected hub let the user in`);
    }
  });

  it("lets anonymous clients into hubs that allow them", async () => {
    const c = await join("presence");
    assert.ok(Array.isArray(await c.invoke("Online")));
  });

  it("routes to users by the claim, across their connections", async () => {
    const token = jwt({ name: "ben", exp: now() + 600 }, SECRET);
    const [b1, b2] = [await join("chat", token), await join("chat", token)];
    const sender = await join("chat", jwt({ name: "cy", exp: now() + 600 }, SECRET));
    const got = [b1, b2].map((c) => record(c, "privateMessage"));
    await sender.invoke("SendToUser", "ben", "to both of ben's tabs");
    await waitUntil(() => got.every((g) => g.length === 1), "both connections of the user");
  });
});

describe("tokens without an expiry, when allowed", () => {
  it("accepts them with --allow-tokens-without-exp", async () => {
    const host = await startHost({ hubs: ["chat"], args: ["--jwt-secret", SECRET, "--allow-tokens-without-exp"] });
    try {
      const c = await connect(`${host.url}/chat`, { accessTokenFactory: () => jwt({ sub: "forever" }, SECRET) });
      assert.equal(await c.invoke("WhoamiUser"), "forever");
      await c.stop();
    } finally {
      await host.stop();
    }
  });
});

describe("public-key tokens", () => {
  it("verifies RS256 and ES256 tokens against --jwt-public-key", async () => {
    const keys = resolve(import.meta.dirname, "..", "host/tests/keys");
    for (const [alg, name, dsa] of [["RS256", "rsa", undefined], ["ES256", "ec", "ieee-p1363"]]) {
      const host = await startHost({ hubs: ["chat"], args: ["--jwt-public-key", join(keys, `${name}-public.pem`)] });
      try {
        const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
        const unsigned = `${b64({ alg, typ: "JWT" })}.${b64({ sub: `user-${name}`, exp: now() + 600 })}`;
        const signature = createSign("SHA256")
          .update(unsigned)
          .sign({ key: readFileSync(join(keys, `${name}-private.pem`)), dsaEncoding: dsa })
          .toString("base64url");
        const c = await connect(`${host.url}/chat`, { accessTokenFactory: () => `${unsigned}.${signature}` });
        assert.equal(await c.invoke("WhoamiUser"), `user-${name}`);
        await c.stop();
        // A token signed by another key is refused.
        const other = generateKeyPairSync(name === "rsa" ? "rsa" : "ec", name === "rsa" ? { modulusLength: 2048 } : { namedCurve: "P-256" });
        const forged = createSign("SHA256").update(unsigned).sign({ key: other.privateKey, dsaEncoding: dsa }).toString("base64url");
        await assert.rejects(connect(`${host.url}/chat`, { accessTokenFactory: () => `${unsigned}.${forged}` }), /401/);
      } finally {
        await host.stop();
      }
    }
  });
});

describe("origins", () => {
  let host;
  before(async () => {
    host = await startHost({ hubs: ["chat"], args: ["--allowed-origins", "http://good.test,http://also-good.test"] });
  });
  after(() => host.stop());

  it("allows listed origins with CORS, refuses others with 403, and leaves non-browsers alone", async () => {
    const negotiate = (origin) =>
      fetch(`${host.url}/chat/negotiate?negotiateVersion=1`, { method: "POST", headers: origin ? { Origin: origin } : {} });
    const good = await negotiate("http://good.test");
    assert.equal(good.status, 200);
    assert.equal(good.headers.get("access-control-allow-origin"), "http://good.test");
    assert.equal((await negotiate("http://evil.test")).status, 403);
    assert.equal((await negotiate(null)).status, 200);
    const { WebSocket } = await import("ws");
    const status = await new Promise((res) => {
      const ws = new WebSocket(`${host.url.replace("http", "ws")}/chat`, { headers: { Origin: "http://evil.test" } });
      ws.on("unexpected-response", (_req, response) => res(response.statusCode));
      ws.on("open", () => res(101));
    });
    assert.equal(status, 403);
  });
});

describe("rate limit", () => {
  let host;
  before(async () => {
    host = await startHost({ hubs: ["chat"], args: ["--rate-limit", "50"] });
  });
  after(() => host.stop());

  it("refuses a flood with a clear error while another connection keeps its latency", async () => {
    const flooder = await connect(`${host.url}/chat`);
    const calm = await connect(`${host.url}/chat`);
    const flood = Promise.allSettled(Array.from({ length: 1000 }, (_, i) => flooder.invoke("Echo", `f${i}`)));
    const latencies = [];
    for (let i = 0; i < 20; i++) {
      const started = performance.now();
      assert.equal(await calm.invoke("Echo", `calm ${i}`), `calm ${i}`);
      latencies.push(performance.now() - started);
    }
    const results = await flood;
    const refused = results.filter((r) => r.status === "rejected");
    assert.ok(refused.length >= 800, `most of the flood is refused (${refused.length})`);
    assert.equal(
      refused[0].reason.message,
      "Failed to invoke 'Echo' due to an error on the server. HubException: Rate limit exceeded: at most 50 invocations per second per connection.",
    );
    assert.ok(results.filter((r) => r.status === "fulfilled").length >= 100, "the burst allowance passes");
    latencies.sort((a, b) => a - b);
    console.log(`calm connection during the flood: p50 ${latencies[10].toFixed(1)} ms, max ${latencies.at(-1).toFixed(1)} ms`);
    assert.ok(latencies.at(-1) < 1000, "the calm connection is not starved");
    // The flood may have taken the bucket's last token just now: give it one refill period
    // (1/50 s) and some, so this checks the connection, not the timing.
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(await flooder.invoke("Echo", "after"), "after", "the flooder is limited, not disconnected");
    await Promise.all([flooder.stop(), calm.stop()]);
  });
});

/** Parses Prometheus text exposition strictly enough to catch format mistakes. */
function parsePrometheus(text) {
  const samples = new Map();
  const types = new Map();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    let m;
    if ((m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$/.exec(line))) continue;
    if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line))) {
      types.set(m[1], m[2]);
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? (-?[0-9.e+-]+|NaN|\+Inf)$/.exec(line);
    assert.ok(m, `not a Prometheus sample line: ${line}`);
    samples.set(m[1] + (m[2] ?? ""), Number(m[3]));
  }
  return { samples, types };
}

describe("metrics", () => {
  let host;
  before(async () => {
    host = await startHost({ hubs: ["chat", "faulty"], args: ["--call-timeout", "300ms"] });
  });
  after(() => host.stop());

  it("parse as Prometheus text and move with the traffic", async () => {
    const scrape = async () => parsePrometheus(await (await fetch(`${host.url}/metrics`)).text());
    const before = await scrape();
    assert.equal(before.types.get("hubhost_hub_call_duration_seconds"), "histogram");
    assert.equal(before.types.get("hubhost_messages_in_total"), "counter");

    const a = await connect(`${host.url}/chat`);
    const b = await connect(`${host.url}/chat`);
    const f = await connect(`${host.url}/faulty`);
    for (let i = 0; i < 5; i++) await a.invoke("Send", "a", `m${i}`);
    await f.invoke("Trap").catch(() => {});
    await f.invoke("Spin").catch(() => {});
    const during = await scrape();
    const delta = (name) => during.samples.get(name) - (before.samples.get(name) ?? 0);
    assert.equal(during.samples.get("hubhost_connections"), 3);
    assert.equal(during.samples.get('hubhost_hub_connections{hub="chat"}'), 2);
    assert.ok(delta("hubhost_messages_in_total") >= 7, "invocations counted");
    assert.ok(delta("hubhost_messages_out_total") >= 10, "5 broadcasts to 2 clients");
    assert.ok(delta("hubhost_hub_calls_total") >= 10);
    assert.equal(delta("hubhost_hub_traps_total"), 1);
    assert.equal(delta("hubhost_hub_deadline_hits_total"), 1);
    assert.ok(delta("hubhost_hub_call_duration_seconds_count") >= 10);
    assert.ok(during.samples.get('hubhost_hub_call_duration_seconds_bucket{le="+Inf"}') >= 10);
    await Promise.all([a.stop(), b.stop(), f.stop()]);
  });
});

describe("configuration file", () => {
  it("reads settings from --config, with flags winning over it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "hubhost-config-"));
    const file = join(dir, "hubhost.toml");
    writeFileSync(file, 'detailed-errors = true\ncall-timeout = "200ms"\nhub-memory = "8MiB"\n');
    const host = await startHost({ hubs: ["faulty"], args: ["--config", file, "--call-timeout", "400ms"] });
    try {
      const c = await connect(`${host.url}/faulty`);
      await assert.rejects(c.invoke("Spin"), {
        message: "An unexpected error occurred invoking 'Spin' on the server. TimeoutException: The call exceeded its deadline of 400ms.",
      });
      await assert.rejects(c.invoke("Allocate", 16), /memory limit of 8 MiB/);
      await c.stop();
    } finally {
      await host.stop();
    }
    writeFileSync(file, 'listen-on = "nowhere"\n');
    await assert.rejects(startHost({ args: ["--config", file] }), /unknown setting 'listen-on'/);
  });
});

describe("sockets", () => {
  it("have TCP_NODELAY, client connections and Redis connections alike", async () => {
    const { execFileSync } = await import("node:child_process");
    const { startRedis } = await import("./support/redis.mjs");
    const { waitReady } = await import("./support/host.mjs");
    const redis = await startRedis();
    const host = await startHost({ hubs: ["chat"], args: ["--redis", redis.url] });
    try {
      await waitReady(host);
      const raw = await rawSocket(`${host.url}/chat`);
      const clientPort = raw.ws._socket.localPort;
      // Read from the host's own sockets (see tests/support/sockopt.py).
      const script = resolve(import.meta.dirname, "support/sockopt.py");
      const sockets = execFileSync("python3", [script, String(host.pid)], { encoding: "utf8" })
        .trim()
        .split("\n")
        .filter(Boolean)
        .map((line) => JSON.parse(line));
      const client = sockets.filter((s) => s.peer[1] === clientPort);
      assert.equal(client.length, 1, JSON.stringify(sockets));
      assert.equal(client[0].nodelay, 1, "the accepted client socket");
      const toRedis = sockets.filter((s) => s.peer[1] === redis.port);
      assert.ok(toRedis.length >= 2, `publishing and subscribing connections: ${JSON.stringify(sockets)}`);
      assert.deepEqual(toRedis.map((s) => s.nodelay), toRedis.map(() => 1), "every Redis connection");
      raw.ws.close();
    } finally {
      await host.stop();
      await redis.stop();
    }
  });
});

describe("text logs", () => {
  it("carry no colour codes when written to a pipe", async () => {
    const { spawn } = await import("node:child_process");
    const { hubPath } = await import("./support/host.mjs");
    const dir = mkdtempSync(join(tmpdir(), "hubhost-logs-"));
    writeFileSync(join(dir, "chat.wasm"), readFileSync(hubPath("chat")));
    const bin = process.env.HUBHOST_BIN ?? resolve(import.meta.dirname, "..", "target/debug/hubhost");
    const child = spawn(bin, ["--listen", "127.0.0.1:0", "--hubs", dir], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    try {
      await waitUntil(() => output.includes("demo page"), "the listening and demo lines", 30_000);
      assert.match(output, /INFO .*hubhost listening/);
      assert.match(output, /demo page: http:\/\/127\.0\.0\.1:\d+\//, "the demo address is the real one");
      assert.doesNotMatch(output, /\u001b\[/, "no ANSI escape codes");
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
  });
});
