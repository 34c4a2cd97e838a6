// The 0.1.2 channel history against the FakeHost, through the SDK's
// wrappers: positions as text, recording, history pages (size, TTL on the
// virtual clock, epochs, `recovered`), positioned publishes, node-local
// presence, and the order of deliveries to a connection whose on-open runs.
// The semantics are the #16 spec's (wit/wsgate.wit, interface host).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  ComponentError, FakeHost, host, history, historyPages, Message, OpenDecision, Position,
  publishPositioned, publishRecorded, toListener,
} from '../testing.mjs';

const errorCode = (code) => (e) => e instanceof ComponentError && e.payload === code;
const recording = (history = {}, options = {}) => new FakeHost({ history: { channels: ['*'], ...history }, ...options });
const texts = (page) => page.entries.map((e) => e.msg.val);
const pos = (epoch, offset) => ({ epoch, offset: BigInt(offset) });
const inLobby = (hooks = {}) => [toListener(hooks), { path: '/ws/lobby', route: '/ws/{channel}' }];

describe('positions as text', () => {
  test('EPOCH:OFFSET both ways, split at the last colon', () => {
    assert.deepEqual(Position.parse('0123456789abcdef:42'), pos('0123456789abcdef', 42));
    assert.equal(Position.format(pos('0123456789abcdef', 42)), '0123456789abcdef:42');
    assert.deepEqual(Position.parse('a:b:7'), pos('a:b', 7));
    assert.equal(Position.parse(`e:${2n ** 64n - 1n}`).offset, 2n ** 64n - 1n);
    assert.deepEqual(Position.parse('e:0'), pos('e', 0));
  });

  test('a bad position is refused', () => {
    for (const text of ['', 'e', ':1', 'e:', 'e:-1', 'e:+1', 'e: 1', 'e:1 ', 'e:1.0', 'e:0x1', 'e:1_0',
      'e:٣', `e:${2n ** 64n}`, `e:${'1'.repeat(21)}`, undefined, 7]) {
      assert.throws(() => Position.parse(text), SyntaxError, String(text));
    }
  });
});

describe('recording', () => {
  test('positions count from 1 per channel in a 16-hex epoch', () => {
    recording();
    const first = publishRecorded('lobby', 'one');
    const second = publishRecorded('lobby', Message.binary([2]));
    assert.match(first.position.epoch, /^[0-9a-f]{16}$/);
    assert.deepEqual([first.position.offset, second.position.offset], [1n, 2n]);
    assert.equal(second.position.epoch, first.position.epoch);
    assert.equal(publishRecorded('kitchen', 'x').position.offset, 1n);
    const page = history('lobby');
    assert.deepEqual(page.entries.map((e) => e.msg), [Message.text('one'), Message.binary([2])]);
    assert.deepEqual(page.latest, second.position);
    assert.equal(page.recovered, true);
  });

  test('publishRecorded delivers as publish does', () => {
    const h = recording();
    const a = h.open(...inLobby());
    const b = h.open(...inLobby());
    const published = publishRecorded('lobby', 'hi', a.id);
    assert.equal(published.delivered, 1);
    assert.deepEqual([a.texts(), b.texts()], [[], ['hi']]);
    assert.deepEqual(h.publishes.at(-1).position, published.position);
  });

  test('only the configured patterns are recorded', () => {
    const h = recording({ channels: ['room-*', 'lobby'] });
    for (const channel of ['room-1', 'room-', 'lobby']) assert.equal(publishRecorded(channel, 'x').position.offset, 1n);
    for (const channel of ['lobby2', 'the-room-1', 'kitchen', 'room']) {
      assert.throws(() => publishRecorded(channel, 'x'), errorCode('not-recorded'), channel);
      assert.throws(() => history(channel), errorCode('not-recorded'));
      assert.throws(() => publishPositioned(channel, (p) => p), errorCode('not-recorded'));
    }
    assert.equal(host.publish('kitchen', Message.text('x'), undefined), 0);
    assert.equal(h.publishes.at(-1).position, undefined);
  });

  test('without a history table nothing is recorded', () => {
    new FakeHost();
    assert.throws(() => publishRecorded('lobby', 'x'), errorCode('not-recorded'));
    assert.throws(() => history('lobby'), errorCode('not-recorded'));
  });

  test('the old publish records on a recorded channel', () => {
    const h = recording();
    host.publish('lobby', Message.text('plain'), undefined);
    assert.equal(publishRecorded('lobby', 'recorded').position.offset, 2n);
    assert.deepEqual(texts(history('lobby')), ['plain', 'recorded']);
    assert.equal(h.publishes[0].position.offset, 1n);
  });

  test('bad arguments', () => {
    recording();
    assert.throws(() => publishRecorded('', 'x'), errorCode('invalid-argument'));
    assert.throws(() => history('x'.repeat(257)), errorCode('invalid-argument'));
    assert.throws(() => history('lobby', undefined, 0), errorCode('invalid-argument'));
    const small = recording({}, { limits: { maxMessageSize: 8 } });
    assert.throws(() => publishRecorded('lobby', '123456789'), errorCode('invalid-argument'));
    // The position counts towards the size: nothing is recorded.
    assert.throws(() => publishPositioned('lobby', (p) => `x${p}`), errorCode('invalid-argument'));
    assert.equal(history('lobby').latest.offset, 0n);
    assert.deepEqual(small.publishes, []);
  });

  test('a history error can be played', () => {
    const h = recording();
    publishRecorded('lobby', 'x');
    h.historyError = 'unavailable';
    assert.throws(() => history('lobby'), errorCode('unavailable'));
    assert.throws(() => publishRecorded('lobby', 'y'), errorCode('unavailable'));
    h.historyError = undefined;
    assert.deepEqual(texts(history('lobby')), ['x']);
  });
});

