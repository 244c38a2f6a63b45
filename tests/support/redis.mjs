// A real redis-server per test suite, on a free port, with a password; it can be stopped and
// started again on the same port to test outages.

import { spawn, execFileSync } from "node:child_process";
import { createServer } from "node:net";

/** A free TCP port on 127.0.0.1 (the OS picks; released just before use). */
export function freePort() {
  return new Promise((res, rej) => {
    const server = createServer();
    server.once("error", rej);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => res(port));
    });
  });
}

export async function startRedis({ password = "s3cret-test-pass" } = {}) {
  const port = await freePort();
  let child = null;
  const redis = {
    port,
    password,
    url: `redis://:${password}@127.0.0.1:${port}`,
    async start() {
      child = spawn(
        "redis-server",
        ["--port", String(port), "--bind", "127.0.0.1", "--requirepass", password, "--save", "", "--appendonly", "no", "--loglevel", "warning"],
        { stdio: "ignore" },
      );
      const started = Date.now();
      while (true) {
        try {
          if (redis.cli("PING").trim() === "PONG") return;
        } catch {
          // not up yet
        }
        if (Date.now() - started > 10_000) throw new Error("redis-server did not start");
        await new Promise((r) => setTimeout(r, 50));
      }
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
