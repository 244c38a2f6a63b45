// The "write your own hub" guide, verified: from an empty folder to a custom hub served by a
// running host in three commands (hubhost new, cargo build, cp).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";

import { connect, record, waitUntil } from "./support/client.mjs";
import { startHost } from "./support/host.mjs";

const root = resolve(import.meta.dirname, "..");
const bin = resolve(process.env.HUBHOST_BIN ?? join(root, "target/debug/hubhost"));

/** The environment of a user's shell: none of the variables cargo sets for its children. */
function userEnv() {
  const env = { ...process.env };
  for (const key of Object.keys(env)) {
    if ((key.startsWith("CARGO") && key !== "CARGO_HOME") || key.startsWith("RUSTUP_TOOLCHAIN") || key === "RUSTC") {
      delete env[key];
    }
  }
  return env;
}

describe("hub template", () => {
  let host;
  let work;
  before(async () => {
    host = await startHost({ hubs: [] });
    work = mkdtempSync(join(tmpdir(), "hubhost-template-"));
  });
  after(async () => {
    await host.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it("goes from an empty folder to a served hub in three commands", async () => {
    const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, env: userEnv(), stdio: "pipe", encoding: "utf8" });
    // 1. create the crate
    const created = run(bin, ["new", "greeter", "--sdk", join(root, "guest-sdk")], work);
    assert.match(created, /cargo build --release/);
    // 2. build it
    run("cargo", ["build", "--release", "--quiet"], join(work, "greeter"));
    // 3. drop it into the running host's hubs directory
    run("cp", [join(work, "greeter/target/wasm32-wasip2/release/greeter.wasm"), host.dir], work);

    await waitUntil(() => host.logsMatching("hub loaded").some((l) => l.fields.hub === "greeter"), "the host to load it", 15_000);
    const [a, b] = [await connect(`${host.url}/greeter`), await connect(`${host.url}/greeter`)];
    const got = record(b, "ReceiveMessage");
    await a.invoke("SendMessage", "ana", "made from the template");
    await waitUntil(() => got.length === 1, "the template hub's broadcast");
    assert.deepEqual(got, [["ana", "made from the template"]]);
    await Promise.all([a.stop(), b.stop()]);
  });
});
