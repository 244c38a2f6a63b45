// Host lifecycle as clients see it: graceful shutdown tells them to reconnect.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { connect, rawHub, signalR } from "./support/client.mjs";
import { startHost } from "./support/host.mjs";

describe("graceful shutdown", () => {
  it("sends every client Close with allowReconnect, then exits 0", async () => {
    const host = await startHost({ hubs: ["chat"] });
    const raw = await rawHub(`${host.url}/chat`);
    const plain = await connect(`${host.url}/chat`);
    const reconnecting = await connect(`${host.url}/chat`, {}, (b) =>
      b.withAutomaticReconnect([60_000]),
    );
    const wentReconnecting = new Promise((res) => reconnecting.onreconnecting(res));

    const { code } = await host.stop();
    assert.equal(code, 0);

    assert.equal(await raw.closed, 1000);
    assert.equal(raw.records.at(-1), '{"type":7,"allowReconnect":true}');
    // A client without automatic reconnect closes cleanly (no error)...
    assert.equal(await plain.closed, undefined);
    // ...and one with it starts reconnecting, as the server asked.
    await wentReconnecting;
    assert.equal(reconnecting.state, signalR.HubConnectionState.Reconnecting);
    await reconnecting.stop();
  });

  it("lets a call in flight finish and answer before closing", async () => {
    const host = await startHost({ hubs: ["faulty"] });
    const c = await connect(`${host.url}/faulty`);
    const call = c.invoke("Busy", 700);
    await new Promise((r) => setTimeout(r, 150)); // the call is running
    const stopped = host.stop();
    const loops = await call;
    assert.ok(loops > 0, "the in-flight call completed with its result");
    assert.equal(await c.closed, undefined, "then the client was closed cleanly");
    assert.equal((await stopped).code, 0);
  });

  it("refuses to start with an invalid configuration, with one clear line", async () => {
    await assert.rejects(
      startHost({ args: ["--keep-alive", "1m", "--client-timeout", "30s"] }),
      /--keep-alive must be greater than zero and shorter than --client-timeout/,
    );
    await assert.rejects(startHost({ args: ["--hub-memory", "lots"] }), /'lots' is not a size like 32KiB or 64MiB/);
  });
});
