// Unit tests of server/assets/demo/wsgate-client.js, run in Node against a small
// in-process `ws` server (the library takes the WebSocket constructor as an option).
//
//   node --test client.test.mjs

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { WebSocketServer, WebSocket } from 'ws';
import { WsgateClient, toWebSocketUrl, backoffDelay } from '../../server/assets/demo/wsgate-client.js';

const servers = [];
after(() => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))));

/** An HTTP+WS server; `onConnection(ws, req)` decides what happens; `/healthz` is 200. */
async function wsServer({ onConnection = () => {}, reject = () => null } = {}) {
  const httpServer = http.createServer((req, res) => res.writeHead(req.url === '/healthz' ? 200 : 404).end());
  const wss = new WebSocketServer({ noServer: true });
  const state = { connections: 0, upgrades: 0 };
  httpServer.on('upgrade', (req, socket, head) => {
    state.upgrades++;
    const status = reject(req);
    if (status) {
      socket.end(`HTTP/1.1 ${status} Refused\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      state.connections++;
      onConnection(ws, req);
    });
  });
  await new Promise((r) => httpServer.listen(0, '127.0.0.1', r));
  httpServer.closeAllConnections ??= () => {};
  servers.push({ close: (cb) => { for (const c of wss.clients) c.terminate(); httpServer.closeAllConnections(); httpServer.close(() => cb()); } });
  return { url: `ws://127.0.0.1:${httpServer.address().port}`, state, wss };
}

/** Resolves with the arguments of the next `type` event. */
const next = (client, type) => new Promise((resolve) => {
  const off = client.on(type, (...args) => { off(); resolve(args); });
});

const fast = { WebSocket, minDelay: 20, maxDelay: 80, jitter: 0 };

test('toWebSocketUrl resolves paths and http(s) URLs', () => {
  assert.equal(toWebSocketUrl('/ws/chat/a?username=x', 'http://h:8080/page'), 'ws://h:8080/ws/chat/a?username=x');
  assert.equal(toWebSocketUrl('/ws/echo', 'https://h/'), 'wss://h/ws/echo');
  assert.equal(toWebSocketUrl('wss://other/ws#frag'), 'wss://other/ws');
  assert.throws(() => toWebSocketUrl('ftp://h/x'), TypeError);
});

test('backoffDelay grows exponentially up to the cap', () => {
  const o = { minDelay: 500, maxDelay: 30_000, factor: 2 };
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffDelay(n, o)), [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
});

test('JSON messages are parsed and sent; plain text passes through', async () => {
  const { url } = await wsServer({
    onConnection: (ws) => {
      ws.send('{"from":"<server>","message":"hi","channel":"c","timestamp":1}');
      ws.send('plain text');
      ws.on('message', (data) => ws.send(`echo:${data}`));
    },
  });
  const client = new WsgateClient(`${url}/ws/chat/c`, fast);
  const got = [];
  client.on('message', (d) => got.push(d));
  const opened = next(client, 'open');
  client.connect();
  await opened;
  assert.equal(client.state, 'open');
  assert.equal(client.sendJson({ a: 1 }), true);
  while (got.length < 3) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(got, [{ from: '<server>', message: 'hi', channel: 'c', timestamp: 1 }, 'plain text', 'echo:{"a":1}']);
  client.close();
  assert.equal(client.state, 'closed');
  assert.equal(client.send('late'), false);
});

test('reconnects with backoff after the server drops the connection', async () => {
  const { url, state } = await wsServer({
    onConnection: (ws) => { if (state.connections < 3) ws.close(1001, 'going away'); },
  });
  const client = new WsgateClient(url, fast);
  const closes = [];
  const retries = [];
  client.on('close', (info) => closes.push(info));
  client.on('reconnecting', (info) => retries.push(info));
  client.connect();
  while (state.connections < 3 || client.state !== 'open') await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(closes.map((c) => [c.code, c.reason, c.opened, c.willReconnect]), [
    [1001, 'going away', true, true],
    [1001, 'going away', true, true],
  ]);
  // The attempt counter resets on every successful open, so each retry is the first.
  assert.deepEqual(retries.map((r) => [r.attempt, r.delay]), [[1, 20], [1, 20]]);
  client.close();
});

test('a refused handshake reports opened:false and backs off exponentially', async () => {
  const { url, state } = await wsServer({ reject: () => 403 });
  const client = new WsgateClient(url, { ...fast, maxRetries: 3 });
  const closes = [];
  const retries = [];
  client.on('close', (info) => closes.push(info));
  client.on('reconnecting', (info) => retries.push(info));
  client.on('error', () => {});
  const done = new Promise((resolve) => client.on('state', (s) => s === 'closed' && resolve()));
  client.connect();
  await done;
  assert.equal(state.upgrades, 4, 'first try + 3 retries');
  assert.deepEqual(retries.map((r) => r.delay), [20, 40, 80]);
  assert.ok(closes.every((c) => c.opened === false && c.code === 1006));
  assert.equal(closes.at(-1).willReconnect, false);
});

test('shouldReconnect can stop retrying after probing the server', async () => {
  const { url, state } = await wsServer({ reject: () => 403 });
  const client = new WsgateClient(url, {
    ...fast,
    shouldReconnect: async ({ opened }) => opened || !(await client.probe('/healthz')),
  });
  client.on('error', () => {});
  const [info] = await (client.connect(), next(client, 'close'));
  assert.equal(info.opened, false);
  assert.equal(info.willReconnect, false, 'the server answers /healthz, so it refused us: stop');
  assert.equal(client.state, 'closed');
  assert.equal(state.upgrades, 1);
});

test('close() is final: no reconnect, one close event', async () => {
  let serverSawClose;
  const closed = new Promise((r) => { serverSawClose = r; });
  const { url, state } = await wsServer({ onConnection: (ws) => ws.on('close', (code) => serverSawClose(code)) });
  const client = new WsgateClient(url, fast);
  const closes = [];
  client.on('close', (i) => closes.push(i));
  await (client.connect(), next(client, 'open'));
  client.close(1000, 'bye');
  assert.equal(await closed, 1000);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(state.connections, 1);
  assert.equal(closes.length, 1);
  assert.equal(closes[0].byClient, true);
  assert.equal(closes[0].willReconnect, false);
});

test('unknown events are rejected', () => {
  const client = new WsgateClient('ws://127.0.0.1:9/', fast);
  assert.throws(() => client.on('nope', () => {}), TypeError);
});
