// The 0.1.1 state calls against the FakeHost: increment on decimal text,
// compare-and-swap, keys that expire on the virtual clock, keys by prefix.
// The semantics are the WIT's doc comments (wit/wsgate.wit, interface host).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { ComponentError, DEFAULT_LIMITS, FakeHost, host } from '../testing.mjs';

const bytes = (s) => new TextEncoder().encode(s);
const str = (b) => (b === undefined ? undefined : new TextDecoder().decode(b));
const errorCode = (code) => (e) => e instanceof ComponentError && e.payload === code;

describe('state-increment', () => {
  test('counts from an absent key and stores decimal text', () => {
    new FakeHost();
    assert.equal(host.stateIncrement('hits', 1n), 1n);
    assert.equal(host.stateIncrement('hits', 41), 42n); // numbers convert, as in jco's bindings
    assert.equal(host.stateIncrement('hits', -50n), -8n);
    assert.equal(str(host.stateGet('hits')), '-8');
    host.stateSet('n', bytes('+7'));
    assert.equal(host.stateIncrement('n', 0n), 7n);
    assert.equal(str(host.stateGet('n')), '7');
  });

  test('refuses what is not a decimal s64, and overflow', () => {
    new FakeHost();
    for (const value of ['', 'x', '1.5', ' 1', '1 ', '0x10', '٣']) {
      host.stateSet('k', bytes(value));
      assert.throws(() => host.stateIncrement('k', 1n), errorCode('not-a-number'), value);
      assert.equal(str(host.stateGet('k')), value);
    }
    host.stateSet('k', bytes(String(2n ** 63n - 1n)));
    assert.throws(() => host.stateIncrement('k', 1n), errorCode('not-a-number'));
    assert.equal(host.stateIncrement('k', -1n), 2n ** 63n - 2n);
    host.stateSet('k', bytes(String(2n ** 63n)));
    assert.throws(() => host.stateIncrement('k', 0n), errorCode('not-a-number'));
  });
});

describe('state-compare-and-swap', () => {
  test('sets only over the expected value; undefined is an absent key', () => {
    const h = new FakeHost();
    assert.equal(host.stateCompareAndSwap('lock', undefined, bytes('ann')), true);
    assert.equal(host.stateCompareAndSwap('lock', undefined, bytes('bob')), false);
    assert.equal(host.stateCompareAndSwap('lock', bytes('bob'), undefined), false);
    assert.equal(str(host.stateGet('lock')), 'ann');
    assert.equal(host.stateCompareAndSwap('lock', bytes('ann'), bytes('bob')), true);
    assert.equal(host.stateCompareAndSwap('lock', bytes('bob'), undefined), true);
    assert.equal(host.stateGet('lock'), undefined);
    assert.equal(h.state.size, 0);
  });
});

describe('state-set-expiring', () => {
  test('a key is gone after its ttl on the virtual clock', () => {
    const h = new FakeHost();
    host.stateSetExpiring('session', bytes('s1'), 1000n);
    h.advanceTime(999);
    assert.equal(str(host.stateGet('session')), 's1');
    assert.deepEqual(host.stateKeys('', 10), ['session']);
    h.advanceTime(1);
    assert.equal(host.stateGet('session'), undefined);
    assert.deepEqual(host.stateKeys('', 10), []);
  });

  test('set and a successful swap make a key permanent; increment keeps the ttl', () => {
    const h = new FakeHost();
    host.stateSetExpiring('a', bytes('1'), 10n);
    host.stateSet('a', bytes('2'));
    host.stateSetExpiring('b', bytes('1'), 10n);
    assert.equal(host.stateCompareAndSwap('b', bytes('x'), bytes('2')), false);
    host.stateSetExpiring('c', bytes('1'), 10n);
    assert.equal(host.stateCompareAndSwap('c', bytes('1'), bytes('2')), true);
    host.stateSetExpiring('rate', bytes('0'), 10n);
    assert.equal(host.stateIncrement('rate', 1n), 1n);
    h.advanceTime(10);
    assert.deepEqual(['a', 'b', 'c', 'rate'].map((k) => str(host.stateGet(k))), ['2', undefined, '2', undefined]);
  });

  test('a ttl of zero and bad keys are invalid arguments', () => {
    const h = new FakeHost();
    const long = 'k'.repeat(DEFAULT_LIMITS.maxNameLen + 1);
    assert.throws(() => host.stateSetExpiring('k', bytes('x'), 0n), errorCode('invalid-argument'));
    assert.throws(() => host.stateSetExpiring('', bytes('x'), 5n), errorCode('invalid-argument'));
    assert.throws(() => host.stateIncrement(long, 1n), errorCode('invalid-argument'));
    assert.throws(() => host.stateCompareAndSwap('', undefined, bytes('x')), errorCode('invalid-argument'));
    assert.equal(h.state.size, 0);
  });
});

describe('state-keys', () => {
  test('keys by prefix, in byte order, bounded by the limit and by the host', () => {
    new FakeHost();
    for (const key of ['user:b', 'user:a', 'room:1', 'user:ä', 'user:Z', 'users']) host.stateSet(key, bytes(''));
    assert.deepEqual(host.stateKeys('user:', 10), ['user:Z', 'user:a', 'user:b', 'user:ä']);
    assert.deepEqual(host.stateKeys('user:', 2), ['user:Z', 'user:a']);
    assert.deepEqual(host.stateKeys('nothing', 5), []);
    assert.deepEqual(host.stateKeys('user:', 0), []);
    const small = new FakeHost({ limits: { stateKeysListed: 3 } });
    for (let i = 0; i < 5; i++) small.stateSet(`k${i}`, bytes(''));
    assert.deepEqual(small.stateKeys('k', 1000), ['k0', 'k1', 'k2']);
  });
});

test('the new calls count against stateBytes; an expired key frees its bytes', () => {
  const h = new FakeHost({ limits: { stateBytes: 2 * 64 + 9 } }); // an entry costs 64 + key + value
  h.stateSet('a', bytes('123456')); // 71
  assert.throws(() => h.stateIncrement('b', 1000n), errorCode('limit-reached')); // +69
  assert.throws(() => h.stateCompareAndSwap('b', undefined, bytes('12')), errorCode('limit-reached'));
  assert.throws(() => h.stateSetExpiring('b', bytes('12'), 5n), errorCode('limit-reached'));
  assert.equal(h.stateIncrement('b', 5n), 5n); // +66: 137
  assert.equal(h.stateIncrement('a', -123455n), 1n); // 132
  h.stateSet('b', undefined); // 66
  h.stateSetExpiring('c', bytes(''), 1n); // 131
  assert.throws(() => h.stateSet('d', bytes('12')), errorCode('limit-reached'));
  h.advanceTime(1);
  h.stateSet('d', bytes('12'));
});
