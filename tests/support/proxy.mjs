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
  const forward = (client) => {
    const [host, port] = targets[next++ % targets.length].split(":");
    const upstream = net.connect({ host, port: Number(port) });
    upstream.setNoDelay(true);
    client.setNoDelay(true);
    open.add(client);
    open.add(upstream);
    const forget = (socket) => () => open.delete(socket);
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
      for (const socket of sockets) socket.resetAndDestroy();
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
      for (const socket of open) socket.destroy();
      await new Promise((res) => server.close(res));
    },
  };
}
