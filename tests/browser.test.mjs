// The seed's picture in a real browser: the demo page on host A and on host B (sharing Redis);
// a message typed in one appears in the other. Screenshots go to test-artifacts/ (not committed).

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";

import { launchChromium as launch } from "./support/browser.mjs";
import { labelledMetric, startHost } from "./support/host.mjs";
import { startRedis } from "./support/redis.mjs";

const artifacts = resolve(import.meta.dirname, "..", "test-artifacts");
const modules = resolve(import.meta.dirname, "..", "node_modules");

describe("demo page in headless Chromium, two hosts", () => {
  let redis;
  let hosts = [];
  let browser;

  before(async () => {
    redis = await startRedis();
    hosts = await Promise.all([0, 1].map(() => startHost({ hubs: ["chat"], args: ["--redis", redis.url] })));
    browser = await launch();
    mkdirSync(artifacts, { recursive: true });
  });
  after(async () => {
    await browser?.close();
    await Promise.all(hosts.map((h) => h.stop()));
    await redis?.stop();
  });

  it("a message typed on host A appears on host B, and both count two online", async () => {
    const [pageA, pageB] = await Promise.all([browser.newPage(), browser.newPage()]);
    await pageA.goto(`${hosts[0].url}/`);
    await pageB.goto(`${hosts[1].url}/`);
    for (const page of [pageA, pageB]) {
      await page.locator("#status.connected").waitFor({ timeout: 10_000 });
    }
    await pageA.locator("#online", { hasText: "2 online" }).waitFor({ timeout: 10_000 });
    await pageB.locator("#online", { hasText: "2 online" }).waitFor({ timeout: 10_000 });

    await pageA.fill("#name", "Ana on A");
    await pageA.fill("#message", "hello from host A");
    await pageA.click("#send");
    await pageB.locator("#messages li", { hasText: "hello from host A" }).waitFor({ timeout: 10_000 });

    await pageB.fill("#name", "Ben on B");
    await pageB.fill("#message", "hi Ana, this is host B");
    await pageB.press("#message", "Enter");
    await pageA.locator("#messages li", { hasText: "hi Ana, this is host B" }).waitFor({ timeout: 10_000 });

    const itemsOnA = await pageA.locator("#messages li").allTextContents();
    assert.deepEqual(itemsOnA.slice(0, 2), ["Ben on Bhi Ana, this is host B", "Ana on Ahello from host A"]);
    await pageA.screenshot({ path: join(artifacts, "demo-host-a.png") });
    await pageB.screenshot({ path: join(artifacts, "demo-host-b.png") });
  });
});

describe("the official browser client in Chromium, from another origin, without WebSockets", () => {
  let page;
  let server;
  let browser;

  before(async () => {
    // The page comes from one host; the hub it talks to is on another (another origin), which
    // offers only Server-Sent Events and long polling.
    page = await startHost({ hubs: ["chat"] });
    server = await startHost({ hubs: ["chat"], args: ["--transports", "sse,longpolling"] });
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
    await page?.stop();
    await server?.stop();
  });

  it("JSON falls back to Server-Sent Events and MessagePack to long polling, and they talk", async () => {
    const tab = await browser.newPage();
    await tab.goto(`${page.url}/`);
    await tab.addScriptTag({ path: join(modules, "@microsoft/signalr/dist/browser/signalr.js") });
    await tab.addScriptTag({ path: join(modules, "@microsoft/signalr-protocol-msgpack/dist/browser/signalr-protocol-msgpack.js") });
    const result = await tab.evaluate(async (hubUrl) => {
      const connect = async (binary) => {
        const builder = new signalR.HubConnectionBuilder().withUrl(hubUrl).configureLogging(signalR.LogLevel.Warning);
        if (binary) builder.withHubProtocol(new signalR.protocols.msgpack.MessagePackHubProtocol());
        const connection = builder.build();
        connection.got = [];
        connection.on("broadcastMessage", (name, message) => connection.got.push(`${name}: ${message}`));
        await connection.start();
        return connection;
      };
      const [json, binary] = [await connect(false), await connect(true)];
      await json.invoke("Send", "json", "hello from SSE");
      await binary.invoke("Send", "msgpack", "hello from long polling");
      const started = Date.now();
      while (json.got.length < 2 || binary.got.length < 2) {
        if (Date.now() - started > 10_000) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      const ids = [json.connectionId === (await json.invoke("Whoami")), binary.connectionId === (await binary.invoke("Whoami"))];
      return { got: [json.got, binary.got], ids };
    }, `${server.url}/chat`);
    assert.deepEqual(result.got, [
      ["json: hello from SSE", "msgpack: hello from long polling"],
      ["json: hello from SSE", "msgpack: hello from long polling"],
    ]);
    assert.deepEqual(result.ids, [true, true]);
    assert.equal(await labelledMetric(server, "hubhost_transport_connections", "transport", "ServerSentEvents"), 1);
    assert.equal(await labelledMetric(server, "hubhost_transport_connections", "transport", "LongPolling"), 1);
    await tab.close();
  });
});
