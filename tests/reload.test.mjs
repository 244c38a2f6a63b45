// Hot reload: hubs added, replaced and removed in the hubs directory take effect without a
// restart; invalid files are rejected with one clear log line.

import assert from "node:assert/strict";
import { copyFileSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import { connect, signalR, waitUntil } from "./support/client.mjs";
import { hubPath, startHost } from "./support/host.mjs";

/** Deploys `hub` as `name.wasm` the documented way: write a hidden file, rename it into place. */
function deploy(dir, hub, name) {
  const tmp = join(dir, `.${name}.wasm.tmp`);
  copyFileSync(hubPath(hub), tmp);
  renameSync(tmp, join(dir, `${name}.wasm`));
}

async function negotiateStatus(host, hub) {
  return (await fetch(`${host.url}/${hub}/negotiate?negotiateVersion=1`, { method: "POST" })).status;
}

async function eventually(fn, what, timeoutMs = 10_000) {
  const started = Date.now();
  let last;
  while (Date.now() - started < timeoutMs) {
    try {
      return await fn();
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}: ${last?.message}`);
}

describe("hot reload", () => {
  let host;
  before(async () => {
    host = await startHost({ hubs: ["chat"] });
  });
  after(() => host.stop());

  it("serves a hub added while running", async () => {
    assert.equal(await negotiateStatus(host, "added"), 404);
    deploy(host.dir, "faulty", "added");
    await eventually(async () => assert.equal(await negotiateStatus(host, "added"), 200), "the new hub");
    const c = await connect(`${host.url}/added`);
    assert.equal(await c.invoke("Add", 40, 2), 42);
    await c.stop();
  });

  it("replaces version 1 of a hub with version 2 under a live connection", async () => {
    deploy(host.dir, "versioned-v1", "greeter");
    await eventually(async () => assert.equal(await negotiateStatus(host, "greeter"), 200), "version 1");
    const c = await connect(`${host.url}/greeter`);
    assert.equal(await c.invoke("Version"), 1);
    assert.equal(await c.invoke("Greet", "ana"), "Hello, ana!");
    deploy(host.dir, "versioned-v2", "greeter");
    await eventually(async () => assert.equal(await c.invoke("Version"), 2), "version 2 answering");
    assert.equal(await c.invoke("Greet", "ana"), "Hi ana, from version 2");
    assert.equal(c.state, signalR.HubConnectionState.Connected, "the connection stayed open");
    await c.stop();
  });

  it("switches a live connection to a different hub deployed under its name", async () => {
    deploy(host.dir, "chat", "live");
    await eventually(async () => assert.equal(await negotiateStatus(host, "live"), 200), "version 1");
    const c = await connect(`${host.url}/live`);
    assert.equal(await c.invoke("Echo", "v1"), "v1");

    deploy(host.dir, "faulty", "live"); // version 2: a different hub entirely
    // Same connection, still open: version 2's method answers once the swap is done.
    const sum = await eventually(() => c.invoke("Add", 1, 2), "version 2 answering");
    assert.equal(sum, 3);
    await assert.rejects(c.invoke("Echo", "v1?"), {
      message: "Failed to invoke 'Echo' due to an error on the server. HubException: Method does not exist.",
    });
    assert.equal(c.state, signalR.HubConnectionState.Connected);
    assert.equal(host.logsMatching("hub replaced").filter((l) => l.fields.hub === "live").length, 1);
    await c.stop();
  });

  it("does not reload a hub that is only read", async () => {
    deploy(host.dir, "versioned-v1", "readonly");
    await waitUntil(() => host.logsMatching("hub loaded").some((l) => l.fields.hub === "readonly"), "readonly loaded", 10_000);
    // Read it (as a backup or a copy would), then change another hub: once that one is
    // reloaded, a reload of the read one, due earlier, would have happened.
    readFileSync(join(host.dir, "readonly.wasm"));
    deploy(host.dir, "versioned-v1", "sentinel");
    await waitUntil(() => host.logsMatching("hub loaded").some((l) => l.fields.hub === "sentinel"), "the sentinel loaded", 10_000);
    const reloads = host.logsMatching("readonly").filter((l) => l.fields.message !== "hub loaded");
    assert.deepEqual(reloads, []);
  });

  it("reloads a hub when its NAME.toml changes", async () => {
    writeFileSync(join(host.dir, "limited.toml"), 'memory = "4MiB"\n');
    deploy(host.dir, "faulty", "limited");
    await eventually(async () => assert.equal(await negotiateStatus(host, "limited"), 200), "the hub");
    const c = await connect(`${host.url}/limited`);
    await assert.rejects(c.invoke("Allocate", 8), /An unexpected error occurred invoking 'Allocate'/);
    writeFileSync(join(host.dir, "limited.toml"), 'memory = "32MiB"\n');
    assert.equal(await eventually(() => c.invoke("Allocate", 8), "the new limit"), 8);
    await c.stop();
  });

  it("closes the connections of a removed hub and answers 404 afterwards", async () => {
    deploy(host.dir, "chat", "doomed");
    await eventually(async () => assert.equal(await negotiateStatus(host, "doomed"), 200), "the hub");
    const c = await connect(`${host.url}/doomed`);
    unlinkSync(join(host.dir, "doomed.wasm"));
    const error = await c.closed;
    assert.equal(error.message, "Server returned an error on close: The hub 'doomed' was removed from the server.");
    assert.equal(await negotiateStatus(host, "doomed"), 404);
  });

  it("rejects an invalid file with one log line, and the previous version keeps serving", async () => {
    // A new file that is not WebAssembly at all.
    writeFileSync(join(host.dir, "garbage.wasm"), "this is not wasm");
    await waitUntil(() => host.logsMatching("garbage.wasm").length > 0, "the rejection", 10_000);
    const [line] = host.logsMatching("garbage.wasm");
    assert.equal(line.level, "ERROR");
    assert.match(line.fields.message, /^hub not loaded: .*garbage\.wasm is not a valid WebAssembly component/);
    assert.equal(await negotiateStatus(host, "garbage"), 404);

    // A valid but empty component: it does not implement the hub world.
    writeFileSync(join(host.dir, "empty.wasm"), Buffer.from([0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]));
    await waitUntil(() => host.logsMatching("empty.wasm").length > 0, "the rejection", 10_000);
    assert.match(host.logsMatching("empty.wasm")[0].fields.message, /does not implement the hub world|needs imports|hub world/);

    // A broken replacement of a serving hub leaves the old version in place.
    const c = await connect(`${host.url}/chat`);
    const tmp = join(host.dir, ".chat.wasm.tmp");
    writeFileSync(tmp, "broken");
    renameSync(tmp, join(host.dir, "chat.wasm"));
    await waitUntil(() => host.logsMatching("the previous version keeps serving").length > 0, "the rejection", 10_000);
    assert.equal(await c.invoke("Echo", "still v1"), "still v1");
    await c.stop();
  });
});
