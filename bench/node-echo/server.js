// Node `ws` echo server: the comparison point for wsgate's echo benchmark.
// Usage: node server.js [PORT] [HOST] [--broadcast]   (default 127.0.0.1:9002)
// Like bare-echo, it answers every text or binary message with the same
// message; ws itself answers pings and closes. GET /healthz returns 200.
// --broadcast: like `bare-echo --broadcast`, every text or binary message goes
// to every connection, the sender included (a loop over the server's clients,
// as a ws user writes a fan-out).
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const args = process.argv.slice(2);
const broadcast = args.includes('--broadcast');
const pos = args.filter((a) => !a.startsWith('--'));
const port = Number(pos[0] || 9002);
const host = pos[1] || '127.0.0.1';

const server = http.createServer((req, res) => {
  res.writeHead(req.url === '/healthz' ? 200 : 404, { 'content-type': 'text/plain' });
  res.end(req.url === '/healthz' ? 'ok\n' : 'not found\n');
});
const wss = new WebSocketServer({ server, perMessageDeflate: false, clientTracking: broadcast });
wss.on('connection', (ws) => {
  if (broadcast) {
    ws.on('message', (data, isBinary) => {
      for (const c of wss.clients) c.send(data, { binary: isBinary });
    });
  } else {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  }
  ws.on('error', () => {});
});
server.listen(port, host, () =>
  console.error(`node ws ${broadcast ? 'broadcast' : 'echo'} listening on ${host}:${port}`));
process.on('SIGTERM', () => process.exit(0));
