// fetch() from async hooks against the FakeHost: answers from `http` or
// `httpHandler` in memory, no network; and the drivers wait for async hooks.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';

import { FakeHost, host, log, OpenDecision, toListener } from '../testing.mjs';

/** What auth-chat does in onOpen: check the token over HTTP. */
const auth = toListener({
  async onOpen(conn, req) {
    let res;
    try {
      res = await fetch(`https://auth.example/check?token=${req.queryParam('token') ?? ''}`, {
        headers: { accept: 'application/json' },
      });
    } catch (e) {
      log('warn', `auth unavailable: ${e.message}`);
      return OpenDecision.reject(503, 'auth unavailable');
    }
    if (res.status !== 200) return OpenDecision.reject(401, 'bad token');
    const { user } = await res.json();
    host.setAttribute(conn, 'user', user);
    return OpenDecision.greet(`hello ${user}`);
  },
});

describe('fetch from a hook', () => {
  test('an async onOpen checks a token over HTTP', async () => {
    const h = new FakeHost({
      http: {
        'https://auth.example/check?token=good': { user: 'ann' },
        'https://auth.example/check?token=bad': { status: 403, body: 'no' },
      },
    });
    const pending = h.open(auth, '/ws/chat?token=good');
    assert.equal(typeof pending.then, 'function', 'an async hook makes open() a Promise');
    const ann = await pending;
    assert.deepEqual(ann.texts(), ['hello ann']);
    assert.equal(h.getAttribute(ann.id, 'user'), 'ann');
    assert.equal((await h.open(auth, '/ws/chat?token=bad')).rejection.status, 401);
    const [first] = h.httpRequests;
    assert.equal(first.url, 'https://auth.example/check?token=good');
    assert.equal(first.method, 'GET');
    assert.equal(first.headers.get('accept'), 'application/json');
  });

  test('no answer is a denial: fetch rejects, as it does when the sidecar does not grant the host', async () => {
    const h = new FakeHost();
    const refused = await h.open(auth, '/ws/chat?token=t');
    assert.equal(refused.rejection.status, 503);
    assert.equal(h.logs.at(-1).msg, 'auth unavailable: NetworkError when attempting to fetch resource');
    const probe = toListener({
      async onOpen() {
        try {
          await fetch('https://auth.example/x');
        } catch (e) {
          return OpenDecision.reject(503, String(e.cause));
        }
      },
    });
    assert.match((await h.open(probe, '/ws/y')).rejection.reason, /^GET https:\/\/auth\.example\/x: denied/);
    assert.equal(h.connectionCount(), 0);
  });

  test('answers: strings, JSON, records, Responses, Errors, functions; METHOD URL wins', async () => {
    const seen = [];
    const l = toListener({
      async onMessage(conn, msg) {
        const [method, url, body] = msg.val.split(' ');
        try {
          const res = await fetch(url, { method, body, headers: body ? { 'content-type': 'text/plain' } : {} });
          seen.push([res.status, res.headers.get('content-type'), await res.text()]);
        } catch (e) {
          seen.push(['error', `${e.name}: ${e.message} (${e.cause?.message})`]);
        }
      },
    });
    const h = new FakeHost({
      http: new Map([
        ['http://a.example/text', 'plain'],
        ['http://a.example/json', [1, 2]],
        ['http://a.example/made', { status: 201, headers: { 'content-type': 'x/y' }, body: 'made' }],
        ['http://a.example/resp', new Response('r', { status: 202 })],
        ['http://a.example/down', new TypeError('connection refused')],
        ['POST http://a.example/echo', async (req) => `got ${await req.text()}`],
        ['http://a.example/echo', 'not a POST'],
      ]),
    });
    const conn = h.open(l, '/ws/x');
    for (const line of ['GET http://a.example/text', 'GET http://a.example/json', 'GET http://a.example/made',
      'GET http://a.example/resp', 'GET http://a.example/resp', 'GET http://a.example/down',
      'POST http://a.example/echo hi', 'GET http://a.example/echo']) {
      await conn.sendText(line);
    }
    assert.deepEqual(seen, [
      [200, 'text/plain;charset=UTF-8', 'plain'],
      [200, 'application/json', '[1,2]'],
      [201, 'x/y', 'made'],
      [202, 'text/plain;charset=UTF-8', 'r'],
      [202, 'text/plain;charset=UTF-8', 'r'], // a Response answers every time
      ['error', 'TypeError: NetworkError when attempting to fetch resource (connection refused)'],
      [200, 'text/plain;charset=UTF-8', 'got hi'],
      [200, 'text/plain;charset=UTF-8', 'not a POST'],
    ]);
    assert.equal(h.httpRequests.length, 8);
    assert.equal(await h.httpRequests[6].text(), 'hi');
  });

  test('a handler answers what the map does not; allowedHosts denies other hosts', async () => {
    const h = new FakeHost({
      allowedHosts: ['auth.example'],
      http: { 'https://evil.example/check?token=good': { user: 'mallory' } },
      httpHandler: (req) => (new URL(req.url).searchParams.get('token') === 'good' ? { user: 'bob' } : undefined),
    });
    assert.deepEqual((await h.open(auth, '/ws/chat?token=good')).texts(), ['hello bob']);
    assert.equal((await h.open(auth, '/ws/chat?token=other')).rejection.status, 503);
    const evil = toListener({ onOpen: async () => OpenDecision.greet(await (await fetch('https://evil.example/check?token=good')).text()) });
    await assert.rejects(async () => h.open(evil, '/ws/x'), (e) => /denied/.test(e.cause));
  });

  test('outside hooks, fetch is Node\'s own', async () => {
    new FakeHost();
    const server = createServer((req, res) => res.end('real'));
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const res = await fetch(`http://127.0.0.1:${server.address().port}/`);
      assert.equal(await res.text(), 'real');
    } finally {
      server.close();
    }
  });
});

