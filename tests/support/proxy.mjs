// A TCP proxy in front of hosts, so a test can cut a client's connections the way a network
// does (a reset, no WebSocket close) and hold new ones back for a while.

import net from "node:net";

/**
 * Starts a proxy on a free port that forwards each connection to the next of `upstreams`
 * (`host:port` addresses, round-robin). Returns `{ url, port, cut(), hold(), release(),
 * retarget(upstreams), close() }`:
 * - `cut()` resets every open connection, both ways;
 * - `hold()` makes new connections wait (accepted, not forwarded) until `release()`;
 * - `retarget(upstreams)` sends later connections elsewhere.
 */
export async function startProxy(upstreams) {
  let targets = [...upstreams];
  let next = 0;
  let held = null;
  const open = new Set();
  // Every socket until it closes (`open` forgets the ones a cut reset).
  const all = new Set();
  const forward = (client) => {
    const [host, port] = targets[next++ % targets.length].split(":");
    const upstream = net.connect({ host, port: Number(port) });
    upstream.setNoDelay(true);
    client.setNoDelay(true);
    for (const socket of [client, upstream]) {
      open.add(socket);
      all.add(socket);
    }
    const forget = (socket) => () => {
      open.delete(socket);
      all.delete(socket);
    };
    client.on("close", forget(client));
    upstream.on("close", forget(upstream));
    // A reset on one side resets the other, as a dead network path would look to both.
    client.on("error", () => upstream.resetAndDestroy());
    upstream.on("error", () => client.resetAndDestroy());
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
    client.pipe(upstream);
    upstream.pipe(client);
  };
  const server = net.createServer((client) => {
    if (held) {
      client.pause();
      held.push(client);
    } else {
      forward(client);
    }
  });
  await new Promise((res) => server.listen(0, "127.0.0.1", res));
  const { port } = server.address();
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    /** Resets every connection open now (later ones go through). */
    cut() {
      const sockets = [...open];
      open.clear();
      // A reset needs a connection: one still connecting is just destroyed.
      for (const socket of sockets) (socket.connecting ? socket.destroy() : socket.resetAndDestroy());
      return sockets.length / 2;
    },
    hold() {
      held ??= [];
    },
    release() {
      const waiting = held ?? [];
      held = null;
      for (const client of waiting) {
        client.resume();
        forward(client);
      }
    },
    retarget(upstreams) {
      targets = [...upstreams];
    },
    async close() {
      // Everything still open, cut or not, and connections held back: nothing outlives the proxy.
      for (const socket of all) socket.destroy();
      for (const client of held ?? []) client.destroy();
      held = null;
      await new Promise((res) => server.close(res));
    },
  };
}
