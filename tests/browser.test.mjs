// The seed's picture in a real browser: the demo page on host A and on host B (sharing Redis);
// a message typed in one appears in the other. Screenshots go to test-artifacts/ (not committed).

import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";

import { chromium } from "playwright-core";

import { startHost } from "./support/host.mjs";
import { startRedis } from "./support/redis.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const artifacts = resolve(import.meta.dirname, "..", "test-artifacts");

describe("demo page in headless Chromium, two hosts", () => {
  let redis;
  let hosts = [];
  let browser;

  before(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`Chromium not found at ${CHROMIUM}: install Debian's 'chromium' (.ci/run does) or set CHROMIUM_PATH`);
    }
    redis = await startRedis();
    hosts = await Promise.all([0, 1].map(() => startHost({ hubs: ["chat"], args: ["--redis", redis.url] })));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
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
