// Starts real hubhost processes for the end-to-end tests.
//
// The binary and the hub components come from `cargo xtask test` (HUBHOST_BIN,
// HUBHOST_EXAMPLE_HUBS, HUBHOST_TEST_HUBS); each host gets its own temporary hubs directory and
// listens on a free port chosen by the OS, read back from its JSON log.

import { spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..", "..");
const bin = process.env.HUBHOST_BIN ?? join(root, "target/debug/hubhost");
const hubDirs = [
  process.env.HUBHOST_EXAMPLE_HUBS ?? join(root, "target/hubs"),
  process.env.HUBHOST_TEST_HUBS ?? join(root, "target/test-hubs"),
];

/** The path of a built hub component, e.g. `hubPath("chat")`. */
export function hubPath(name) {
  for (const dir of hubDirs) {
    const path = join(dir, `${name}.wasm`);
    if (existsSync(path)) return path;
  }
  throw new Error(`hub ${name}.wasm not built: run 'cargo xtask test' (or 'cargo xtask hubs')`);
}

/**
 * Starts a host serving the given hubs. Returns `{ url, logs, stop(), kill(), exited }`.
 * `args` are extra hubhost flags; `settings` maps hub names to the text of their `NAME.toml`.
 */
export async function startHost({ hubs = ["chat"], args = [], env = {}, settings = {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "hubhost-test-"));
  for (const hub of hubs) copyFileSync(hubPath(hub), join(dir, `${hub}.wasm`));
  for (const [hub, text] of Object.entries(settings)) writeFileSync(join(dir, `${hub}.toml`), text);
  const child = spawn(
    bin,
    ["--listen", "127.0.0.1:0", "--hubs", dir, "--log-format", "json", ...args],
    { env: { ...process.env, HUBHOST_LOG: "info,hub=trace", ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  const logs = [];
  let resolveAddress;
  let rejectAddress;
  const address = new Promise((res, rej) => {
    resolveAddress = res;
    rejectAddress = rej;
  });
  const exited = new Promise((res) => child.on("exit", (code, signal) => res({ code, signal })));
  let buffered = "";
  const onData = (chunk) => {
    buffered += chunk.toString();
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      let entry;
      try {
        entry = JSON.parse(line);
      } catch {
        entry = { raw: line };
      }
      logs.push(entry);
      if (entry.fields?.message === "hubhost listening") resolveAddress(entry.fields.address);
    }
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  // "close" comes once the output is read to its end ("exit" may come before the last lines).
  child.on("close", (code) => rejectAddress(new Error(`hubhost exited (${code}) before listening:\n${logs.map((l) => JSON.stringify(l)).join("\n")}`)));
  const timer = setTimeout(() => rejectAddress(new Error("hubhost did not start within 60 s")), 60_000);
  const addr = await address.finally(() => clearTimeout(timer));
  const host = {
    url: `http://${addr}`,
    address: addr,
    pid: child.pid,
    /** The host's resident memory in KiB (Linux). */
    rssKiB() {
      const status = readFileSync(`/proc/${child.pid}/status`, "utf8");
      return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
    },
    logs,
    exited,
    dir,
    /** Log entries whose message contains `text`. */
    logsMatching(text) {
      return logs.filter((l) => JSON.stringify(l).includes(text));
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const result = await exited;
      rmSync(dir, { recursive: true, force: true });
      return result;
    },
    kill() {
      child.kill("SIGKILL");
    },
  };
  return host;
}

/** A host's `/readyz` answer: `{ status, body }`. */
export async function readyz(host) {
  const res = await fetch(`${host.url}/readyz`);
  return { status: res.status, body: await res.json() };
}

/** Waits until a host is ready (hubs loaded, backplane joined); returns how long it took (ms). */
export async function waitReady(host, timeoutMs = 10_000) {
  const started = Date.now();
  while ((await readyz(host)).status !== 200) {
    if (Date.now() - started > timeoutMs) throw new Error(`${host.url} not ready within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now() - started;
}

/** The value of an unlabelled metric on a host's `/metrics`, or NaN. */
export async function metric(host, name) {
  const text = await (await fetch(`${host.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(" ")[1]) : NaN;
}

/** The value of a metric's sample with one label (`labelled(host, "m", "transport", "LongPolling")`), or 0. */
export async function labelledMetric(host, name, label, value) {
  const text = await (await fetch(`${host.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${label}="${value}"} `));
  return line ? Number(line.split(" ")[1]) : 0;
}
