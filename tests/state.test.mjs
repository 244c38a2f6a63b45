// Hub state is bounded per hub (state-keys, state-bytes in NAME.toml): past the quota a write
// fails with `too large` and changes nothing, on one server and across servers on Redis.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { connect } from "./support/client.mjs";
import { startHost } from "./support/host.mjs";
import { startRedis, startRedisCluster } from "./support/redis.mjs";

const refused = (key, what) =>
  `An unexpected error occurred invoking 'Increment' on the server. Exception: State::incr("${key}") failed: too large: the hub's state is limited to ${what}`;

/**
 * Runs `scenario(hosts)` against one host in memory, two hosts sharing a Redis, and two hosts on
 * a Redis Cluster.
 */
function onBothStores(title, settings, scenario) {
  it(`${title} (in memory)`, async () => {
    const host = await startHost({ hubs: ["presence"], settings: { presence: settings }, args: ["--detailed-errors"] });
    try {
      await scenario([host, host]);
    } finally {
      await host.stop();
    }
  });
  it(`${title} (Redis, two hosts)`, async () => {
    const redis = await startRedis();
    const hosts = await Promise.all(
      [0, 1].map(() => startHost({ hubs: ["presence"], settings: { presence: settings }, args: ["--detailed-errors", "--redis", redis.url] })),
    );
    try {
      await scenario(hosts);
    } finally {
      await Promise.all(hosts.map((h) => h.stop()));
      await redis.stop();
    }
  });
  it(`${title} (Redis Cluster, two hosts)`, async () => {
    const cluster = await startRedisCluster();
    const hosts = await Promise.all(
      [0, 1].map(() => startHost({ hubs: ["presence"], settings: { presence: settings }, args: ["--detailed-errors", ...cluster.args()] })),
    );
    try {
      await scenario(hosts);
    } finally {
      await Promise.all(hosts.map((h) => h.stop()));
      await cluster.stop();
    }
  });
}

describe("state quotas", () => {
  // The presence hub keeps an "online" set (one key) and one key per counter.
  onBothStores("a hub cannot keep more keys than state-keys", "state-keys = 3\n", async ([a, b]) => {
    const first = await connect(`${a.url}/presence`);
    const second = await connect(`${b.url}/presence`);
    assert.equal(await first.invoke("Increment", "a", 1), 1);
    assert.equal(await second.invoke("Increment", "b", 1), 1);
    await assert.rejects(second.invoke("Increment", "c", 1), {
      message: refused("counter:c", "3 keys (state-keys in its settings)"),
    });
    await assert.rejects(first.invoke("Increment", "c", 1), { message: refused("counter:c", "3 keys (state-keys in its settings)") });
    // Nothing changed, and existing keys still take writes.
    assert.equal(await first.invoke("Get", "c"), 0);
    assert.equal(await first.invoke("Increment", "a", 41), 42);
    await Promise.all([first.stop(), second.stop()]);
  });

  // "online" (6) + a connection id (22) = 28 bytes; "counter:a" + "1" = 10 more.
  onBothStores("a hub cannot keep more bytes than state-bytes", 'state-bytes = "40"\n', async ([a]) => {
    const client = await connect(`${a.url}/presence`);
    assert.equal(await client.invoke("Increment", "a", 1), 1);
    await assert.rejects(client.invoke("Increment", "b", 1), {
      message: refused("counter:b", "40 bytes (state-bytes in its settings)"),
    });
    // Growing a value past the quota is refused too, and leaves it as it was.
    await assert.rejects(client.invoke("Increment", "a", 1000), {
      message: refused("counter:a", "40 bytes (state-bytes in its settings)"),
    });
    assert.equal(await client.invoke("Get", "a"), 1);
    assert.equal(await client.invoke("Increment", "a", 8), 9, "same size: allowed");
    await client.stop();
  });
});
