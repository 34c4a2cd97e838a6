// onMessages (WIT 0.1.3, batch-listener): the SDK's loop over onMessage,
// driven through the FakeHost as the server drives it. The rules are the
// WIT's doc comment: one call handles a burst, but stops right after a
// message whose handling delivered to connections or closed one, so the
// sender sees what one onMessage per message would have shown it.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  ComponentError, FakeHost, host, hostError, loadListener, Message, publishPositioned, publishRecorded, toListener,
} from '../testing.mjs';

const text = (s) => Message.text(s);
const texts = (msgs) => msgs.map((m) => m?.val);

/**
 * toListener(hooks), the SDK's onMessages recording the size of each batch
 * it is given (`batches`), and onMessage each message it sees (`seen`).
 */
function listenerOf(hooks) {
  const seen = [];
  const batches = [];
  const sdk = toListener({
    ...hooks,
    onMessage: (conn, msg) => {
      seen.push(typeof msg.val === 'string' ? msg.val : msg.val.length);
      return hooks.onMessage?.(conn, msg);
    },
  });
  const onMessages = sdk.onMessages;
  sdk.onMessages = (conn, msgs) => {
    batches.push(msgs.length);
    return onMessages(conn, msgs);
  };
  return Object.assign(sdk, { seen, batches });
}

const echo = (conn, msg) => msg;

/** Replies `re-X` to X; for an X starting with '!', first makes the call `deliver(conn, X)`. */
const replier = (deliver) => (conn, msg) => {
  if (msg.val.startsWith('!')) deliver(conn, msg.val);
  return text(`re-${msg.val}`);
};

const publishToOwnChannel = (conn, t) => host.publish('room', text(`pub${t}`), undefined);
const room = { path: '/ws/room', route: '/ws/{channel}' };

describe('one call for a burst', () => {
  test('an echo handles a whole burst in one call', () => {
    const listener = listenerOf({ onMessage: echo });
    const conn = new FakeHost().open(listener);
    const replies = conn.sendBurst(['a', 'b', new Uint8Array([1]), 'd']);
    assert.deepEqual(replies, [text('a'), text('b'), Message.binary([1]), text('d')]);
    assert.deepEqual(listener.batches, [4], 'one call for the whole burst');
    assert.deepEqual(listener.seen, ['a', 'b', 1, 'd']);
    assert.deepEqual(conn.received, [text('a'), text('b'), Message.binary([1]), text('d')]);
  });

  test('one result per message, in order, undefined for no reply', () => {
    const conn = new FakeHost().open(listenerOf({ onMessage: (c, m) => (Number(m.val) % 2 ? m : undefined) }));
    assert.deepEqual(conn.onMessages(['1', '2', '3']), [text('1'), undefined, text('3')]);
    assert.deepEqual(conn.texts(), ['1', '3']);
  });

  test('a message that arrives alone goes to onMessage, as the server calls on-message for a burst of one', () => {
    const listener = listenerOf({ onMessage: echo });
    const conn = new FakeHost().open(listener);
    assert.deepEqual(conn.sendText('hi'), text('hi'));
    assert.deepEqual(conn.sendBurst(['alone']), [text('alone')]);
    assert.deepEqual(listener.batches, []);
    assert.deepEqual(conn.texts(), ['hi', 'alone']);
  });

  test('toListener() exports onMessages even for a module without onMessage', () => {
    const listener = toListener({});
    assert.equal(typeof listener.onMessages, 'function');
    assert.deepEqual(listener.onMessages(1n, [text('a'), text('b')]), [undefined, undefined]);
  });

  test('an example plugin loaded as the build loads it has the batch export', async () => {
    const listener = await loadListener(new URL('../../../example-plugins/echo-js/index.js', import.meta.url));
    const conn = new FakeHost().open(listener, '/ws/echo');
    conn.take();
    assert.deepEqual(await conn.sendBurst(['a', 'b']), [text('a'), text('b')]);
  });
});

