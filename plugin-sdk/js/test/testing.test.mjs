// Tests of the test harness itself (testing.mjs): the FakeHost must answer
// host calls as wsgate does, or plugin tests would pass against a host that
// does not exist. Run with scripts/test-js-sdk.sh.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  ComponentError, FakeHost, host, hostError, loadListener, Message, OpenDecision, toListener,
} from '../testing.mjs';

const text = (s) => Message.text(s);
const errorCode = (code) => (e) => e instanceof ComponentError && e.payload === code && e.message === code;

/** A listener whose hooks are `hooks`, calling the SDK's host as a plugin does. */
const listen = (hooks = {}) => toListener(hooks);

describe('loading a listener', () => {
  test('a plugin module imports the SDK as wsgate, and its host calls reach the fake host', async () => {
    // Written outside the SDK, where a plugin lives: `wsgate` resolves anyway.
    const dir = await mkdtemp(join(tmpdir(), 'wsgate-probe-'));
    try {
      await writeFile(join(dir, 'index.js'), `
        import { host, hostError, Message, OpenDecision } from 'wsgate';
        export function onOpen(conn, req) {
          return OpenDecision.greet(\`hello \${req.queryParam('name')}\`);
        }
        export function onMessage(conn, msg) {
          let error;
          try {
            host.send(12345n, Message.text('nobody'));
          } catch (e) {
            error = hostError(e);
          }
          return Message.text(JSON.stringify({ count: host.connectionCount(), error, echo: Message.asText(msg) }));
        }`);
      const probe = await loadListener(join(dir, 'index.js'));
      const h = new FakeHost();
      const conn = h.open(probe, '/ws/probe?name=ada');
      assert.deepEqual(conn.texts(), ['hello ada']);
      const reply = conn.sendText('ping');
      assert.deepEqual(JSON.parse(reply.val), { count: 1, error: 'unknown-connection', echo: 'ping' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('hooks a module does not export get the SDK defaults', async () => {
    const h = new FakeHost();
    const conn = h.open(listen(), '/ws/x');
    assert.deepEqual(conn.decision, { tag: 'accept' });
    assert.equal(conn.sendText('hi'), undefined);
    conn.close();
    h.push(listen(), 'ignored');
  });
});

describe('host calls', () => {
  test('the fake host has every host call of the WIT, and the plugin\'s host module exports each', async () => {
    const types = await readFile(new URL('../types/interfaces/wsgate-plugin-host.d.ts', import.meta.url), 'utf8');
    const wit = [...types.matchAll(/export function (\w+)\(/g)].map((m) => m[1]);
    assert.ok(wit.includes('upstreamConnect') && wit.includes('stateIncrement'), wit.join());
    assert.deepEqual(Object.keys(host), [...wit].sort(), 'the module the plugin imports');
    for (const name of wit) assert.equal(typeof FakeHost.prototype[name], 'function', name);
  });

  test('ids are bigints and lists of ids BigUint64Arrays, as in the bindings', () => {
    const h = new FakeHost();
    const a = h.open(listen(), '/ws/x');
    const b = h.open(listen(), '/ws/x');
    assert.equal(a.id, 1n);
    assert.equal(b.id, 2n);
    assert.ok(h.connections() instanceof BigUint64Array);
    assert.deepEqual([...h.connections()], [1n, 2n]);
    assert.equal(h.connectionCount(), 2);
    // jco's bindings convert u64 arguments with BigInt(), so numbers work too.
    h.send(1, text('as a number'));
    assert.deepEqual(a.texts(), ['as a number']);
  });

  test('a failed call throws what the bindings throw: the code as payload', () => {
    const h = new FakeHost();
    let caught;
    try {
      host.send(99n, text('x'));
    } catch (e) {
      caught = e;
    }
    assert.ok(caught instanceof Error);
    assert.equal(caught.payload, 'unknown-connection');
    assert.equal(caught.message, 'unknown-connection');
    assert.equal(hostError(caught), 'unknown-connection');
    assert.deepEqual(Object.keys(caught), [], 'payload is not enumerable, as in jco');
    assert.equal(h.connectionCount(), 0);
  });

  test('a connection that has ended is unknown to every call about it', () => {
    const h = new FakeHost();
    const conn = h.open(listen(), '/ws/x');
    conn.close();
    const id = conn.id;
    for (const call of [
      () => h.send(id, text('x')), () => h.close(id, 1000, ''),
      () => h.subscribe(id, 'c'), () => h.unsubscribe(id, 'c'),
      () => h.tag(id, 't'), () => h.untag(id, 't'),
      () => h.getAttribute(id, 'k'), () => h.setAttribute(id, 'k', 'v'),
    ]) {
      assert.throws(call, errorCode('unknown-connection'));
    }
  });

  test('close takes the codes and reasons the server does, else invalid-argument', () => {
    const h = new FakeHost();
    for (const code of [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999]) {
      const conn = h.open(listen(), '/ws/x');
      h.close(conn.id, code, '');
      assert.deepEqual(conn.closing, { code, reason: '' });
    }
    const conn = h.open(listen(), '/ws/x');
    for (const code of [0, 999, 1004, 1005, 1006, 1015, 2999, 5000]) {
      assert.throws(() => h.close(conn.id, code, ''), errorCode('invalid-argument'), String(code));
    }
    // The limit is 123 UTF-8 bytes, not characters: é takes two.
    assert.throws(() => h.close(conn.id, 1000, 'x'.repeat(124)), errorCode('invalid-argument'));
    assert.throws(() => h.close(conn.id, 1000, 'é'.repeat(62)), errorCode('invalid-argument'));
    // The code is checked before the connection.
    assert.throws(() => h.close(999n, 1005, ''), errorCode('invalid-argument'));
    h.close(conn.id, 4000, `${'é'.repeat(61)}x`);
    assert.deepEqual(h.closes.at(-1), { conn: conn.id, code: 4000, reason: `${'é'.repeat(61)}x` });
  });

  test('a connection the plugin closed takes nothing more and hears its own close code', () => {
    const closes = [];
    const h = new FakeHost();
    const l = listen({ onClose: (conn, code, reason) => closes.push([conn, code, reason]) });
    const a = h.open(l, '/ws/x');
    const b = h.open(l, '/ws/x');
    h.subscribe(a.id, 'room');
    h.subscribe(b.id, 'room');
    h.close(a.id, 4001, 'kicked');
    assert.throws(() => h.send(a.id, text('x')), errorCode('closed'));
    assert.throws(() => h.close(a.id, 1000, ''), errorCode('closed'));
    assert.throws(() => h.subscribe(a.id, 'other'), errorCode('closed'));
    assert.equal(h.publish('room', text('hi'), undefined), 1, 'a closing subscriber is skipped');
    assert.equal(h.broadcast(text('all'), undefined), 1);
    assert.deepEqual(a.texts(), []);
    // Data from the client after the server started closing is discarded.
    assert.equal(a.sendText('late'), undefined);
    a.close(1000, 'client says bye');
    assert.deepEqual(closes, [[a.id, 4001, 'kicked']]);
    assert.equal(h.connectionCount(), 1);
  });

  test('bad names and oversized messages are invalid-argument; broadcast reaches nobody', () => {
    const h = new FakeHost({ limits: { maxMessageSize: 10, maxNameLen: 8 } });
    const conn = h.open(listen(), '/ws/x');
    for (const call of [
      () => h.subscribe(conn.id, ''), () => h.tag(conn.id, ''), () => h.setAttribute(conn.id, '', 'v'),
      () => h.publish('', text('x'), undefined), () => h.sendToTag('', text('x'), undefined), () => h.stateSet('', undefined),
      () => h.subscribe(conn.id, 'ninechars'),
      () => h.send(conn.id, text('eleven char')), () => h.send(conn.id, Message.binary(new Uint8Array(11))),
      () => h.setTimer(9, false),
    ]) {
      assert.throws(call, errorCode('invalid-argument'));
    }
    h.send(conn.id, text('ten chars!'));
    assert.equal(h.broadcast(text('eleven char'), undefined), 0);
    assert.deepEqual(conn.texts(), ['ten chars!']);
  });

  test('per-connection, state, timer and per-call limits are limit-reached', () => {
    const h = new FakeHost({
      limits: {
        channelsPerConnection: 1, tagsPerConnection: 1, attributesPerConnection: 1, attributeBytes: 8,
        stateBytes: 64 + 4, timersPerPlugin: 1, deliveriesPerHook: 2,
      },
    });
    const conn = h.open(listen(), '/ws/x');
    h.subscribe(conn.id, 'a');
    h.subscribe(conn.id, 'a');
    assert.throws(() => h.subscribe(conn.id, 'b'), errorCode('limit-reached'));
    h.tag(conn.id, 'a');
    assert.throws(() => h.tag(conn.id, 'b'), errorCode('limit-reached'));
    h.setAttribute(conn.id, 'k', 'v');
    assert.throws(() => h.setAttribute(conn.id, 'j', 'v'), errorCode('limit-reached'));
    assert.throws(() => h.setAttribute(conn.id, 'k', 'eight by'), errorCode('limit-reached'));
    assert.throws(() => h.setAttribute(conn.id, 'k', 'nine byte'), errorCode('invalid-argument'));
    h.stateSet('k', new Uint8Array(3));
    assert.throws(() => h.stateSet('k', new Uint8Array(4)), errorCode('limit-reached'));
    h.setTimer(10, false);
    assert.throws(() => h.setTimer(10, false), errorCode('limit-reached'));

    // Each hook call may queue deliveries_per_hook messages, counted by recipients.
    const other = h.open(listen(), '/ws/x');
    const sends = [];
    h.push(listen({
      onPush() {
        for (let i = 0; i < 3; i++) {
          try {
            sends.push(host.broadcast(text(`${i}`), undefined));
          } catch (e) {
            sends.push(hostError(e));
          }
        }
        try {
          host.send(conn.id, text('x'));
        } catch (e) {
          sends.push(hostError(e));
        }
      },
    }), 'go');
    assert.deepEqual(sends, [2, 0, 0, 'limit-reached']);
    assert.deepEqual(other.texts(), ['0']);
    // The next hook call has a fresh budget.
    h.push(listen({ onPush: () => host.send(conn.id, text('again')) }), 'go');
    assert.deepEqual(conn.texts(), ['0', 'again']);
  });

  test('channels: subscribe, publish with except, subscribers, channels, unsubscribe', () => {
    const h = new FakeHost();
    const [a, b, c] = [1, 2, 3].map(() => h.open(listen(), '/ws/x'));
    h.subscribe(a.id, 'room');
    h.subscribe(b.id, 'room');
    h.subscribe(c.id, 'elsewhere');
    assert.deepEqual(h.channels(), ['room', 'elsewhere']);
    assert.deepEqual([...h.subscribers('room')], [a.id, b.id]);
    assert.ok(h.subscribers('none') instanceof BigUint64Array);
    assert.equal(h.publish('room', text('hi'), a.id), 1);
    assert.equal(h.publish('nobody-here', text('hi'), undefined), 0);
    assert.deepEqual([a.texts(), b.texts(), c.texts()], [[], ['hi'], []]);
    assert.deepEqual(h.publishes.map(({ channel, except, reached }) => [channel, except, reached]),
      [['room', a.id, 1], ['nobody-here', undefined, 0]]);
    h.unsubscribe(c.id, 'elsewhere');
    h.unsubscribe(c.id, 'never-joined');
    assert.deepEqual(h.channels(), ['room'], 'a channel without subscribers is gone');
    c.close();
    a.close();
    assert.deepEqual([...h.subscribers('room')], [b.id], 'a closed connection leaves its channels');
  });

  test('tags: tag, sendToTag with except, tagged, untag', () => {
    const h = new FakeHost();
    const [phone, laptop, other] = [1, 2, 3].map(() => h.open(listen(), '/ws/x'));
    h.tag(phone.id, 'user:42');
    h.tag(laptop.id, 'user:42');
    h.tag(other.id, 'user:7');
    assert.deepEqual([...h.tagged('user:42')], [phone.id, laptop.id]);
    assert.equal(h.sendToTag('user:42', text('to 42'), laptop.id), 1);
    assert.equal(h.sendToTag('user:0', text('nobody'), undefined), 0);
    assert.deepEqual([phone.texts(), laptop.texts(), other.texts()], [['to 42'], [], []]);
    h.untag(phone.id, 'user:42');
    assert.deepEqual([...h.tagged('user:42')], [laptop.id]);
  });

  test('broadcast reaches every connection but except, send one', () => {
    const h = new FakeHost();
    const [a, b, c] = [1, 2, 3].map(() => h.open(listen(), '/ws/x'));
    assert.equal(h.broadcast(text('all'), b.id), 2);
    h.send(c.id, Message.binary([1, 2, 3]));
    assert.deepEqual(a.received, [text('all')]);
    assert.deepEqual(b.received, []);
    assert.deepEqual(c.received, [text('all'), Message.binary([1, 2, 3])]);
  });

  test('attributes and state', () => {
    const h = new FakeHost();
    const conn = h.open(listen(), '/ws/x');
    assert.equal(h.getAttribute(conn.id, 'name'), undefined);
    h.setAttribute(conn.id, 'name', 'ada');
    assert.equal(h.getAttribute(conn.id, 'name'), 'ada');
    h.setAttribute(conn.id, 'name', undefined);
    assert.equal(h.getAttribute(conn.id, 'name'), undefined);

    const value = new Uint8Array([1, 2, 3]);
    h.stateSet('counter', value);
    value[0] = 9;
    const got = h.stateGet('counter');
    assert.ok(got instanceof Uint8Array);
    assert.deepEqual([...got], [1, 2, 3], 'the host keeps its own copy');
    got[1] = 9;
    assert.deepEqual([...h.stateGet('counter')], [1, 2, 3]);
    h.stateSet('counter', undefined);
    assert.equal(h.stateGet('counter'), undefined);
  });

  test('log lines are recorded; malformed arguments are TypeErrors, as in the bindings', () => {
    const h = new FakeHost();
    const conn = h.open(listen(), '/ws/x');
    host.log('warn', 'careful');
    assert.deepEqual(h.logs, [{ level: 'warn', msg: 'careful' }]);
    assert.throws(() => host.log('loud', 'x'), TypeError);
    assert.throws(() => h.send(conn.id, 'a bare string'), TypeError);
    assert.throws(() => h.send(conn.id, { tag: 'text', val: 42 }), TypeError);
    assert.throws(() => h.setAttribute(conn.id, 'k', 42), TypeError);
    assert.throws(() => h.stateSet('k', [1, 2]), TypeError);
  });
});

describe('timers', () => {
  test('ids are bigints, and timers fire only when the test says so', () => {
    const fired = [];
    const h = new FakeHost();
    const l = listen({ onTimer: (id) => fired.push(id) });
    h.open(l, '/ws/x');
    const once = h.setTimer(1000, false);
    const every = h.setTimer(500, true);
    assert.deepEqual([once, every], [1n, 2n]);
    assert.deepEqual(fired, []);
    assert.deepEqual(h.fireTimers(), [every, once], 'soonest first');
    assert.deepEqual(h.pendingTimers.map((t) => t.id), [every], 'a one-shot timer fires once');
    assert.equal(h.cancelTimer(once), false);
    h.fireTimers();
    assert.deepEqual(fired, [every, once, every]);
    assert.equal(h.cancelTimer(every), true);
    assert.equal(h.cancelTimer(every), false);
    assert.deepEqual(h.fireTimers(), []);
  });

  test('advanceTime fires timers as they fall due, repeating ones each period', () => {
    const fired = [];
    const h = new FakeHost();
    const l = listen({ onTimer: (id) => fired.push([id, h.now]) });
    h.push(l, 'start');
    const tick = h.setTimer(100, true);
    const once = h.setTimer(250, false);
    h.advanceTime(99);
    assert.deepEqual(fired, []);
    h.advanceTime(201);
    assert.deepEqual(fired, [[tick, 100], [tick, 200], [once, 250], [tick, 300]]);
    assert.equal(h.now, 300);
  });

  test('a hook may cancel a timer that was due in the same round', () => {
    const h = new FakeHost();
    let second;
    const fired = [];
    const l = listen({
      onTimer(id) {
        fired.push(id);
        host.cancelTimer(second);
      },
    });
    h.push(l, 'start');
    h.setTimer(10, false);
    second = h.setTimer(20, false);
    h.fireTimers();
    assert.deepEqual(fired, [1n]);
  });

  test('timers fire into the newest listener', () => {
    const h = new FakeHost();
    const seen = [];
    h.open(listen({ onTimer: () => seen.push('v1') }), '/ws/x');
    h.setTimer(10, false);
    h.open(listen({ onTimer: () => seen.push('v2') }), '/ws/x');
    h.fireTimers();
    assert.deepEqual(seen, ['v2']);
  });
});

describe('opening and closing', () => {
  test('on-first-open, the channel subscription, on-open; the greeting goes first', () => {
    const calls = [];
    const h = new FakeHost({ routes: ['/ws/room/{channel}'] });
    const l = listen({
      onFirstOpen: (route) => calls.push(['first', route]),
      onOpen(conn, req) {
        calls.push(['open', req.param('channel'), [...host.subscribers('lobby')], req.queryParam('x')]);
        host.send(conn, text('queued during on-open'));
        return OpenDecision.greet('welcome');
      },
    });
    const conn = h.open(l, '/ws/room/lobby?x=1');
    assert.deepEqual(calls, [['first', '/ws/room/{channel}'], ['open', 'lobby', [conn.id], '1']]);
    assert.deepEqual(conn.texts(), ['welcome', 'queued during on-open']);
  });

  test('the request is what on-open would get from the server', () => {
    let seen;
    const h = new FakeHost({ subprotocols: ['chat.v2', 'chat.v1'] });
    h.open(listen({ onOpen: (conn, req) => { seen = req; } }), {
      path: '/ws/files/a/b?q=1&q=2&sp=a+b',
      route: '/ws/files/{*rest}',
      query: { extra: 'yes' },
      headers: { Cookie: 'sid=abc; theme="dark"', 'Sec-WebSocket-Protocol': 'chat.v1, chat.v2' },
    });
    assert.equal(seen.path, '/ws/files/a/b');
    assert.deepEqual(seen.params, [['rest', 'a/b']]);
    assert.deepEqual(seen.query, [['q', '1'], ['q', '2'], ['sp', 'a b'], ['extra', 'yes']]);
    assert.equal(seen.header('COOKIE'), 'sid=abc; theme="dark"');
    assert.equal(seen.cookie('theme'), 'dark');
    assert.deepEqual(seen.subprotocols, ['chat.v1', 'chat.v2']);
    assert.equal(seen.protocol, 'chat.v2', "the server's order of preference");
    assert.match(seen.remoteAddr, /^127\.0\.0\.1:\d+$/);
    assert.throws(() => new FakeHost({ routes: ['/ws/a'] }).open(listen(), '/ws/b'), /404/);
  });

  test('a rejected open returns the rejection and leaves nothing registered', () => {
    const calls = [];
    const h = new FakeHost({ routes: ['/ws/room/{channel}'] });
    const l = listen({
      onFirstOpen: (route) => calls.push(`first ${route}`),
      onLastClose: (route) => calls.push(`last ${route}`),
      onClose: () => calls.push('close'),
      onOpen(conn, req) {
        host.setAttribute(conn, 'name', 'x');
        host.tag(conn, 'user:x');
        host.send(conn, text('never delivered'));
        return req.queryParam('status') ? OpenDecision.reject(Number(req.queryParam('status')), 'go away') : undefined;
      },
    });
    const refused = h.open(l, '/ws/room/lobby?status=403');
    assert.deepEqual(refused.rejection, { status: 403, reason: 'go away' });
    assert.equal(refused.decision.tag, 'reject');
    assert.equal(refused.open, false);
    assert.deepEqual(refused.received, []);
    assert.equal(h.connectionCount(), 0);
    assert.deepEqual(h.channels(), []);
    assert.deepEqual([...h.tagged('user:x')], []);
    assert.throws(() => h.getAttribute(refused.id, 'name'), errorCode('unknown-connection'));
    assert.throws(() => refused.sendText('x'), /refused/);
    // It was the route's first connection: on-first-open and on-last-close stay paired, with no on-close.
    assert.deepEqual(calls, ['first /ws/room/{channel}', 'last /ws/room/{channel}']);
    // A status outside 400-599 is a plugin bug: the client gets 500.
    assert.deepEqual(h.open(l, '/ws/room/lobby?status=302').rejection, { status: 500, reason: 'connection refused' });
  });

  test('on-first-open and on-last-close pair per route, and re-arm once the route drains', () => {
    const calls = [];
    const h = new FakeHost({ routes: ['/ws/a', '/ws/b/{channel}'] });
    const l = listen({
      onFirstOpen: (route) => calls.push(`first ${route}`),
      onLastClose: (route) => calls.push(`last ${route}`),
      onClose: (conn) => calls.push(`close ${conn}`),
    });
    const a1 = h.open(l, '/ws/a');
    const a2 = h.open(l, '/ws/a');
    const b1 = h.open(l, '/ws/b/x');
    a1.close();
    b1.close();
    a2.close(1006);
    h.open(l, '/ws/a');
    assert.deepEqual(calls, [
      'first /ws/a', 'first /ws/b/{channel}',
      'close 1', 'close 3', 'last /ws/b/{channel}', 'close 2', 'last /ws/a',
      'first /ws/a',
    ]);
  });

  test('sendText calls on-message; the reply comes after what the hook queued', () => {
    const h = new FakeHost();
    const l = listen({
      onMessage(conn, msg) {
        host.send(conn, text('queued first'));
        return text(`echo ${Message.asText(msg)}`);
      },
    });
    const conn = h.open(l, '/ws/x');
    assert.deepEqual(conn.sendText('hi'), text('echo hi'));
    assert.deepEqual(conn.texts(), ['queued first', 'echo hi']);
    assert.deepEqual(conn.take(), [text('queued first'), text('echo hi')]);
    assert.deepEqual(conn.received, []);
    conn.sendBinary([7]);
    assert.deepEqual(conn.texts(), ['queued first', 'echo undefined']);
  });

  test('on-close hears the client code; the connection is then gone', () => {
    const closes = [];
    const h = new FakeHost();
    const l = listen({
      onClose(conn, code, reason) {
        // The connection is still known (attributes work) but closing.
        closes.push([code, reason, host.getAttribute(conn, 'k')]);
        assert.throws(() => host.send(conn, text('x')), errorCode('closed'));
      },
    });
    const conn = h.open(l, '/ws/x');
    h.setAttribute(conn.id, 'k', 'v');
    conn.close(4000, 'bye');
    assert.deepEqual(closes, [[4000, 'bye', 'v']]);
    assert.equal(conn.open, false);
    assert.throws(() => conn.sendText('x'), /closed/);
    assert.throws(() => conn.close(), /closed/);
    const vanished = h.open(l, '/ws/x');
    vanished.close(1006);
    assert.deepEqual(closes.at(-1), [1006, '', undefined]);
  });

  test('push calls on-push with a message', () => {
    const pushed = [];
    const h = new FakeHost();
    const l = listen({ onPush: (msg) => pushed.push(msg) });
    h.push(l, 'news');
    h.push(l, new Uint8Array([1]));
    h.push(l, text('as a message'));
    assert.deepEqual(pushed, [text('news'), Message.binary([1]), text('as a message')]);
  });

  test('what a hook throws reaches the test; a failed open leaves nothing registered', () => {
    const h = new FakeHost({ routes: ['/ws/room/{channel}'] });
    const l = listen({
      onOpen: () => { throw new Error('boom in onOpen'); },
    });
    assert.throws(() => h.open(l, '/ws/room/lobby'), /boom in onOpen/);
    assert.equal(h.connectionCount(), 0);
    assert.deepEqual(h.channels(), []);
    const broken = listen({ onMessage: () => { throw new RangeError('boom'); } });
    assert.throws(() => h.open(broken, '/ws/room/lobby').sendText('x'), RangeError);
  });

  test('hooks must return what the WIT says, async ones too', async () => {
    const h = new FakeHost();
    const conn = h.open(listen({ onMessage: () => 'a bare string' }), '/ws/x');
    assert.throws(() => conn.sendText('x'), TypeError);
    const later = h.open(listen({ onMessage: async () => 'a bare string' }), '/ws/x');
    await assert.rejects(later.sendText('x'), TypeError);
  });

  test('a module of hooks must go through toListener first', () => {
    assert.throws(() => new FakeHost().open({ onOpen() {} }, '/ws/x'), /not a listener \(no onMessage, .*toListener/);
  });

  test('each hook reaches the FakeHost that runs it', () => {
    const one = new FakeHost();
    const two = new FakeHost();
    const l = listen({ onOpen: (conn) => host.setAttribute(conn, 'host', 'mine') });
    const a = one.open(l, '/ws/x');
    const b = two.open(l, '/ws/x');
    assert.equal(one.getAttribute(a.id, 'host'), 'mine');
    assert.equal(two.getAttribute(b.id, 'host'), 'mine');
    assert.equal(one.connectionCount(), 1);
  });
});

test('env() reads the variables the test host grants, and nothing else', async () => {
  const { env } = await import('wsgate');
  const h = new FakeHost({ env: { AUTH_URL: 'http://127.0.0.1:8000/auth' } });
  const conn = h.open(listen({ onMessage: (c, msg) => text(env(Message.asText(msg)) ?? 'unset') }), '/ws/x');
  assert.equal(conn.sendText('AUTH_URL').val, 'http://127.0.0.1:8000/auth');
  assert.equal(conn.sendText('HOME').val, 'unset');
});
