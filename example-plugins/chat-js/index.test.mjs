// Unit tests of the chat example through the SDK's fake host: no build, no
// server. Run with scripts/test-js-sdk.sh, or: node --test example-plugins/chat-js/
import { beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';

// testing.mjs first: it sets up the resolution of `wsgate` that index.js needs.
import { FakeHost, history, loadListener, Position } from '../../plugin-sdk/js/testing.mjs';

const chat = await loadListener(new URL('./index.js', import.meta.url));

// The routes and [history] of chat-js.toml.
const SIDECAR = { routes: ['/ws/chat-js/{channel}'], history: { channels: ['*'], size: 100, ttl: '5m' } };

let host;
beforeEach(() => {
  host = new FakeHost(SIDECAR);
});

const join = (username, channel, since) => host.open(chat, {
  path: `/ws/chat-js/${channel}`,
  query: since === undefined ? { username } : { username, since: typeof since === 'string' ? since : Position.format(since) },
});

/**
 * What a connection was sent since the last look, without the timestamps
 * and positions; the positions of channel messages go to `positions`.
 */
function inbox(conn, positions) {
  // forEach(inbox) passes an index here.
  if (!Array.isArray(positions)) positions = [];
  return conn.take().map((m) => {
    const body = JSON.parse(m.val);
    if (body.type === 'recovery') return body;
    const { timestamp, pos, ...rest } = body;
    assert.equal(typeof timestamp, 'number');
    if (rest.private || rest.message.endsWith(` is not in ${rest.channel}`)) {
      assert.equal(pos, undefined, 'whispers and notes to one are not channel messages');
    } else {
      positions.push(Position.parse(pos));
    }
    return rest;
  });
}

const recovery = (recovered, latest) => ({ type: 'recovery', recovered, latest: latest === undefined ? null : Position.format(latest) });
const at = (pos, ahead) => ({ epoch: pos.epoch, offset: pos.offset + BigInt(ahead) });
const say = (conn, ...lines) => lines.forEach((line) => conn.sendText(line));

const server = (message, channel) => ({ from: '<server>', message, channel });

test('joins are announced to the channel, the newcomer included', () => {
  const alice = join('alice', 'lobby');
  assert.deepEqual(inbox(alice), [server('alice connected', 'lobby')]);
  const bob = join('bob', 'lobby');
  assert.deepEqual(inbox(alice), [server('bob connected', 'lobby')]);
  assert.deepEqual(inbox(bob), [server('bob connected', 'lobby')]);
  const carol = join('carol', 'kitchen');
  assert.deepEqual(inbox(alice), []);
  assert.deepEqual(inbox(carol), [server('carol connected', 'kitchen')]);
});

test('a message reaches its channel and no other', () => {
  const [alice, bob, carol] = [join('alice', 'lobby'), join('bob', 'lobby'), join('carol', 'kitchen')];
  [alice, bob, carol].forEach(inbox);
  assert.equal(alice.sendText('hello all'), undefined, 'no reply: the sender gets the publish like everyone');
  const said = { from: 'alice', message: 'hello all', channel: 'lobby' };
  assert.deepEqual(inbox(alice), [said]);
  assert.deepEqual(inbox(bob), [said]);
  assert.deepEqual(inbox(carol), []);
  assert.equal(host.publishes.at(-1).channel, 'lobby');
});

test("a whisper reaches the addressee's connections and the sender's own devices, nobody else", () => {
  const alicePhone = join('alice', 'lobby');
  const aliceLaptop = join('alice', 'lobby');
  const bobPhone = join('bob', 'lobby');
  const bobLaptop = join('bob', 'lobby');
  const carol = join('carol', 'lobby');
  const bobElsewhere = join('bob', 'kitchen');
  const aliceElsewhere = join('alice', 'kitchen');
  const everyone = [alicePhone, aliceLaptop, bobPhone, bobLaptop, carol, bobElsewhere, aliceElsewhere];
  everyone.forEach(inbox);

  alicePhone.sendText(JSON.stringify({ to: 'bob', message: 'psst' }));
  const whisper = { from: 'alice', message: 'psst', channel: 'lobby', to: 'bob', private: true };
  for (const conn of [alicePhone, aliceLaptop, bobPhone, bobLaptop]) assert.deepEqual(inbox(conn), [whisper]);
  for (const conn of [carol, bobElsewhere, aliceElsewhere]) assert.deepEqual(inbox(conn), []);
  assert.equal(host.publishes.length, everyone.length, 'only the joins were published');
});

test('a whisper to yourself arrives once per device', () => {
  const phone = join('alice', 'lobby');
  const laptop = join('alice', 'lobby');
  [phone, laptop].forEach(inbox);
  phone.sendText(JSON.stringify({ to: 'alice', message: 'note to self' }));
  const note = { from: 'alice', message: 'note to self', channel: 'lobby', to: 'alice', private: true };
  assert.deepEqual(inbox(phone), [note]);
  assert.deepEqual(inbox(laptop), [note]);
});

test('a whisper to someone not in the channel tells the sender, and only that connection', () => {
  const alicePhone = join('alice', 'lobby');
  const aliceLaptop = join('alice', 'lobby');
  const dave = join('dave', 'kitchen');
  [alicePhone, aliceLaptop, dave].forEach(inbox);
  alicePhone.sendText(JSON.stringify({ to: 'dave', message: 'hi dave' }));
  assert.deepEqual(inbox(alicePhone), [server('dave is not in lobby', 'lobby')]);
  assert.deepEqual(inbox(aliceLaptop), []);
  assert.deepEqual(inbox(dave), []);
});

test('<server> and an empty username are refused with 403, leaving nothing behind', () => {
  const bystander = join('alice', 'lobby');
  inbox(bystander);
  for (const username of ['<server>', '  ', undefined]) {
    const conn = host.open(chat, { path: '/ws/chat-js/lobby', query: username === undefined ? {} : { username } });
    assert.equal(conn.rejection?.status, 403, String(username));
  }
  assert.deepEqual(inbox(bystander), [], 'no join was announced');
  assert.deepEqual([...host.connections()], [bystander.id]);
  assert.deepEqual([...host.subscribers('lobby')], [bystander.id]);
});

test('user tags are unambiguous: user a in channel b@c is not user a@b in channel c', () => {
  // Without escaping, both would be tagged user:a@b@c.
  const a = join('a', 'b@c');
  const ab = join('a@b', 'c');
  const inBC = join('zoe', 'b@c');
  const inC = join('yan', 'c');
  [a, ab, inBC, inC].forEach(inbox);

  inC.sendText(JSON.stringify({ to: 'a@b', message: 'for a@b' }));
  assert.deepEqual(inbox(ab), [{ from: 'yan', message: 'for a@b', channel: 'c', to: 'a@b', private: true }]);
  assert.deepEqual(inbox(a), []);

  inBC.sendText(JSON.stringify({ to: 'a', message: 'for a' }));
  assert.deepEqual(inbox(a), [{ from: 'zoe', message: 'for a', channel: 'b@c', to: 'a', private: true }]);
  assert.deepEqual(inbox(ab), []);
});

test('a disconnect is announced to those left in the channel', () => {
  const [alice, bob, carol] = [join('alice', 'lobby'), join('bob', 'lobby'), join('carol', 'kitchen')];
  [alice, bob, carol].forEach(inbox);
  bob.close(1001, 'going away');
  assert.deepEqual(inbox(alice), [server('bob disconnected', 'lobby')]);
  assert.deepEqual(inbox(bob), [], 'a closing connection gets nothing more');
  assert.deepEqual(inbox(carol), []);
  assert.deepEqual([...host.subscribers('lobby')], [alice.id]);
});

test('binary messages are ignored', () => {
  const [alice, bob] = [join('alice', 'lobby'), join('bob', 'lobby')];
  [alice, bob].forEach(inbox);
  assert.equal(alice.sendBinary(new TextEncoder().encode('raw')), undefined);
  assert.deepEqual(inbox(bob), []);
});

// ---- history and recovery ----

test('every channel message carries its recorded position; whispers are not recorded', () => {
  const alice = join('alice', 'lobby');
  say(alice, 'one', 'two', JSON.stringify({ to: 'alice', message: 'secret' }));
  const positions = [];
  assert.deepEqual(inbox(alice, positions), [
    server('alice connected', 'lobby'), { from: 'alice', message: 'one', channel: 'lobby' },
    { from: 'alice', message: 'two', channel: 'lobby' },
    { from: 'alice', message: 'secret', channel: 'lobby', to: 'alice', private: true },
  ]);
  const page = history('lobby');
  assert.deepEqual(page.entries.map((e) => e.position), positions);
  assert.deepEqual(positions.map((p) => p.offset), [1n, 2n, 3n]);
  for (const [i, entry] of page.entries.entries()) assert.equal(JSON.parse(entry.msg.val).pos, Position.format(positions[i]));
});

test('a returning client gets the gap in order, then the notice, then live messages', () => {
  const [alice, bob] = [join('alice', 'lobby'), join('bob', 'lobby')];
  const seen = [];
  inbox(bob, seen);
  const last = seen.at(-1); // "bob connected"
  bob.close(1006);
  say(alice, 'one', 'two', 'three');
  inbox(alice);
  const back = join('bob', 'lobby', last);
  const positions = [];
  const line = (message) => ({ from: 'alice', message, channel: 'lobby' });
  assert.deepEqual(inbox(back, positions), [
    server('bob disconnected', 'lobby'), line('one'), line('two'), line('three'),
    recovery(true, at(last, 4)), server('bob connected', 'lobby'),
  ]);
  assert.deepEqual(positions.map((p) => p.offset - last.offset), [1n, 2n, 3n, 4n, 5n]);
  assert.deepEqual(inbox(alice), [server('bob connected', 'lobby')], 'no replay for the others');
});

test('a client that missed nothing gets just the notice', () => {
  const seen = [];
  inbox(join('alice', 'lobby'), seen);
  const again = join('alice', 'lobby', seen.at(-1));
  assert.deepEqual(inbox(again), [recovery(true, seen.at(-1)), server('alice connected', 'lobby')]);
});

test('the replay goes past one history page', () => {
  host = new FakeHost({ ...SIDECAR, history: { channels: ['*'], size: 1000 } });
  const alice = join('alice', 'lobby');
  const start = [];
  inbox(alice, start);
  say(alice, ...Array.from({ length: 250 }, (_, i) => String(i)));
  const said = inbox(join('bob', 'lobby', start[0]));
  assert.deepEqual(said.slice(0, 250).map((m) => m.message), Array.from({ length: 250 }, (_, i) => String(i)));
  assert.deepEqual(said[250], recovery(true, at(start[0], 250)));
});

test('not recovered when messages were dropped: the notice comes first, then the kept ones', () => {
  const [alice, bob] = [join('alice', 'lobby'), join('bob', 'lobby')];
  const seen = [];
  inbox(bob, seen);
  bob.close(1006);
  say(alice, ...Array.from({ length: 150 }, (_, i) => String(i))); // the sidecar keeps 100
  const said = inbox(join('bob', 'lobby', seen.at(-1)));
  assert.deepEqual(said[0], recovery(false, at(seen.at(-1), 151)));
  assert.deepEqual(said.slice(1, 101).map((m) => m.message), Array.from({ length: 100 }, (_, i) => String(i + 50)));
  assert.deepEqual(said.slice(101), [server('bob connected', 'lobby')]);
});

test('not recovered after the TTL', () => {
  const alice = join('alice', 'lobby');
  const seen = [];
  inbox(alice, seen);
  alice.close(1006);
  host.advanceTime(5 * 60_000);
  assert.deepEqual(inbox(join('alice', 'lobby', seen.at(-1))), [
    recovery(false, at(seen.at(-1), 1)), server('alice connected', 'lobby'),
  ]);
});

test('not recovered when history was lost', () => {
  const seen = [];
  inbox(join('alice', 'lobby'), seen);
  host.newEpoch();
  say(join('bob', 'lobby'), 'hello');
  const fresh = [];
  const said = inbox(join('alice', 'lobby', seen.at(-1)), fresh);
  assert.deepEqual(said, [
    recovery(false, { epoch: fresh[0].epoch, offset: 2n }), server('bob connected', 'lobby'),
    { from: 'bob', message: 'hello', channel: 'lobby' }, server('alice connected', 'lobby'),
  ]);
  assert.notEqual(fresh[0].epoch, seen[0].epoch);
});

test('a since that is not a position is refused with 400, leaving nothing behind', () => {
  for (const since of ['', 'nope', ':4', 'e:', 'e:-1', 'e:x', 'e:99999999999999999999999']) {
    const conn = join('alice', 'lobby', since);
    assert.equal(conn.rejection?.status, 400, since);
  }
  assert.deepEqual(host.publishes, []);
  assert.deepEqual([...host.connections()], []);
});

test('history unavailable: a returning client is refused with 503, to come back with the same since', () => {
  const bob = join('bob', 'lobby');
  bob.take();
  host.historyError = 'unavailable';
  const conn = join('alice', 'lobby', '0123456789abcdef:3');
  assert.equal(conn.rejection?.status, 503);
  assert.deepEqual(bob.take(), []);
  assert.equal([...host.connections()].length, 1);
  assert.ok(host.logs.some((l) => l.msg.includes('history of lobby failed')));
});

test('a since on a channel that is not recorded is a fresh start', () => {
  host = new FakeHost({ routes: SIDECAR.routes });
  const conn = join('alice', 'lobby', '0123456789abcdef:3');
  assert.equal(conn.rejection, undefined);
  assert.deepEqual(JSON.parse(conn.take()[0].val), recovery(false, undefined));
});

test('a line that cannot be recorded is not sent, and its sender is told', () => {
  const alice = join('alice', 'lobby');
  const bob = join('bob', 'lobby');
  alice.take();
  bob.take();
  host.historyError = 'unavailable';
  alice.sendText('hello');
  assert.deepEqual(alice.take().map((m) => JSON.parse(m.val)), [{ type: 'error', error: 'not delivered; try again' }]);
  assert.deepEqual(bob.take(), []);
});
