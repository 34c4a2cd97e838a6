// Unit tests of server/assets/demo/wsgate-client.js, run in Node against a small
// in-process `ws` server (the library takes the WebSocket constructor as an option).
//
//   node --test client.test.mjs

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { WebSocketServer, WebSocket } from 'ws';
import { WsgateClient, toWebSocketUrl, backoffDelay, parsePosition, withSince } from '../../server/assets/demo/wsgate-client.js';

const servers = [];
const clients = []; // closed at the end even when a test fails half-way
after(() => {
  for (const c of clients) c.close();
  return Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

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

// ---------------------------------------------------------------- resuming

/** A chat message at position `pos` (as the chat examples send them). */
const line = (pos, message = `m${pos}`) => JSON.stringify({ from: 'ann', message, channel: 'c', timestamp: 1, pos });
const notice = (recovered, latest) => JSON.stringify({ type: 'recovery', recovered, latest });

/**
 * A server that plays `scripts[n]` to the n-th connection (0-based): each is a list of
 * frames to send, or 'close' to close with 1012. Records each handshake's URL.
 */
async function scripted(scripts) {
  const urls = [];
  const srv = await wsServer({
    onConnection: (ws, req) => {
      urls.push(req.url);
      for (const step of scripts[urls.length - 1] ?? []) {
        if (step === 'close') ws.close(1012, 'restart');
        else ws.send(step);
      }
    },
  });
  return { ...srv, urls };
}

/** Records every message, reset and recovered event, in order. */
function recorder(client) {
  clients.push(client);
  const log = [];
  client.on('message', (d) => log.push(typeof d === 'object' ? `msg ${d.pos ?? d.message ?? JSON.stringify(d)}` : `msg ${d}`));
  client.on('reset', (r) => log.push(`reset ${r.reason} ${r.latest} after ${r.previous}`));
  client.on('recovered', (r) => log.push(`recovered ${r.latest} ${r.replayed}`));
  return log;
}

async function until(cond, what, ms = 3000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('parsePosition takes the last colon; withSince adds or replaces since only', () => {
  assert.deepEqual(parsePosition('0123abcd:42'), { epoch: '0123abcd', offset: 42n });
  assert.deepEqual(parsePosition('a:b:7'), { epoch: 'a:b', offset: 7n });
  assert.deepEqual(parsePosition('e:18446744073709551615'), { epoch: 'e', offset: 18446744073709551615n });
  for (const bad of [':1', 'e:', 'e', 'e:-1', 'e:1.5', 'e: 1', 'e:18446744073709551616', 7, null]) {
    assert.equal(parsePosition(bad), null, `${bad} is not a position`);
  }
  assert.equal(withSince('ws://h/ws/chat/c?username=a%20b', 'e:5'), 'ws://h/ws/chat/c?username=a%20b&since=e:5');
  assert.equal(withSince('ws://h/ws/chat/c?since=old:1&username=ann&since=x:2', 'e:5'), 'ws://h/ws/chat/c?username=ann&since=e:5');
  assert.equal(withSince('ws://h/ws', 'e:5'), 'ws://h/ws?since=e:5');
});

test('a reconnect resumes with since=the last position; replayed duplicates are dropped', async () => {
  const { url, urls } = await scripted([
    [line('e:1'), line('e:2'), 'close'],
    // The replay after since=e:2 repeats e:2 (a plugin may overlap), then the gap and the notice.
    [line('e:2'), line('e:3'), line('e:4'), notice(true, 'e:4'), line('e:5')],
  ]);
  const client = new WsgateClient(`${url}/ws/chat/c?username=ann&since=stale:9`, fast);
  const log = recorder(client);
  const opens = [];
  client.on('open', (o) => opens.push(o));
  client.connect();
  await until(() => log.length === 6, 'six events');
  assert.deepEqual(log, ['msg e:1', 'msg e:2', 'msg e:3', 'msg e:4', 'recovered e:4 2', 'msg e:5']);
  // The first connect had no position yet: the application's own since is sent as given.
  assert.deepEqual(urls, ['/ws/chat/c?username=ann&since=stale:9', '/ws/chat/c?username=ann&since=e:2']);
  assert.deepEqual(opens.map((o) => o.since), [null, 'e:2']);
  assert.equal(client.position, 'e:5');
  client.close();
});

test('duplicates of the same epoch are dropped, messages without a position pass', async () => {
  const { url } = await scripted([[
    line('e:1'), line('e:2'), line('e:2'), line('e:1'),
    JSON.stringify({ from: 'bob', message: 'psst', to: 'ann', private: true }), // a whisper: no pos
    JSON.stringify({ message: 'odd', pos: 'not a position' }),
    'plain text',
    line('e:3'),
  ]]);
  const client = new WsgateClient(url, fast);
  const log = recorder(client);
  client.connect();
  await until(() => log.length === 6, 'six messages');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(log, ['msg e:1', 'msg e:2', 'msg psst', 'msg not a position', 'msg plain text', 'msg e:3']);
  assert.equal(client.position, 'e:3');
  client.close();
});

test('a gap drops the message and reconnects at once with since=the last one', async () => {
  const { url, urls } = await scripted([
    [line('e:1'), line('e:2'), line('e:4'), line('e:5')],
    [line('e:3'), line('e:4'), line('e:5'), notice(true, 'e:5')],
  ]);
  // A backoff this long would time the test out: the gap reconnect must not wait.
  const client = new WsgateClient(url, { ...fast, minDelay: 60_000, maxDelay: 60_000 });
  const log = recorder(client);
  const closes = [];
  client.on('close', (c) => closes.push(c));
  client.on('reconnecting', () => assert.fail('a gap reconnects without a backoff'));
  client.connect();
  await until(() => log.length === 6, 'six events');
  assert.deepEqual(log, ['msg e:1', 'msg e:2', 'msg e:3', 'msg e:4', 'msg e:5', 'recovered e:5 3']);
  assert.deepEqual(urls, ['/', '/?since=e:2']);
  assert.deepEqual(closes.map((c) => [c.code, c.reason, c.byClient, c.willReconnect]), [[1000, 'gap', true, true]]);
  assert.equal(client.state, 'open');
  client.close();
});

test('a gap that comes back without progress waits for a backoff', async () => {
  const { url, urls } = await scripted([
    [line('e:1'), line('e:3')],
    [notice(true, 'e:1'), line('e:3')], // the server cannot fill it
    [notice(true, 'e:1'), line('e:2')],
  ]);
  const client = new WsgateClient(url, fast);
  const log = recorder(client);
  const retries = [];
  client.on('reconnecting', (r) => retries.push([r.attempt, r.delay]));
  client.connect();
  await until(() => log.includes('msg e:2'), 'e:2');
  assert.deepEqual(log, ['msg e:1', 'recovered e:1 0', 'recovered e:1 0', 'msg e:2']);
  assert.deepEqual(urls, ['/', '/?since=e:1', '/?since=e:1']);
  assert.deepEqual(retries, [[1, 20]], 'the first gap reconnect is immediate, the second backs off');
  client.close();
});

test('a live message of another epoch emits reset and is delivered', async () => {
  const { url, urls } = await scripted([
    [line('e:1'), line('e:2'), line('f:7'), line('f:8'), line('e:3'), 'close'],
    [],
  ]);
  const client = new WsgateClient(url, fast);
  const log = recorder(client);
  let positionAtReset;
  client.on('reset', () => { positionAtReset = client.position; });
  client.connect();
  await until(() => urls.length === 2, 'the reconnect');
  assert.deepEqual(log, ['msg e:1', 'msg e:2', 'reset epoch f:7 after e:2', 'msg f:7', 'msg f:8', 'reset epoch e:3 after f:8', 'msg e:3']);
  assert.equal(positionAtReset, 'e:3');
  assert.equal(urls[1], '/?since=e:3');
  client.close();
});

test('a refused handshake (503: history unavailable) keeps the position: the retry resumes with the same since', async () => {
  const urls = [];
  let refusals = 0;
  const { url } = await wsServer({
    reject: (req) => {
      if (!req.url.includes('since=') || refusals >= 2) return null;
      refusals++;
      urls.push(req.url);
      return 503;
    },
    onConnection: (ws, req) => {
      urls.push(req.url);
      if (urls.length === 1) {
        ws.send(line('e:1'));
        ws.send(line('e:2'));
        ws.close(1012, 'restart');
      } else {
        ws.send(line('e:3'));
        ws.send(notice(true, 'e:3'));
      }
    },
  });
  const client = new WsgateClient(url, fast);
  const log = recorder(client);
  client.connect();
  await until(() => log.includes('recovered e:3 1'), 'the recovery');
  assert.deepEqual(urls, ['/', '/?since=e:2', '/?since=e:2', '/?since=e:2']);
  assert.deepEqual(log, ['msg e:1', 'msg e:2', 'msg e:3', 'recovered e:3 1']);
  assert.equal(client.position, 'e:3');
});

test('recovered:false emits reset, forgets the position, and the kept history follows', async () => {
  const { url, urls } = await scripted([
    [line('e:1'), line('e:2'), 'close'],
    // Away too long: the notice first, then the history from its oldest kept message.
    [notice(false, 'e:9'), line('e:6'), line('e:7'), line('e:8'), line('e:9'), line('e:10'), 'close'],
    [notice(false, null), line('g:1')], // the channel no longer recorded, then a new epoch
  ]);
  const client = new WsgateClient(url, fast);
  const log = recorder(client);
  const notMessages = [];
  client.on('message', (d) => { if (d.type === 'recovery') notMessages.push(d); });
  let positionAtReset = 'unset';
  client.on('reset', () => { if (positionAtReset === 'unset') positionAtReset = client.position; });
  client.connect();
  await until(() => log.includes('msg g:1'), 'g:1');
  assert.deepEqual(log, [
    'msg e:1', 'msg e:2',
    'reset not-recovered e:9 after e:2', 'msg e:6', 'msg e:7', 'msg e:8', 'msg e:9', 'msg e:10',
    'reset not-recovered null after e:10', 'msg g:1',
  ]);
  assert.equal(positionAtReset, null);
  assert.deepEqual(notMessages, [], 'recovery notices are not messages');
  assert.deepEqual(urls, ['/', '/?since=e:2', '/?since=e:10']);
  client.close();
});

test('the position survives close() and connect()', async () => {
  const { url, urls } = await scripted([[line('e:1'), line('e:2')], [line('e:3')]]);
  const client = new WsgateClient(url, fast);
  const log = recorder(client);
  client.connect();
  await until(() => log.length === 2, 'two messages');
  client.close();
  client.connect();
  await until(() => log.length === 3, 'the third');
  assert.deepEqual(urls, ['/', '/?since=e:2']);
  client.close();
});

test('resume:false delivers everything and sends no since', async () => {
  const { url, urls } = await scripted([
    [line('e:1'), line('e:1'), line('e:5'), 'close'],
    [notice(true, 'e:5')],
  ]);
  const client = new WsgateClient(url, { ...fast, resume: false });
  const log = recorder(client);
  client.connect();
  await until(() => log.length === 4, 'four messages');
  assert.deepEqual(log, ['msg e:1', 'msg e:1', 'msg e:5', `msg ${notice(true, 'e:5')}`]);
  assert.deepEqual(urls, ['/', '/']);
  assert.equal(client.position, null);
  client.close();
});
