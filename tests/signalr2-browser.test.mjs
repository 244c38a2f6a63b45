// The SignalR 2 chat tutorial's own page, served unchanged with --static, in Chromium on two
// hosts sharing a password-protected Redis, with a Core client on a third host in the same
// chat. Screenshots go to test-artifacts/ (not committed).

import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";

import { launchChromium } from "./support/browser.mjs";
import { connectOver } from "./support/client.mjs";
import { startHost, waitReady } from "./support/host.mjs";
import { startNginx } from "./support/nginx.mjs";
import { freePort, startRedis } from "./support/redis.mjs";

const root = resolve(import.meta.dirname, "..");
const artifacts = join(root, "test-artifacts");

/**
 * The application's folder: the tutorial page as it is, its scripts from the npm packages
 * (under the names the page uses), and copies of the page that force a transport (the one
 * change a SignalR 2 developer makes for that: `start({ transport })`).
 */
function makeSite() {
  const site = mkdtempSync(join(tmpdir(), "hubhost-signalr2-site-"));
  const page = readFileSync(join(root, "tests/fixtures/signalr2-chat/index.html"), "utf8");
  writeFileSync(join(site, "index.html"), page);
  for (const transport of ["longPolling", "serverSentEvents"]) {
    const forced = page.replace("$.connection.hub.start()", `$.connection.hub.start({ transport: '${transport}' })`);
    assert.notEqual(forced, page);
    writeFileSync(join(site, `${transport}.html`), forced);
  }
  mkdirSync(join(site, "Scripts"));
  copyFileSync(join(root, "node_modules/jquery/dist/jquery.min.js"), join(site, "Scripts/jquery-3.7.1.min.js"));
  copyFileSync(join(root, "node_modules/signalr/jquery.signalR.min.js"), join(site, "Scripts/jquery.signalR-2.4.3.min.js"));
  return site;
}

/** Opens the page on a host, answers its prompt with `name`, and waits until it is connected. */
async function openChat(browser, host, file, name) {
  const page = await browser.newPage();
  page.on("dialog", (dialog) => dialog.accept(name));
  await page.goto(`${host.url}/${file}`);
  // 1 = $.signalR.connectionState.connected; the click handler is bound once start is done.
  await page.waitForFunction(() => window.$ && $.connection.hub.state === 1, null, { timeout: 15_000 });
  return page;
}

async function type(page, text) {
  await page.fill("#message", text);
  await page.click("#sendmessage");
}

function seen(page, text) {
  return page.locator("#discussion li", { hasText: text }).waitFor({ timeout: 15_000 });
}