describe('async hooks', () => {
  test('every driver waits for an async hook, and a rejection reaches the test', async () => {
    const order = [];
    const tick = () => new Promise((resolve) => setTimeout(resolve, 1));
    const h = new FakeHost();
    const l = toListener({
      async onFirstOpen(route) { await tick(); order.push(`first ${route}`); },
      async onOpen() { await tick(); order.push('open'); },
      async onMessage(conn, msg) { await tick(); return msg; },
      async onClose(conn, code) { await tick(); order.push(`close ${code}`); },
      async onLastClose() { await tick(); order.push('last'); },
      async onPush() { await tick(); order.push('push'); },
      async onTimer(id) { await tick(); order.push(`timer ${id}`); host.stateIncrement('ticks', 1n); },
    });
    const conn = await h.open(l, '/ws/x');
    assert.deepEqual(conn.decision, OpenDecision.accept());
    assert.deepEqual(await conn.sendText('hi'), { tag: 'text', val: 'hi' });
    await h.push(l, 'p');
    h.setTimer(10, true);
    assert.deepEqual(await h.advanceTime(25), [1n, 1n]);
    assert.deepEqual(await h.fireTimers(), [1n]);
    await conn.close(4000);
    assert.deepEqual(order, ['first /ws/x', 'open', 'push', 'timer 1', 'timer 1', 'timer 1', 'close 4000', 'last']);
    assert.equal(new TextDecoder().decode(h.stateGet('ticks')), '3');
    const failing = toListener({ async onOpen() { await tick(); throw new RangeError('late boom'); } });
    await assert.rejects(async () => h.open(failing, '/ws/y'), RangeError);
    assert.equal(h.connectionCount(), 0, 'a failed async open leaves nothing registered');
  });

  test('host calls after an await reach the hook\'s own FakeHost', async () => {
    const one = new FakeHost();
    const l = toListener({
      async onOpen(conn) {
        await new Promise((resolve) => setTimeout(resolve, 5));
        host.setAttribute(conn, 'where', 'one');
      },
    });
    const pending = one.open(l, '/ws/x');
    const two = new FakeHost(); // the newest host, while one's hook waits
    const conn = await pending;
    assert.equal(one.getAttribute(conn.id, 'where'), 'one');
    assert.equal(two.connectionCount(), 0);
  });
});
