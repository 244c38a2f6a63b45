// Hubs that misbehave: traps, panics, endless loops, memory hogs. Each call fails alone; the hub
// stays loaded, other clients and the host carry on.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { connect, record, signalR, waitUntil } from "./support/client.mjs";
import { startHost } from "./support/host.mjs";

const generic = (method) => `An unexpected error occurred invoking '${method}' on the server.`;

describe("faulty hub, default errors", () => {
  let host;
  const clients = [];
  const join = async (hub = "faulty") => {
    const c = await connect(`${host.url}/${hub}`);
    clients.push(c);
    return c;
  };
  before(async () => {
    host = await startHost({
      hubs: ["chat", "faulty"],
      // No rate limit: the sequential-calls test makes thousands of calls a second.
      args: ["--call-timeout", "1s", "--hub-memory", "16MiB", "--rate-limit", "0"],
    });
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.stop()));
    const { code } = await host.stop();
    assert.equal(code, 0, "the host exits cleanly after all the faults");
  });

  it("a panic fails the call with the generic text and logs the panic message", async () => {
    const a = await join();
    await assert.rejects(a.invoke("Panic", "the answer is not 42"), { message: generic("Panic") });
    assert.equal(a.state, signalR.HubConnectionState.Connected);
    assert.equal(await a.invoke("Add", 2, 3), 5);
    await waitUntil(() => host.logsMatching("hub panicked").length > 0, "the panic in the log");
    const [line] = host.logsMatching("hub panicked");
    assert.match(line.fields.message, /the answer is not 42/);
    assert.equal(line.fields.hub, "faulty");
    assert.equal(line.fields.connection, a.connectionId);
  });

  it("a trap fails the call; the trap is logged with hub, method and connection", async () => {
    const a = await join();
    await assert.rejects(a.invoke("Trap"), { message: generic("Trap") });
    assert.equal(await a.invoke("Add", 1, 1), 2);
    const trapLines = () => host.logsMatching("hub trapped").filter((l) => l.fields.method === "Trap");
    await waitUntil(() => trapLines().length > 0, "the trap in the log");
    const traps = trapLines();
    assert.equal(traps.length, 1);
    assert.equal(traps[0].fields.connection, a.connectionId);
    assert.match(traps[0].fields.message, /unreachable|abort/i);
  });

  it("an endless loop is stopped at the deadline while other clients carry on", async () => {
    const looping = await join();
    const other = await join();
    const chatter = await join("chat");
    const started = Date.now();
    const spin = looping.invoke("Spin").then(
      () => assert.fail("Spin cannot succeed"),
      (e) => e,
    );
    // While the loop runs, the same hub and another hub answer.
    assert.equal(await other.invoke("Add", 20, 22), 42);
    assert.equal(await chatter.invoke("Echo", "not blocked"), "not blocked");
    const error = await spin;
    assert.equal(error.message, generic("Spin"));
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 900 && elapsed < 5000, `stopped at the 1 s deadline (took ${elapsed} ms)`);
    assert.equal(looping.state, signalR.HubConnectionState.Connected);
    assert.equal(await looping.invoke("Add", 1, 2), 3, "a later call to the same hub works");
  });

  it("a call that eats memory fails at the cap; the hub keeps working", async () => {
    const a = await join();
    assert.equal(await a.invoke("Allocate", 4), 4, "below the cap is fine");
    await assert.rejects(a.invoke("Allocate", 64), { message: generic("Allocate") });
    assert.equal(await a.invoke("Add", 5, 5), 10);
  });

  it("repeated memory hogs leave the host's memory bounded", async () => {
    const a = await join();
    await assert.rejects(a.invoke("Allocate", 64));
    const before = host.rssKiB();
    for (let i = 0; i < 40; i++) {
      await assert.rejects(a.invoke("Allocate", 64), { message: generic("Allocate") });
    }
    const grown = host.rssKiB() - before;
    // 40 calls each touched up to the 16 MiB cap (640 MiB in all); instances are discarded
    // and their memory returned, so the host grows by far less than one more cap's worth.
    assert.ok(grown < 16 * 1024, `host RSS grew by ${grown} KiB`);
    console.log(`host RSS after 40 capped allocations: ${before} KiB -> ${before + grown} KiB`);
  });

  it("a deliberate rejection reaches the caller; an unexpected failure does not leak", async () => {
    const a = await join();
    await assert.rejects(a.invoke("Reject", "not today"), {
      message: `${generic("Reject")} HubException: not today`,
    });
    await assert.rejects(a.invoke("Fail"), { message: generic("Fail") });
    await waitUntil(() => host.logsMatching("invalid digit").length > 0, "the cause in the log");
  });

  it("sends made before a trap are delivered", async () => {
    const a = await join();
    const b = await join();
    const got = record(b, "beforeTrap");
    await assert.rejects(a.invoke("SendThenTrap", "last words"), { message: generic("SendThenTrap") });
    await waitUntil(() => got.length === 1, "the send made before the trap");
    assert.deepEqual(got, [["last words"]]);
  });

  it("1,000 sequential calls after a trap all succeed", async () => {
    const a = await join();
    await assert.rejects(a.invoke("Trap"));
    for (let i = 0; i < 1000; i++) {
      assert.equal(await a.invoke("Add", i, 1), i + 1);
    }
  });

  it("fire-and-forget calls that trap produce no completion and no disconnect", async () => {
    const a = await join();
    await a.send("Trap");
    await a.send("Panic", "quietly");
    assert.equal(await a.invoke("Add", 0, 0), 0);
    assert.equal(a.state, signalR.HubConnectionState.Connected);
  });
});

