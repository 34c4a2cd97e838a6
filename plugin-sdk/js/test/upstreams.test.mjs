// Upstreams (outbound WebSockets) and on-error against the FakeHost: the
// plugin connects, sends and closes through `host`; the test plays the far
// end through the FakeUpstream handle and sees what the plugin sent.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { ComponentError, FakeHost, host, Message, toListener } from '../testing.mjs';

const text = (s) => Message.text(s);
const errorCode = (code) => (e) => e instanceof ComponentError && e.payload === code;

/** Records every hook call; `hooks` override some. */
function recorder(hooks = {}) {
  const events = [];
  const names = ['onOpen', 'onMessage', 'onClose', 'onError', 'onUpstreamOpen', 'onUpstreamMessage', 'onUpstreamClose'];
  const recorded = Object.fromEntries(names.map((name) => [name, (...args) => {
    events.push([name, ...args]);
    return hooks[name]?.(...args);
  }]));
  return Object.assign(toListener(recorded), { events });
}

/** Opens an upstream on the first message and forwards every message to it. */
const relay = (hooks = {}) => recorder({
  onMessage(conn, msg) {
    const [id] = host.upstreams();
    host.upstreamSend(id ?? host.upstreamConnect('wss://feed.example/v1?x=1', ['v1'], [['authorization', 'Bearer t']]), msg);
  },
  ...hooks,
});

