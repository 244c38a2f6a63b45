// `hubhost describe` and `hubhost types`: a hub's methods as text, JSON and TypeScript. The
// TypeScript is compiled with `tsc` against the official client's own types, with a client that
// uses it (and one that misuses it, which must not compile).

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";

import { hubPath } from "./support/host.mjs";

const run = promisify(execFile);
const root = resolve(import.meta.dirname, "..");
const bin = process.env.HUBHOST_BIN ?? join(root, "target/debug/hubhost");

/** Runs hubhost with `args`; resolves with its output and exit code, failing or not. */
async function hubhost(...args) {
  try {
    const { stdout, stderr } = await run(bin, args);
    return { code: 0, stdout, stderr };
  } catch (error) {
    return { code: error.code, stdout: error.stdout, stderr: error.stderr };
  }
}

/** Type-checks `files` (strict) with the project's TypeScript; resolves with tsc's output. */
async function tsc(dir, files) {
  const compiler = join(root, "node_modules/typescript/bin/tsc");
  const args = ["--noEmit", "--strict", "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext"];
  try {
    await run(process.execPath, [compiler, ...args, ...files.map((f) => join(dir, f))], { cwd: root });
    return { code: 0, output: "" };
  } catch (error) {
    return { code: error.code, output: `${error.stdout}${error.stderr}` };
  }
}

describe("hubhost describe", () => {
  it("prints each method with its parameters, result and documentation", async () => {
    const { code, stdout } = await hubhost("describe", hubPath("chat"));
    assert.equal(code, 0);
    assert.match(stdout, /^hub chat \(contract 0\.2\)\n/);
    assert.match(stdout, /\n {2}Counter\(count: number, delay_ms: number\) -> stream of number\n {6}Streams the integers 0\.\.count/);
    assert.match(stdout, /\n {2}Sum\(numbers: stream of number\) -> number\n/);
    assert.match(stdout, /\n {2}Ask\(connection_id: string, question: string\) -> string\n/);
    assert.match(stdout, /\n {2}Send\(name: string, message: string\)\n/);
  });

  it("prints JSON with a JSON Schema per parameter", async () => {
    const { code, stdout } = await hubhost("describe", "--json", hubPath("features"));
    assert.equal(code, 0);
    const description = JSON.parse(stdout);
    assert.equal(description.contract, "0.2");
    const words = description.methods.find((m) => m.name === "Words");
    assert.deepEqual(words.params, [{ name: "words", schema: '{"type":"string"}', upload: true }]);
    assert.equal(words.returns, '{"type":"array","items":{"type":"string"}}');
    const counter = description.methods.find((m) => m.name === "Counter");
    assert.equal(counter.streaming, true);
    assert.equal(counter.returns, '{"type":"integer"}');
  });

  it("says when a hub was built against contract 0.1", async () => {
    const { code, stdout } = await hubhost("describe", hubPath("rogue"));
    assert.equal(code, 0);
    assert.equal(stdout, "hub rogue (contract 0.1)\n  (a hub built against contract 0.1 does not describe its methods)\n");
  });

  it("refuses a file that is not a hub, saying why", async () => {
    const dir = mkdtempSync(join(root, "target", "describe-"));
    writeFileSync(join(dir, "junk.wasm"), "not wasm");
    const { code, stderr } = await hubhost("describe", join(dir, "junk.wasm"));
    rmSync(dir, { recursive: true, force: true });
    assert.equal(code, 1);
    assert.match(stderr, /^hubhost describe: .*junk\.wasm is not a valid WebAssembly component/);
  });
});

describe("hubhost types", () => {
  let dir;
  before(() => {
    // Inside the checkout, so tsc finds @microsoft/signalr in node_modules.
    dir = mkdtempSync(join(root, "target", "types-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("writes TypeScript that compiles against the official client and types each call", async () => {
    const { code } = await hubhost("types", hubPath("chat"), "-o", join(dir, "chatServer.ts"));
    assert.equal(code, 0);
    writeFileSync(
      join(dir, "client.ts"),
      `import { HubConnectionBuilder, Subject } from "@microsoft/signalr";
import { chatServer, type ChatServer } from "./chatServer.js";
const connection = new HubConnectionBuilder().withUrl("http://localhost/chat").build();
const server: ChatServer = chatServer(connection);
export async function use(): Promise<string> {
  await server.send("ana", "hi");
  server.counter(5, 100).subscribe({ next: (n: number) => n.toFixed(), complete: () => {}, error: () => {} });
  const numbers = new Subject<number>();
  const total: Promise<number> = server.sum(numbers);
  numbers.next(1);
  numbers.complete();
  await total;
  return server.ask("id", "question?");
}
`,
    );
    const ok = await tsc(dir, ["client.ts"]);
    assert.equal(ok.code, 0, ok.output);
    writeFileSync(
      join(dir, "wrong.ts"),
      `import { HubConnectionBuilder } from "@microsoft/signalr";
import { chatServer } from "./chatServer.js";
const server = chatServer(new HubConnectionBuilder().withUrl("http://localhost/chat").build());
export const wrong = server.counter("five", 100);
`,
    );
    const wrong = await tsc(dir, ["wrong.ts"]);
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.output, /wrong\.ts\(4,\d+\): error TS2345: Argument of type 'string' is not assignable to parameter of type 'number'/);
  });

  it("refuses a 0.1 hub, which describes nothing", async () => {
    const { code, stderr } = await hubhost("types", hubPath("rogue"));
    assert.equal(code, 1);
    assert.match(stderr, /^hubhost types: hub rogue is built against contract 0\.1, which does not describe its methods; rebuild it with the current hubhost-sdk\n$/);
  });
});