describe("per-hub limits from NAME.toml", () => {
  let host;
  before(async () => {
    host = await startHost({
      hubs: ["faulty", "chat"],
      args: ["--call-timeout", "5s", "--hub-memory", "64MiB", "--detailed-errors"],
      settings: {
        faulty: 'call-timeout = "300ms"\nmemory = "8MiB"\n',
        chat: 'max-message-size = "2KiB"\n',
      },
    });
  });
  after(() => host.stop());

  it("applies the hub's own deadline and memory cap", async () => {
    const a = await connect(`${host.url}/faulty`);
    await assert.rejects(a.invoke("Spin"), {
      message: `${generic("Spin")} TimeoutException: The call exceeded its deadline of 300ms.`,
    });
    await assert.rejects(a.invoke("Allocate", 16), {
      message: `${generic("Allocate")} OutOfMemoryException: The hub exceeded its memory limit of 8 MiB.`,
    });
    assert.equal(await a.invoke("Allocate", 2), 2);
    await a.stop();
  });

  it("applies the hub's own message size limit", async () => {
    const c = await connect(`${host.url}/chat`);
    assert.equal(await c.invoke("Echo", "x".repeat(1500)), "x".repeat(1500));
    c.invoke("Echo", "x".repeat(3000)).catch(() => {});
    const error = await c.closed;
    assert.match(error.message, /The maximum message size of 2048B was exceeded/);
  });

  it("refuses a hub whose settings are invalid, naming the file", async () => {
    const bad = await startHost({ hubs: ["chat", "faulty"], settings: { faulty: 'memroy = "1MiB"\n' } });
    try {
      await waitUntil(() => bad.logsMatching("faulty.toml is not valid").length > 0, "the rejection");
      assert.equal((await fetch(`${bad.url}/faulty/negotiate`, { method: "POST" })).status, 404);
      assert.equal((await fetch(`${bad.url}/chat/negotiate`, { method: "POST" })).status, 200);
    } finally {
      await bad.stop();
    }
  });
});

describe("sandbox", () => {
  let host;
  let a;
  before(async () => {
    host = await startHost({ hubs: ["faulty"], env: { HUBHOST_SECRET_FOR_TEST: "do not leak" } });
    a = await connect(`${host.url}/faulty`);
  });
  after(async () => {
    await a.stop();
    await host.stop();
  });

  it("has no filesystem", async () => {
    for (const path of ["/etc/passwd", "/", ".", host.dir]) {
      const result = await a.invoke("ReadFile", path);
      assert.match(result, /^error: /, `${path}: ${result}`);
    }
    assert.match(await a.invoke("ListDir", "/"), /^error: /);
  });

  it("has no environment", async () => {
    assert.deepEqual(await a.invoke("Env", "HUBHOST_SECRET_FOR_TEST"), [null, 0]);
    assert.deepEqual(await a.invoke("Env", "PATH"), [null, 0]);
  });

  it("has no network", async () => {
    const res = await a.invoke("ConnectTcp", host.address);
    assert.match(res, /^error: /);
  });

  it("keeps working after all those attempts", async () => {
    assert.equal(await a.invoke("Add", 1, 1), 2);
  });
});

describe("faulty hub, detailed errors", () => {
  let host;
  let a;
  before(async () => {
    host = await startHost({
      hubs: ["faulty"],
      args: ["--call-timeout", "500ms", "--hub-memory", "16MiB", "--detailed-errors"],
    });
    a = await connect(`${host.url}/faulty`);
  });
  after(async () => {
    await a.stop();
    await host.stop();
  });

  it("names the cause of each failure", async () => {
    await assert.rejects(a.invoke("Spin"), {
      message: `${generic("Spin")} TimeoutException: The call exceeded its deadline of 500ms.`,
    });
    await assert.rejects(a.invoke("Allocate", 64), {
      message: `${generic("Allocate")} OutOfMemoryException: The hub exceeded its memory limit of 16 MiB.`,
    });
    await assert.rejects(a.invoke("Fail"), {
      message: `${generic("Fail")} ParseIntError: invalid digit found in string`,
    });
    const trap = await a.invoke("Trap").catch((e) => e);
    assert.match(trap.message, new RegExp(`^${generic("Trap").replace(/[.()']/g, "\\$&")} WasmTrap: `));
  });
});

describe("a hub built without the SDK", () => {
  let host;
  before(async () => {
    host = await startHost({ hubs: ["rogue"] });
  });
  after(() => host.stop());

  it("cannot inject messages into its caller's stream through its result", async () => {
    const a = await connect(`${host.url}/rogue`);
    const injected = record(a, "injected");
    await assert.rejects(a.invoke("Inject"), { message: generic("Inject") });
    await assert.rejects(a.invoke("TwoValues"), { message: generic("TwoValues") });
    await assert.rejects(a.invoke("NotJson"), { message: generic("NotJson") });
    // A later completion on the same connection arrives after anything the results could have
    // smuggled in: nothing was.
    assert.deepEqual(await a.invoke("Echo", "still", 1), ["still", 1]);
    assert.deepEqual(injected, []);
    assert.equal(a.state, signalR.HubConnectionState.Connected);
    const logged = host.logsMatching("not one JSON value").filter((l) => l.fields.method === "Inject");
    assert.equal(logged.length, 1, "the host says what the hub did wrong");
    await a.stop();
  });
});