describe('delivering ends the batch', () => {
  test('a batch stops right after a message that published', () => {
    const listener = listenerOf({ onMessage: replier(publishToOwnChannel) });
    const conn = new FakeHost().open(listener, room);
    assert.deepEqual(conn.onMessages(['a', '!1', 'b']), [text('re-a'), text('re-!1')]);
    assert.deepEqual(listener.seen, ['a', '!1'], 'b is left to the next call');
    assert.deepEqual(conn.texts(), ['re-a', 'pub!1', 're-!1'], 'the earlier replies, what was queued, the last reply');
  });

  test("the host's loop gives the sender what one onMessage per message gives", () => {
    const burst = ['a', '!1', 'b', 'c', '!2', 'd', '!3'];
    const batched = listenerOf({ onMessage: replier(publishToOwnChannel) });
    const conn = new FakeHost().open(batched, room);
    const replies = conn.sendBurst(burst);

    const oneByOne = listenerOf({ onMessage: replier(publishToOwnChannel) });
    const single = new FakeHost().open(oneByOne, room);
    for (const t of burst) single.sendText(t);

    assert.deepEqual(batched.batches, [7, 5, 2], 'a call per delivering message, the rest handed on');
    assert.deepEqual(texts(replies), burst.map((t) => `re-${t}`));
    const expected = ['re-a', 'pub!1', 're-!1', 're-b', 're-c', 'pub!2', 're-!2', 're-d', 'pub!3', 're-!3'];
    assert.deepEqual(conn.texts(), expected);
    assert.deepEqual(single.texts(), expected);
    assert.deepEqual(batched.seen, oneByOne.seen);
  });

  test('the other subscribers see the same as with one onMessage per message', () => {
    const h = new FakeHost();
    const listener = listenerOf({ onMessage: replier(publishToOwnChannel) });
    const sender = h.open(listener, room);
    const other = h.open(listener, room);
    sender.sendBurst(['a', '!1', 'b']);
    assert.deepEqual(other.texts(), ['pub!1']);
    assert.deepEqual(listener.batches, [3], 'b alone: on-message');
  });

  const others = (conn) => [...host.connections()].filter((c) => c !== conn);
  const delivering = {
    send: (conn, t) => host.send(conn, text(`sent${t}`)),
    broadcast: (conn, t) => host.broadcast(text(`all${t}`), undefined),
    sendToTag: (conn, t) => {
      host.tag(conn, 't');
      host.sendToTag('t', text(`tag${t}`), undefined);
    },
    publish: publishToOwnChannel,
    publishRecorded: (conn, t) => publishRecorded('room', `rec${t}`),
    publishPositioned: (conn, t) => publishPositioned('room', (pos) => `pos${t}@${pos}`),
    hostPublishRecorded: (conn, t) => host.publishRecorded('room', { tag: 'plain', val: text(`raw${t}`) }, undefined),
    // Another connection: the first not yet closed (the fake keeps a closed
    // one registered until its client answers).
    close: (conn) => {
      for (const other of others(conn)) {
        try {
          return host.close(other, 4000, 'kicked');
        } catch (e) {
          if (hostError(e) !== 'closed') throw e;
        }
      }
      throw new Error('no connection left to close');
    },
  };
  for (const [name, deliver] of Object.entries(delivering)) {
    test(`${name} ends the batch`, () => {
      const h = new FakeHost({ history: { channels: ['room'] } });
      const listener = listenerOf({ onMessage: replier(deliver) });
      const conn = h.open(listener, room);
      // The ones `close` closes.
      h.open(toListener({}), room);
      h.open(toListener({}), room);
      assert.equal(conn.onMessages(['a', '!x', 'b', 'c']).length, 2);
      assert.deepEqual(conn.sendBurst(['d', '!y', 'e', 'f']), ['re-d', 're-!y', 're-e', 're-f'].map(text));
      assert.deepEqual(listener.batches, [4, 4, 2]);
    });
  }

  const harmless = {
    subscribe: (conn) => host.subscribe(conn, 'news'),
    tag: (conn) => host.tag(conn, 't'),
    setAttribute: (conn) => host.setAttribute(conn, 'k', 'v'),
    stateSet: () => host.stateSet('k', new Uint8Array([1])),
    stateIncrement: () => host.stateIncrement('n', 1n),
    setTimer: () => host.setTimer(1000, false),
    log: () => host.log('info', 'hi'),
    subscribers: () => host.subscribers('room'),
  };
  for (const [name, call] of Object.entries(harmless)) {
    test(`${name} delivers nothing and does not end the batch`, () => {
      const conn = new FakeHost().open(listenerOf({ onMessage: (c, m) => { call(c); return m; } }), room);
      assert.equal(conn.onMessages(['a', 'b', 'c']).length, 3);
    });
  }

  test('a delivering call that fails still ends the batch: a call more, never a reordering', () => {
    const onMessage = (conn, msg) => {
      if (msg.val === '!') assert.throws(() => host.send(999n, text('nobody')), (e) => hostError(e) === 'unknown-connection');
      return msg;
    };
    const conn = new FakeHost().open(listenerOf({ onMessage }));
    assert.equal(conn.onMessages(['a', '!', 'b']).length, 2);
  });

  test('a batch that starts with a delivering message handles only it', () => {
    const conn = new FakeHost().open(listenerOf({ onMessage: replier(delivering.send) }));
    assert.deepEqual(conn.onMessages(['!1', 'a']), [text('re-!1')]);
    assert.deepEqual(conn.texts(), ['sent!1', 're-!1']);
  });

  test('after a call that handled only its first message, the rest go one by one', () => {
    const listener = listenerOf({ onMessage: replier(delivering.send) });
    const conn = new FakeHost().open(listener);
    assert.deepEqual(texts(conn.sendBurst(['!1', 'a', '!2', 'b'])), ['re-!1', 're-a', 're-!2', 're-b']);
    assert.deepEqual(listener.batches, [4], 'a plugin that delivers at once: on-message for the rest');
    assert.deepEqual(listener.seen, ['!1', 'a', '!2', 'b']);
    assert.deepEqual(conn.texts(), ['sent!1', 're-!1', 're-a', 'sent!2', 're-!2', 're-b']);
  });

  test('the flag is cleared for every message', () => {
    const conn = new FakeHost().open(listenerOf({ onMessage: replier(delivering.send) }));
    assert.equal(conn.onMessages(['a', '!1']).length, 2);
    assert.equal(conn.onMessages(['a', 'b', 'c']).length, 3, "the last batch's delivery is not carried over");
  });

  test('async onMessage: awaited in order, and a delivery still ends the batch', async () => {
    const listener = listenerOf({
      async onMessage(conn, msg) {
        await new Promise((resolve) => setTimeout(resolve, 1));
        if (msg.val.startsWith('!')) host.publish('room', text(`pub${msg.val}`), undefined);
        return text(`re-${msg.val}`);
      },
    });
    const conn = new FakeHost().open(listener, room);
    const pending = conn.sendBurst(['a', 'b', '!1', 'c']);
    assert.equal(typeof pending.then, 'function', 'an async onMessage makes the burst a Promise');
    assert.deepEqual(texts(await pending), ['re-a', 're-b', 're-!1', 're-c']);
    assert.deepEqual(listener.batches, [4], 'c alone: on-message');
    assert.deepEqual(conn.texts(), ['re-a', 're-b', 'pub!1', 're-!1', 're-c']);
  });
});

