// Bun (uWebSockets inside) echo and broadcast server: a comparison point for
// wsgate's benchmarks, next to bare-echo and Node `ws`.
// Usage: bun server.js [PORT] [HOST] [--broadcast]   (default 127.0.0.1:9003)
//
// Echo (default): like bare-echo and bench/node-echo, every text or binary
// message is answered with the same message on the same connection.
// --broadcast: like `bare-echo --broadcast`, every text or binary message goes
// to every connection, the sender included: each connection subscribes to one
// topic when it opens and a message is published to it with server.publish
// (uWebSockets' topic tree, as a uWS user would write a fan-out).
// Any path upgrades (the load generator's `/` and `/bench?username=u{i}`);
// a plain GET /healthz returns 200. Bun (uWS) answers pings and closes itself;
// the WebSocket options are Bun's defaults (no compression, 120 s idle timeout
// with a ping before it, 16 MiB backpressure limit).
const args = process.argv.slice(2);
const broadcast = args.includes('--broadcast');
const pos = args.filter((a) => !a.startsWith('--'));
const port = Number(pos[0] || 9003);
const hostname = pos[1] || '127.0.0.1';
const TOPIC = 'all';

const server = Bun.serve({
  hostname,
  port,
  fetch(req, server) {
    if (server.upgrade(req)) return undefined;
    const ok = new URL(req.url).pathname === '/healthz';
    return new Response(ok ? 'ok\n' : 'not found\n', { status: ok ? 200 : 404 });
  },
  websocket: {
    perMessageDeflate: false,
    open: broadcast ? (ws) => ws.subscribe(TOPIC) : undefined,
    message: broadcast
      ? (_ws, msg) => server.publish(TOPIC, msg)
      : (ws, msg) => ws.send(msg),
  },
});
console.error(`bun ${Bun.version} ${broadcast ? 'broadcast' : 'echo'} listening on ${hostname}:${server.port}`);
process.on('SIGTERM', () => process.exit(0));