describe('positioned publishes', () => {
  test('a positioned text carries its own position', () => {
    const h = recording();
    const conn = h.open(...inLobby());
    publishRecorded('lobby', 'first');
    const published = publishPositioned('lobby', (p) => `{"pos":"${p}","n":2}`);
    const expected = `{"pos":"${Position.format(published.position)}","n":2}`;
    assert.equal(published.position.offset, 2n);
    assert.equal(published.delivered, 1);
    assert.deepEqual(conn.texts(), ['first', expected]);
    assert.equal(texts(history('lobby')).at(-1), expected);
  });

  test('the placeholder is random hex and must appear exactly once', () => {
    recording();
    const seen = [];
    publishPositioned('lobby', (p) => (seen.push(p), p));
    publishPositioned('lobby', (p) => (seen.push(p), p));
    assert.ok(seen.every((p) => /^[0-9a-f]{32}$/.test(p)) && seen[0] !== seen[1], seen.join());
    assert.throws(() => publishPositioned('lobby', () => 'no position'), /exactly once, not 0/);
    assert.throws(() => publishPositioned('lobby', (p) => p + p), /exactly once, not 2/);
    assert.throws(() => publishPositioned('lobby', () => 7), TypeError);
    assert.equal(history('lobby').latest.offset, 2n, 'a refused render records nothing');
  });
});