describe('closing and failures', () => {
  test('closing its own connection ends the batch and the burst', () => {
    const onMessage = (conn, msg) => {
      if (msg.val === 'bye') host.close(conn, 1000, 'bye');
      return text(`re-${msg.val}`);
    };
    const listener = listenerOf({ onMessage });
    const conn = new FakeHost().open(listener);
    assert.deepEqual(texts(conn.sendBurst(['a', 'bye', 'b', 'c'])), ['re-a', 're-bye'], 'b and c are discarded, as after a close');
    assert.deepEqual(listener.batches, [4]);
    assert.deepEqual(listener.seen, ['a', 'bye']);
    assert.deepEqual(conn.texts(), ['re-a'], 'the earlier reply went out before the close, the last did not');
    assert.deepEqual(conn.closing, { code: 1000, reason: 'bye' });

    const single = new FakeHost().open(listenerOf({ onMessage }));
    for (const t of ['a', 'bye', 'b', 'c']) single.sendText(t);
    assert.deepEqual(single.texts(), conn.texts());
  });

  test('what onMessage throws fails the call, and nothing of it is written', () => {
    const onMessage = (conn, msg) => {
      if (msg.val === 'boom') throw new RangeError('boom');
      return msg;
    };
    const conn = new FakeHost().open(listenerOf({ onMessage }));
    assert.throws(() => conn.onMessages(['a', 'boom', 'b']), RangeError);
    assert.deepEqual(conn.received, [], 'a trap: the server closes with 1011 and writes none of the replies');
    assert.throws(() => conn.sendBurst(['c', 'boom']), RangeError);
    assert.throws(() => conn.sendBurst(['boom']), RangeError);
  });

  test('what an async onMessage rejects with fails the call', async () => {
    const conn = new FakeHost().open(listenerOf({
      async onMessage(c, msg) {
        if (msg.val === 'boom') throw new RangeError('boom');
        return msg;
      },
    }));
    await assert.rejects(async () => conn.onMessages(['a', 'boom', 'b']), RangeError);
    assert.deepEqual(conn.received, []);
  });

  for (const results of [[], [undefined, undefined, undefined, undefined], undefined, 'ab']) {
    test(`a result of ${JSON.stringify(results)} for 3 messages fails the call`, () => {
      const listener = toListener({});
      listener.onMessages = () => results;
      const conn = new FakeHost().open(listener);
      assert.throws(() => conn.onMessages(['a', 'b', 'c']), /onMessages returned/);
    });
  }

  test('a listener without onMessages gets onMessage for every message of a burst', () => {
    const listener = toListener({ onMessage: echo });
    delete listener.onMessages; // a plugin built before 0.1.3
    const conn = new FakeHost().open(listener);
    assert.deepEqual(conn.sendBurst(['a', 'b']), [text('a'), text('b')]);
    assert.throws(() => conn.onMessages(['a']), /no onMessages/);
  });

  test('a burst is at least one message', () => {
    const conn = new FakeHost().open(listenerOf({}));
    assert.throws(() => conn.onMessages([]), RangeError);
    assert.deepEqual(conn.sendBurst([]), []);
  });

  test('an earlier reply over the size limit fails the connection where it comes', () => {
    const onMessage = (conn, msg) => (msg.val === 'big' ? text('x'.repeat(100)) : msg);
    const conn = new FakeHost({ limits: { maxMessageSize: 64 } }).open(listenerOf({ onMessage }));
    conn.onMessages(['a', 'big', 'c']);
    assert.deepEqual(conn.texts(), ['a']);
    assert.deepEqual(conn.closing, { code: 1011, reason: 'internal error' });
  });
});

describe('the host object', () => {
  test('has every host call, frozen, the delivering ones wrapped', () => {
    assert.ok(Object.isFrozen(host));
    for (const name of ['send', 'broadcast', 'sendToTag', 'publish', 'publishRecorded', 'close', 'subscribe', 'stateGet', 'log']) {
      assert.equal(typeof host[name], 'function', name);
      assert.equal(host[name].name, name);
    }
    const h = new FakeHost();
    assert.throws(() => host.send(1n, text('x')), (e) => e instanceof ComponentError && hostError(e) === 'unknown-connection');
    assert.equal(host.connectionCount(), h.connectionCount());
  });
});
