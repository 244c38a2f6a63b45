// Drives the Python SignalR client (PyPI signalrcore, tests/support/python_client.py) from the
// tests: one JSON command per line in, one JSON event per line out.

import { spawn } from "node:child_process";
import { join, resolve } from "node:path";

import { waitUntil } from "./client.mjs";

const root = resolve(import.meta.dirname, "..", "..");
const python = process.env.HUBHOST_PYTHON ?? join(root, "target/python/bin/python");

/** Starts a Python client on `url`; resolves once it is connected. */
export async function startPythonClient(url, transport, protocol) {
  const child = spawn(python, [join(import.meta.dirname, "python_client.py"), url, transport, protocol], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  const events = [];
  const stderr = [];
  let buffered = "";
  child.stdout.on("data", (chunk) => {
    buffered += chunk.toString();
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      events.push(JSON.parse(buffered.slice(0, newline)));
      buffered = buffered.slice(newline + 1);
    }
  });
  child.stderr.on("data", (chunk) => stderr.push(chunk.toString()));
  const exited = new Promise((res) => child.on("exit", res));
  let ids = 0;
  const client = {
    events,
    exited,
    command(command) {
      child.stdin.write(`${JSON.stringify(command)}\n`);
    },
    /** Waits for the first event matching `predicate`, and returns it. */
    async next(predicate, what) {
      await waitUntil(() => events.some(predicate), `${what} (python: ${JSON.stringify(events)} ${stderr.join("")})`, 10_000);
      return events.find(predicate);
    },
    on(method) {
      client.command({ op: "on", method });
    },
    /** Invokes a hub method; resolves with `{ result }` or `{ error }`. */
    async invoke(method, ...args) {
      const id = ++ids;
      client.command({ op: "invoke", id, method, args });
      const event = await client.next((e) => (e.event === "completion" || e.event === "error") && String(e.id) === String(id), `the completion of ${method}`);
      return event.event === "error" ? { error: event.error } : { result: event.result };
    },
    async stop() {
      if (child.exitCode === null) {
        client.command({ op: "stop" });
        child.stdin.end();
      }
      return exited;
    },
  };
  await client.next((e) => e.event === "open" || e.event === "failed", "the Python client to connect");
  const failed = events.find((e) => e.event === "failed");
  if (failed) throw new Error(`python client: ${failed.error}\n${stderr.join("")}`);
  return client;
}