describe('history pages', () => {
  test('an unpublished channel is at offset 0 and recovered', () => {
    recording();
    const page = history('lobby');
    assert.deepEqual(page.entries, []);
    assert.equal(page.latest.offset, 0n);
    assert.equal(page.recovered, true);
    assert.equal(history('lobby', page.latest).recovered, true);
  });

  test('since gives what came after it', () => {
    recording();
    const positions = [1, 2, 3, 4, 5].map((i) => publishRecorded('lobby', String(i)).position);
    const page = history('lobby', positions[1]);
    assert.deepEqual(texts(page), ['3', '4', '5']);
    assert.equal(page.recovered, true);
    assert.deepEqual(page.latest, positions[4]);
    assert.deepEqual(history('lobby', Position.format(positions[1])), page, 'since as text');
    const none = history('lobby', positions[4]);
    assert.deepEqual([none.entries, none.recovered], [[], true]);
  });

  test('limit caps a page, and historyPages goes on to latest', () => {
    recording();
    for (let i = 1; i <= 7; i++) publishRecorded('lobby', String(i));
    const first = history('lobby', undefined, 3);
    assert.deepEqual(texts(first), ['1', '2', '3']);
    assert.equal(first.latest.offset, 7n);
    const pages = [...historyPages('lobby', pos(first.latest.epoch, 1), 2)];
    assert.deepEqual(pages.map(texts), [['2', '3'], ['4', '5'], ['6', '7']]);
    assert.ok(pages.every((p) => p.recovered));
  });

  test('size drops the oldest, and a gap into them is not recovered', () => {
    recording({ size: 3 });
    const positions = [1, 2, 3, 4, 5].map((i) => publishRecorded('lobby', String(i)).position);
    const whole = history('lobby');
    assert.deepEqual([texts(whole), whole.recovered], [['3', '4', '5'], false]);
    const gap = history('lobby', positions[0]);
    assert.deepEqual([texts(gap), gap.recovered], [['3', '4', '5'], false], 'the kept ones, from the oldest');
    const kept = history('lobby', positions[1]);
    assert.deepEqual([texts(kept), kept.recovered], [['3', '4', '5'], true]);
    assert.equal(history('lobby', undefined, 1000).entries.length, 3);
  });

  test('a since ahead of latest or from another epoch is not recovered', () => {
    recording();
    for (let i = 1; i <= 3; i++) publishRecorded('lobby', String(i));
    const { epoch } = history('lobby').latest;
    for (const since of [pos(epoch, 9), pos('ffffffffffffffff', 1)]) {
      const page = history('lobby', since);
      assert.deepEqual([texts(page), page.recovered], [['1', '2', '3'], false]);
    }
  });

  test('entries older than the TTL are dropped on the virtual clock', () => {
    const h = recording({ ttl: '10s' });
    const at1 = publishRecorded('lobby', 'old').position;
    h.advanceTime(6_000);
    const at2 = publishRecorded('lobby', 'newer').position;
    h.advanceTime(3_999);
    assert.deepEqual(texts(history('lobby')), ['old', 'newer']);
    h.advanceTime(1);
    assert.equal(history('lobby', at1).recovered, true, 'nothing after 1 was dropped');
    assert.equal(history('lobby', pos(at1.epoch, 0)).recovered, false);
    assert.deepEqual([texts(history('lobby')), history('lobby').recovered], [['newer'], false]);
    h.advanceTime(10_000);
    const gone = history('lobby', at1);
    assert.deepEqual([gone.entries, gone.recovered, gone.latest], [[], false, at2]);
    assert.equal(history('lobby', at2).recovered, true);
    assert.deepEqual(publishRecorded('lobby', 'next').position, pos(at2.epoch, 3));
  });

  test('a new epoch starts over, and an old since is not recovered', () => {
    const h = recording();
    const old = [1, 2, 3].map((i) => publishRecorded('lobby', String(i)).position);
    publishRecorded('kitchen', 'k');
    h.newEpoch('lobby');
    const fresh = publishRecorded('lobby', 'after');
    assert.notEqual(fresh.position.epoch, old[0].epoch);
    assert.equal(fresh.position.offset, 1n);
    const page = history('lobby', old[2]);
    assert.deepEqual([texts(page), page.recovered], [['after'], false]);
    assert.deepEqual(texts(history('kitchen')), ['k'], 'other channels keep theirs');
    h.newEpoch();
    assert.equal(history('kitchen').latest.offset, 0n);
  });

  test('the [history] table is checked as the server checks it', () => {
    for (const [ttl, ms] of [['5m', 300_000], ['90s', 90_000], ['1h 30m', 5_400_000], ['250ms', 250], [1234, 1234]]) {
      assert.equal(recording({ ttl }).historyConfig.ttlMs, ms, String(ttl));
    }
    assert.deepEqual({ ...new FakeHost({ history: { channels: ['*'] } }).historyConfig, records: undefined, ttlMs: undefined },
      { channels: ['*'], size: 100, ttl: '5m', records: undefined, ttlMs: undefined });
    for (const bad of [{ size: 0 }, { size: 10_001 }, { ttl: '5 parsecs' }, { ttl: 0 }, { ttl: '' }, { colour: 'red' }]) {
      assert.throws(() => recording(bad), JSON.stringify(bad));
    }
  });
});

describe('presence and on-open ordering', () => {
  test('node presence is the whole cluster on one node', () => {
    const h = recording();
    const a = h.open(...inLobby());
    host.tag(a.id, 'user:a');
    assert.deepEqual(host.nodeChannels(), host.channels());
    assert.deepEqual(host.nodeChannels(), ['lobby']);
    assert.deepEqual([...host.nodeSubscribers('lobby')], [a.id]);
    assert.deepEqual([...host.nodeTagged('user:a')], [...host.tagged('user:a')]);
    assert.equal(host.nodeConnectionCount(), host.connectionCount());
    assert.ok(host.nodeTagged('user:a') instanceof BigUint64Array);
  });

  test('what is published during on-open follows what on-open sends', async () => {
    const h = recording();
    const other = h.open(...inLobby());
    const conn = h.open(...inLobby({
      onOpen(id) {
        publishRecorded('lobby', 'live');
        host.sendToTag('none', Message.text('x'), undefined);
        host.send(id, Message.text('replayed'));
        return OpenDecision.greet('hello');
      },
    }));
    assert.deepEqual(conn.texts(), ['hello', 'replayed', 'live']);
    assert.deepEqual(other.texts(), ['live']);
    const later = await h.open(...inLobby({
      async onOpen(id) {
        publishRecorded('lobby', 'during');
        await Promise.resolve();
        host.send(id, Message.text('after an await'));
      },
    }));
    assert.deepEqual(later.texts(), ['after an await', 'during']);
    const refused = h.open(...inLobby({
      onOpen() {
        publishRecorded('lobby', 'x');
        return OpenDecision.reject(400, 'no');
      },
    }));
    assert.deepEqual(refused.received, []);
  });
});