describe('upstreams', () => {
  test('connect records the url and returns an id; sends before the handshake are kept', () => {
    const h = new FakeHost();
    const l = relay();
    const conn = h.open(l, '/ws/x');
    conn.sendText('hello');
    conn.sendText('again');
    const [id] = h.upstreams();
    assert.equal(typeof id, 'bigint');
    const up = h.upstream(id);
    assert.equal(up.url, 'wss://feed.example/v1?x=1');
    assert.deepEqual(up.protocols, ['v1']);
    assert.deepEqual(up.headers, [['authorization', 'Bearer t']]);
    assert.equal(up.status, 'connecting');
    assert.deepEqual(up.texts(), ['hello', 'again']);
    assert.ok(!l.events.some(([name]) => name.startsWith('onUpstream')));
  });

  test('the test plays the far end: open, messages, close', () => {
    const h = new FakeHost();
    const l = relay({ onUpstreamMessage: (id, msg) => host.broadcast(msg, undefined) });
    const conn = h.open(l, '/ws/x');
    conn.sendText('sub');
    const up = h.upstream(h.upstreams()[0]);
    up.open();
    up.send('tick 1');
    up.send(new Uint8Array([1]));
    assert.deepEqual(l.events.slice(-3), [
      ['onUpstreamOpen', up.id],
      ['onUpstreamMessage', up.id, text('tick 1')],
      ['onUpstreamMessage', up.id, Message.binary([1])],
    ]);
    assert.deepEqual(conn.received, [text('tick 1'), Message.binary([1])]);
    up.close(1001, 'going away');
    assert.deepEqual(l.events.at(-1), ['onUpstreamClose', up.id, 1001, 'going away']);
    assert.equal(h.upstreams().length, 0);
    assert.throws(() => host.upstreamSend(up.id, text('x')), errorCode('unknown-upstream'));
    assert.throws(() => up.send('after the close'), /closed/);
  });

  test('a failed connect is a 1006 close', () => {
    const h = new FakeHost();
    const l = relay();
    h.open(l, '/ws/x').sendText('x');
    const up = h.upstream(1n);
    up.fail('connection refused');
    assert.deepEqual(l.events.at(-1), ['onUpstreamClose', 1n, 1006, 'connection refused']);
    assert.throws(() => up.open(), /closed/);
  });

  test('a close by the plugin is what on-upstream-close reports', () => {
    const h = new FakeHost();
    const l = recorder({
      onMessage(conn, msg) {
        const id = host.upstreamConnect('ws://feed.example/', [], []);
        host.upstreamSend(id, text('bye'));
        host.upstreamClose(id, 4000, 'done');
        assert.throws(() => host.upstreamClose(id, 1000, ''), errorCode('closed'));
        assert.throws(() => host.upstreamSend(id, msg), errorCode('closed'));
        assert.equal(host.upstreams().length, 0); // closing: neither connecting nor open
      },
    });
    h.open(l, '/ws/x').sendText('go');
    const up = h.upstream(1n);
    assert.deepEqual(up.closeSent, { code: 4000, reason: 'done' });
    up.close(1000, 'the far end says 1000');
    assert.deepEqual(l.events.at(-1), ['onUpstreamClose', 1n, 4000, 'done']);
    assert.deepEqual(up.texts(), ['bye']);
  });

  test('bad arguments', () => {
    const h = new FakeHost();
    for (const url of ['http://x/', 'feed.example', 'ws://', '']) {
      assert.throws(() => host.upstreamConnect(url, [], []), errorCode('invalid-url'), url);
    }
    assert.throws(() => host.upstreamConnect('ws://x/', [''], []), errorCode('invalid-argument'));
    assert.throws(() => host.upstreamConnect('ws://x/', [], [['bad name', 'v']]), errorCode('invalid-argument'));
    assert.throws(() => host.upstreamConnect('ws://x/', [], [['x', 'a\r\nb']]), errorCode('invalid-argument'));
    assert.throws(() => host.upstreamConnect('ws://x/', 'v1', []), TypeError);
    const id = host.upstreamConnect('ws://x/', [], []);
    for (const code of [999, 1005, 1006, 2000, 5000]) {
      assert.throws(() => host.upstreamClose(id, code, ''), errorCode('invalid-argument'), String(code));
    }
    assert.throws(() => host.upstreamClose(id, 1000, 'r'.repeat(124)), errorCode('invalid-argument'));
    const big = Message.binary(new Uint8Array(h.limits.maxMessageSize + 1));
    assert.throws(() => host.upstreamSend(id, big), errorCode('invalid-argument'));
    assert.throws(() => host.upstreamSend(99n, text('x')), errorCode('unknown-upstream'));
    assert.throws(() => host.upstreamClose(99n, 1000, ''), errorCode('unknown-upstream'));
  });

  test('the sidecar grant and the limit', () => {
    const h = new FakeHost({ limits: { upstreamsPerPlugin: 2 }, allowedHosts: ['feed.example'] });
    assert.throws(() => host.upstreamConnect('wss://elsewhere.example/', [], []), errorCode('denied'));
    const a = host.upstreamConnect('wss://feed.example/a', [], []);
    host.upstreamConnect('wss://feed.example/b', [], []);
    assert.throws(() => host.upstreamConnect('wss://feed.example/c', [], []), errorCode('limit-reached'));
    h.upstream(a).fail(undefined, recorder());
    host.upstreamConnect('wss://feed.example/c', [], []);
    assert.equal(h.upstreams().length, 2);
    assert.equal(h.upstreamsOpened.size, 3);
  });

  test('async upstream hooks are awaited', async () => {
    const h = new FakeHost();
    const seen = [];
    const l = toListener({
      async onUpstreamMessage(id, msg) {
        await Promise.resolve();
        seen.push(Message.asText(msg));
        host.stateSet('last', new TextEncoder().encode(Message.asText(msg)));
      },
    });
    const id = h.upstreamConnect('ws://x/', [], []);
    h.upstream(id).open(l);
    const pending = h.upstream(id).send('m1', l);
    assert.equal(typeof pending?.then, 'function');
    await pending;
    assert.deepEqual(seen, ['m1']);
  });
});

describe('on-error', () => {
  test('hookFailed runs onError into the connection\'s listener', () => {
    const h = new FakeHost();
    const l = recorder({ onError: (conn, detail) => host.stateSet('last-error', new TextEncoder().encode(detail)) });
    const conn = h.open(l, '/ws/x');
    h.hookFailed(conn, 'on-message ran past its deadline');
    assert.deepEqual(l.events.at(-1), ['onError', conn.id, 'on-message ran past its deadline']);
    assert.equal(new TextDecoder().decode(h.stateGet('last-error')), 'on-message ran past its deadline');
    h.hookFailed(conn.id, 'again');
    assert.deepEqual(l.events.at(-1), ['onError', conn.id, 'again']);
  });

  test('the new hooks default to doing nothing', () => {
    const h = new FakeHost();
    const plain = toListener({});
    const conn = h.open(plain, '/ws/x');
    h.hookFailed(conn, 'x');
    const id = h.upstreamConnect('ws://x/', [], []);
    h.upstream(id).open(plain);
    h.upstream(id).send('m', plain);
    h.upstream(id).close(1000, '', plain);
  });
});
