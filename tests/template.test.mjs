// The "write your own hub" guide, verified: from an empty folder to a custom hub served by a
// running host in three commands (hubhost new, cargo build, cp).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
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

  const run = (cmd, args, cwd, env = {}) => execFileSync(cmd, args, { cwd, env: { ...userEnv(), ...env }, stdio: "pipe", encoding: "utf8" });

  /** Builds the crate and drops its component into the running host; returns the hub's URL. */
  async function deploy(name, env) {
    run("cargo", ["build", "--release", "--quiet"], join(work, name), env);
    const built = join(env.CARGO_TARGET_DIR ?? join(work, name, "target"), `wasm32-wasip2/release/${name}.wasm`);
    run("cp", [built, host.dir], work);
    await waitUntil(() => host.logsMatching("hub loaded").some((l) => l.fields.hub === name), "the host to load it", 15_000);
    return `${host.url}/${name}`;
  }

  async function chats(url) {
    const [a, b] = [await connect(url), await connect(url)];
    const got = record(b, "ReceiveMessage");
    await a.invoke("SendMessage", "ana", "made from the template");
    await waitUntil(() => got.length === 1, "the template hub's broadcast");
    assert.deepEqual(got, [["ana", "made from the template"]]);
    await Promise.all([a.stop(), b.stop()]);
  }

  it("goes from an empty folder to a served hub in three commands", async () => {
    // 1. create the crate: it depends on the SDK of the checkout this binary was built from
    const created = run(bin, ["new", "greeter"], work);
    assert.match(created, /cargo build --release/);
    assert.match(readFileSync(join(work, "greeter/Cargo.toml"), "utf8"), /hubhost-sdk = \{ path = ".*guest-sdk" \}/);
    // 2. build it, 3. drop it into the running host's hubs directory
    await chats(await deploy("greeter", {}));
  });

  it("writes a crate that carries its own copy of the SDK with --vendor-sdk", async () => {
    run(bin, ["new", "loner", "--vendor-sdk"], work);
    assert.match(readFileSync(join(work, "loner/Cargo.toml"), "utf8"), /hubhost-sdk = \{ path = "hubhost-sdk" \}/);
    // Nothing points outside the crate, so it builds wherever it is copied.
    for (const manifest of ["Cargo.toml", "hubhost-sdk/Cargo.toml", "hubhost-sdk/macros/Cargo.toml"]) {
      const paths = [...readFileSync(join(work, "loner", manifest), "utf8").matchAll(/path = "([^"]*)"/g)].map((m) => m[1]);
      for (const path of paths) assert.ok(!path.startsWith("/") && !path.includes(".."), `${manifest}: ${path}`);
    }
    // The first crate's build directory is reused, so only the SDK copy compiles again.
    await chats(await deploy("loner", { CARGO_TARGET_DIR: join(work, "greeter/target") }));
  });
});