describe("the SignalR 2 tutorial page on two hosts sharing Redis, with a Core client on a third", () => {
  let redis;
  let site;
  let hosts = [];
  let browser;

  before(async () => {
    redis = await startRedis();
    site = makeSite();
    hosts = await Promise.all([0, 1, 2].map(() => startHost({ hubs: ["chat"], args: ["--redis", redis.url, "--static", site] })));
    browser = await launchChromium();
    mkdirSync(artifacts, { recursive: true });
  });
  after(async () => {
    await browser?.close();
    await Promise.all(hosts.map((h) => h.stop()));
    await redis?.stop();
    if (site) rmSync(site, { recursive: true, force: true });
  });

  // Each page transport meets a Core client of another transport and protocol.
  for (const [file, expected, coreDialect] of [
    ["", "webSockets", { transport: "WebSockets", protocol: "json" }],
    ["longPolling.html", "longPolling", { transport: "LongPolling", protocol: "messagepack" }],
    ["serverSentEvents.html", "serverSentEvents", { transport: "ServerSentEvents", protocol: "json" }],
  ]) {
    it(`${expected}: a message typed on one page appears on the other, and a Core client (${coreDialect.protocol} over ${coreDialect.transport}) on host C takes part`, async () => {
      const [pageA, pageB] = await Promise.all([
        openChat(browser, hosts[0], file, `Ana (${expected})`),
        openChat(browser, hosts[1], file, `Ben (${expected})`),
      ]);
      for (const page of [pageA, pageB]) {
        assert.equal(await page.evaluate(() => $.connection.hub.transport.name), expected);
      }
      const core = await connectOver(`${hosts[2].url}/chat`, coreDialect);
      const coreSaw = [];
      core.on("broadcastMessage", (name, message) => coreSaw.push(`${name}: ${message}`));
      try {
        await type(pageA, `hello from host A over ${expected}`);
        await seen(pageB, `hello from host A over ${expected}`);
        await type(pageB, `hi Ana, host B here (${expected})`);
        await seen(pageA, `hi Ana, host B here (${expected})`);

        await core.invoke("Send", "Cora (Core, host C)", `Core says hi (${expected})`);
        await seen(pageA, `Core says hi (${expected})`);
        await seen(pageB, `Core says hi (${expected})`);
        // The Core client's own copy comes after the pages' messages: it saw them too.
        await waitFor(() => coreSaw.includes(`Cora (Core, host C): Core says hi (${expected})`));
        assert.deepEqual(coreSaw, [
          `Ana (${expected}): hello from host A over ${expected}`,
          `Ben (${expected}): hi Ana, host B here (${expected})`,
          `Cora (Core, host C): Core says hi (${expected})`,
        ]);
        const onA = await pageA.locator("#discussion li").allTextContents();
        assert.deepEqual(onA, [
          `Ana (${expected}):\u00a0\u00a0hello from host A over ${expected}`,
          `Ben (${expected}):\u00a0\u00a0hi Ana, host B here (${expected})`,
          `Cora (Core, host C):\u00a0\u00a0Core says hi (${expected})`,
        ]);
        await pageA.screenshot({ path: join(artifacts, `signalr2-${expected}-host-a.png`) });
        await pageB.screenshot({ path: join(artifacts, `signalr2-${expected}-host-b.png`) });
      } finally {
        await core.stop();
        await pageA.close();
        await pageB.close();
      }
    });
  }

  it("a page whose WebSocket drops while messages flow reconnects and misses nothing", async () => {
    const page = await openChat(browser, hosts[0], "", "Dee");
    await page.evaluate(() => {
      window.reconnects = 0;
      $.connection.hub.reconnected(() => window.reconnects++);
    });
    const core = await connectOver(`${hosts[1].url}/chat`);
    try {
      const total = 60;
      for (let i = 0; i < total; i++) {
        await core.invoke("Send", "pump", `message ${i}`);
        if (i === 15) {
          // The socket goes away under the client, as a network drop would take it.
          await page.evaluate(() => $.connection.hub.socket.close());
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      await page.waitForFunction(() => window.reconnects >= 1, null, { timeout: 15_000 });
      // The sentinel, sent after everything else.
      await core.invoke("Send", "pump", "done");
      await seen(page, "done");
      const items = (await page.locator("#discussion li").allTextContents()).map((t) => t.replace("pump:\u00a0\u00a0", ""));
      assert.deepEqual(items, [...Array.from({ length: total }, (_, i) => `message ${i}`), "done"]);
      assert.equal(await page.evaluate(() => $.connection.hub.transport.name), "webSockets");
    } finally {
      await core.stop();
      await page.close();
    }
  });

  it("the hub-less style works too: $.hubConnection() and createHubProxy('chatHub')", async () => {
    const page = await browser.newPage();
    try {
      page.on("dialog", (dialog) => dialog.accept("Hal"));
      await page.goto(`${hosts[0].url}/`);
      const result = await page.evaluate(
        () =>
          new Promise((res, rej) => {
            const connection = $.hubConnection();
            const proxy = connection.createHubProxy("chatHub");
            proxy.on("broadcastMessage", (name, message) => {
              if (message === "proxy-less") res({ name, message, id: connection.id });
            });
            connection
              .start({ transport: "longPolling" })
              .done(() => proxy.invoke("Echo", "ping").done((echo) => {
                if (echo !== "ping") rej(new Error(`echo: ${echo}`));
                proxy.invoke("Send", "Hal", "proxy-less");
              }))
              .fail(rej);
          }),
      );
      assert.equal(result.message, "proxy-less");
      assert.equal(result.name, "Hal");
    } finally {
      await page.close();
    }
  });
});

describe("the SignalR 2 tutorial page behind a round-robin nginx, hosts with --public-url", () => {
  let redis;
  let site;
  let ports = [];
  let hosts = [];
  let nginx;
  let browser;

  before(async () => {
    redis = await startRedis();
    site = makeSite();
    ports = [await freePort(), await freePort()];
    hosts = await Promise.all(
      ports.map((port) =>
        startHost({
          hubs: ["chat"],
          args: ["--redis", redis.url, "--static", site, "--listen", `127.0.0.1:${port}`, "--public-url", `http://127.0.0.1:${port}`],
        }),
      ),
    );
    await Promise.all(hosts.map((h) => waitReady(h)));
    nginx = await startNginx(hosts.map((h) => h.address));
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await nginx?.stop();
    await Promise.all(hosts.map((h) => h.stop()));
    await redis?.stop();
    if (site) rmSync(site, { recursive: true, force: true });
  });

  it("negotiate through nginx sends each page to one host (RedirectUrl); long polling works without sticky sessions", async () => {
    const redirect = await (await fetch(`${nginx.url}/signalr/negotiate?clientProtocol=2.1&connectionData=%5B%5D`)).json();
    assert.equal(redirect.ProtocolVersion, "2.0");
    assert.ok(ports.some((p) => redirect.RedirectUrl === `http://127.0.0.1:${p}/signalr`), JSON.stringify(redirect));
    const direct = await (await fetch(`${hosts[0].url}/signalr/negotiate?clientProtocol=2.1&connectionData=%5B%5D`)).json();
    assert.equal(direct.RedirectUrl, undefined);
    assert.equal(direct.Url, "/signalr");

    const pages = [];
    try {
      // Four pages through nginx, two forcing long polling (each of its requests would otherwise
      // land on either host).
      for (const [i, file] of ["longPolling.html", "longPolling.html", "", ""].entries()) {
        pages.push(await openChat(browser, nginx, file, `page ${i}`));
      }
      const used = await Promise.all(pages.map((p) => p.evaluate(() => $.connection.hub.url)));
      for (const url of used) assert.ok(ports.some((p) => url === `http://127.0.0.1:${p}/signalr`), url);
      for (const [i, page] of pages.entries()) await type(page, `from page ${i}`);
      for (const page of pages) {
        for (let i = 0; i < pages.length; i++) await seen(page, `from page ${i}`);
      }
      // Each message exactly once on every page.
      for (const page of pages) {
        const items = await page.locator("#discussion li").allTextContents();
        assert.equal(items.length, pages.length, JSON.stringify(items));
      }
    } finally {
      await Promise.all(pages.map((p) => p.close()));
    }
  });
});

async function waitFor(check, timeoutMs = 10_000) {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}
