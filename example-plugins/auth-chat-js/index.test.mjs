// Unit tests of the auth-chat example through the SDK's fake host, its
// fetch() answered in memory: no build, no server, no network.
// Run with scripts/test-js-sdk.sh, or: node --test example-plugins/auth-chat-js/
import { test } from 'node:test';
import assert from 'node:assert/strict';

// testing.mjs first: it sets up the resolution of `wsgate` that index.js needs.
import { FakeHost, loadListener } from '../../plugin-sdk/js/testing.mjs';

const chat = await loadListener(new URL('./index.js', import.meta.url));
const AUTH = 'http://127.0.0.1:8000/auth';
const env = { AUTH_CHAT_URL: AUTH };

// The application: knows one token.
const backend = (req) =>
  req.headers.get('authorization') === 'Bearer good' ? { user: 'ann' } : { status: 401, body: '' };

const hostWith = (answer) => new FakeHost({ routes: ['/ws/auth-chat-js/{channel}'], env, http: { [AUTH]: answer } });
const join = (host, token) =>
  host.open(chat, { path: '/ws/auth-chat-js/lobby', headers: { authorization: `Bearer ${token}` } });

test('a known token joins as its user, and lines carry it', async () => {
  const host = hostWith(backend);
  const conn = await join(host, 'good');
  assert.equal(conn.rejection, undefined);
  await conn.sendText('hello');
  assert.deepEqual(conn.take().map((m) => JSON.parse(m.val)), [
    { from: 'ann', message: 'hello', channel: 'lobby', seq: 1 },
  ]);
});

test('an unknown token is 401', async () => {
  const refused = await join(hostWith(backend), 'bad');
  assert.equal(refused.rejection.status, 401);
});

test('a backend that fails is 503, and the client is told nothing of why', async () => {
  for (const answer of [new Error('connection refused'), { status: 500, body: 'boom' }, 'not json']) {
    const refused = await join(hostWith(answer), 'good');
    assert.equal(refused.rejection.status, 503);
    assert.equal(refused.rejection.reason, 'try again later');
  }
});

test('a new member gets the last lines, oldest first', async () => {
  const host = hostWith(backend);
  const talker = await join(host, 'good');
  for (let i = 0; i < 25; i++) await talker.sendText(`line ${i}`);
  const late = await join(host, 'good');
  const got = late.take().map((m) => JSON.parse(m.val).message);
  assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => `line ${i + 5}`));
});
