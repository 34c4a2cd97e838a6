// Unit tests of the chat example through the SDK's fake host: no build, no
// server. Run with scripts/test-js-sdk.sh, or: node --test example-plugins/chat-js/
import { beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';

// testing.mjs first: it sets up the resolution of `wsgate` that index.js needs.
import { FakeHost, loadListener } from '../../plugin-sdk/js/testing.mjs';

const chat = await loadListener(new URL('./index.js', import.meta.url));

let host;
beforeEach(() => {
  // The routes of chat-js.toml.
  host = new FakeHost({ routes: ['/ws/chat-js/{channel}'] });
});

const join = (username, channel) => host.open(chat, { path: `/ws/chat-js/${channel}`, query: { username } });

/** What a connection was sent since the last look, without the timestamps. */
function inbox(conn) {
  return conn.take().map((m) => {
    const { timestamp, ...rest } = JSON.parse(m.val);
    assert.equal(typeof timestamp, 'number');
    return rest;
  });
}

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
