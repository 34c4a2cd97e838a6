// Node `ws` echo server: the comparison point for wsgate's echo benchmark.
// Usage: node server.js [PORT] [HOST]   (default 127.0.0.1:9002)
// Like bare-echo, it answers every text or binary message with the same
// message; ws itself answers pings and closes. GET /healthz returns 200.
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 9002);
const host = process.argv[3] || '127.0.0.1';

const server = http.createServer((req, res) => {
  res.writeHead(req.url === '/healthz' ? 200 : 404, { 'content-type': 'text/plain' });
  res.end(req.url === '/healthz' ? 'ok\n' : 'not found\n');
});
const wss = new WebSocketServer({ server, perMessageDeflate: false, clientTracking: false });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
server.listen(port, host, () => console.error(`node ws echo listening on ${host}:${port}`));
process.on('SIGTERM', () => process.exit(0));
