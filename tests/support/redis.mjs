// A real redis-server per test suite, on a free port, with a password; it can be stopped and
// started again on the same port to test outages.

import { spawn, execFileSync } from "node:child_process";
import { createServer } from "node:net";

const given = new Set();

/**
 * A free TCP port on 127.0.0.1 (the OS picks; released just before use) that this process has
 * not handed out before: a released port may be offered again, and a second server on it would
 * fail to bind while its test talked to the first one's.
 */
export async function freePort() {
  while (true) {
    const port = await new Promise((res, rej) => {
      const server = createServer();
      server.once("error", rej);
      server.listen(0, "127.0.0.1", () => {
        const { port } = server.address();
        server.close(() => res(port));
      });
    });
    if (!given.has(port)) {
      given.add(port);
      return port;
    }
  }
}

/** Spawns redis-server with `args` and waits until `ping()` answers PONG. */
async function spawnRedis(args, ping) {
  const child = spawn("redis-server", args, { stdio: "ignore" });
  const started = Date.now();
  while (true) {
    try {
      if (ping().trim() === "PONG") return child;
    } catch {
      // not up yet
    }
    if (Date.now() - started > 10_000) throw new Error("redis-server did not start");
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startRedis({ password = "s3cret-test-pass" } = {}) {
  const port = await freePort();
  let child = null;
  const redis = {
    port,
    password,
    url: `redis://:${password}@127.0.0.1:${port}`,
    async start() {
      child = await spawnRedis(
        ["--port", String(port), "--bind", "127.0.0.1", "--requirepass", password, "--save", "", "--appendonly", "no", "--loglevel", "warning"],
        () => redis.cli("PING"),
      );
    },
    async stop() {
      if (!child) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await exited;
      child = null;
    },
    /** Runs a redis-cli command against this server and returns its output. */
    cli(...args) {
      return execFileSync("redis-cli", ["-p", String(port), "-a", password, "--no-auth-warning", ...args], {
        encoding: "utf8",
        timeout: 5000,
      });
    },
  };
  await redis.start();
  return redis;
}

/**
 * A real Redis Cluster of 3 masters and 3 replicas on free ports, with a password, ready to use.
 * Nodes can be killed, restarted, failed over and have slots migrated.
 */
export async function startRedisCluster({ password = "s3cret-test-pass", nodeTimeoutMs = 1000 } = {}) {
  const { mkdtempSync, rmSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const dir = mkdtempSync(join(tmpdir(), "hubhost-cluster-"));
  const ports = [];
  for (let i = 0; i < 6; i++) ports.push(await freePort());
  const cli = (port, ...args) =>
    execFileSync("redis-cli", ["-p", String(port), "-a", password, "--no-auth-warning", ...args], {
      encoding: "utf8",
      timeout: 10_000,
      stdio: ["ignore", "pipe", "pipe"],
    });
  const nodes = ports.map((port) => {
    let child = null;
    const node = {
      port,
      url: `redis://:${password}@127.0.0.1:${port}`,
      cli: (...args) => cli(port, ...args),
      async start() {
        child = await spawnRedis(
          [
            "--port", String(port), "--bind", "127.0.0.1", "--requirepass", password, "--masterauth", password,
            "--cluster-enabled", "yes", "--cluster-config-file", `nodes-${port}.conf`,
            "--cluster-node-timeout", String(nodeTimeoutMs), "--dir", dir,
            "--save", "", "--appendonly", "no", "--loglevel", "warning",
          ],
          () => node.cli("PING"),
        );
      },
      /** SIGKILL, as a crash. */
      async kill() {
        if (!child) return;
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGKILL");
        await exited;
        child = null;
      },
      id: () => node.cli("CLUSTER", "MYID").trim(),
    };
    return node;
  });
  await Promise.all(nodes.map((n) => n.start()));
  execFileSync(
    "redis-cli",
    ["-a", password, "--no-auth-warning", "--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", "1", "--cluster-yes"],
    { encoding: "utf8", timeout: 30_000, stdio: ["ignore", "pipe", "pipe"] },
  );
  const cluster = {
    nodes,
    urls: nodes.slice(0, 3).map((n) => n.url),
    /** The host flags that put a host on this cluster. */
    args: () => ["--redis-cluster", cluster.urls.join(",")],
    /** Waits until every live node agrees the cluster is up. */
    async waitOk(live = nodes, timeoutMs = 15_000) {
      const started = Date.now();
      while (true) {
        const ok = live.every((n) => {
          try {
            return n.cli("CLUSTER", "INFO").includes("cluster_state:ok");
          } catch {
            return false;
          }
        });
        if (ok) return;
        if (Date.now() - started > timeoutMs) throw new Error("the cluster did not come up");
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    /** The slot of a key or channel. */
    slot: (name) => Number(nodes[0].cli("CLUSTER", "KEYSLOT", name).trim()),
    /** The live nodes' view: [{ node, id, master: bool, masterId, slots: [[from, to]] }]. */
    topology(from = nodes.find((n) => { try { n.cli("PING"); return true; } catch { return false; } })) {
      const lines = from.cli("CLUSTER", "NODES").trim().split("\n");
      return lines.map((line) => {
        const [id, addr, flags, masterId, , , , link, ...slots] = line.split(" ");
        const port = Number(addr.split("@")[0].split(":")[1]);
        return {
          node: nodes.find((n) => n.port === port),
          id,
          master: flags.includes("master"),
          failed: flags.includes("fail"),
          masterId,
          connected: link === "connected",
          slots: slots.filter((s) => !s.startsWith("[")).map((s) => s.split("-").map(Number)),
        };
      });
    },
    /** The master serving `slot` now. */
    ownerOf(slot) {
      const entry = cluster.topology().find((e) => e.master && !e.failed && e.slots.some(([a, b = a]) => slot >= a && slot <= b));
      return entry?.node;
    },
    /** A replica of `master`. */
    replicaOf(master) {
      const id = master.id();
      return cluster.topology().find((e) => !e.master && e.masterId === id)?.node;
    },
    /** Subscribers of a sharded channel, over every node. */
    shardSubscribers(channel) {
      let total = 0;
      for (const n of nodes) {
        try {
          total += Number(n.cli("PUBSUB", "SHARDNUMSUB", channel).trim().split("\n")[1]);
        } catch {
          // a node that is down has none
        }
      }
      return total;
    },
    /** Moves `slot` (empty of keys, or with them) from its master to `target`, as an operator would. */
    migrate(slot, target) {
      const source = cluster.ownerOf(slot);
      const sourceId = source.id();
      const targetId = target.id();
      target.cli("CLUSTER", "SETSLOT", String(slot), "IMPORTING", sourceId);
      source.cli("CLUSTER", "SETSLOT", String(slot), "MIGRATING", targetId);
      while (true) {
        const keys = source.cli("CLUSTER", "GETKEYSINSLOT", String(slot), "100").trim().split("\n").filter(Boolean);
        if (keys.length === 0) break;
        source.cli("MIGRATE", "127.0.0.1", String(target.port), "", "0", "5000", "AUTH", password, "KEYS", ...keys);
      }
      // The new owner first, then the old one (which then drops its subscribers of the slot).
      target.cli("CLUSTER", "SETSLOT", String(slot), "NODE", targetId);
      source.cli("CLUSTER", "SETSLOT", String(slot), "NODE", targetId);
      for (const n of nodes) {
        try {
          n.cli("CLUSTER", "SETSLOT", String(slot), "NODE", targetId);
        } catch {
          // a replica refuses; it learns from its master
        }
      }
    },
    async stop() {
      await Promise.all(nodes.map((n) => n.kill()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await cluster.waitOk();
  return cluster;
}
