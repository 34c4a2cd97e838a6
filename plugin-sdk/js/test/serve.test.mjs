// serve(): a real wsgate with a built plugin. Needs WSGATE_BIN (the server
// binary) and WSGATE_TEST_PLUGINS (a directory with the built echo.wasm),
// as scripts/test.sh sets them; skipped without them.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { connect, serve } from '../testing.mjs';

const bin = process.env.WSGATE_BIN;
const plugins = process.env.WSGATE_TEST_PLUGINS;
const echo = plugins && join(plugins, 'echo.wasm');
const skip = !bin ? 'WSGATE_BIN is not set (the wsgate binary to run)'
  : !plugins ? 'WSGATE_TEST_PLUGINS is not set (a directory with the built echo.wasm)'
  : !existsSync(echo) ? `${echo} does not exist: build the example plugins first`
  : false;

describe('serve() with the echo plugin', { skip }, () => {
  let server;
  before(async () => {
    server = await serve(echo);
  });
  after(async () => {
    await server?.stop();
  });

  test('serves the plugin on its route: text and binary echo, and the close handshake', async () => {
    const ws = await connect(server.wsUrl('/ws/echo'));
    ws.sendText('hello wsgate');
    assert.deepEqual(await ws.next(), { type: 'text', data: 'hello wsgate' });
    ws.sendBinary([0, 1, 255]);
    assert.deepEqual(await ws.next(), { type: 'binary', data: new Uint8Array([0, 1, 255]) });
    ws.close(1000, 'done');
    assert.deepEqual(await ws.next(), { type: 'close', code: 1000, reason: 'done' });
    ws.destroy();
  });

  test('wsUrl defaults to the plugin route; other paths are 404', async () => {
    assert.equal(server.wsUrl(), server.wsUrl('/ws/echo'));
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    await assert.rejects(connect(server.wsUrl('/ws/nothing-here')), { name: 'WebSocketRefused', status: 404 });
  });

  test('logs() has what the server printed', () => {
    assert.match(server.logs(), /echo/);
  });

  // Last: it stops the server the tests above share.
  test('stop() closes open connections as going away and ends the server', async () => {
    const ws = await connect(server.wsUrl());
    const started = Date.now();
    await server.stop();
    assert.equal((await ws.next()).code, 1001);
    assert.ok(Date.now() - started < 10_000, `stop() took ${Date.now() - started} ms`);
    assert.equal((await connect(server.wsUrl()).catch((e) => e)).code, 'ECONNREFUSED');
    ws.destroy();
  });
});

describe('serve() errors', () => {
  test('without WSGATE_BIN or wsgate on PATH it says what it needs', async () => {
    const saved = { bin: process.env.WSGATE_BIN, path: process.env.PATH };
    try {
      delete process.env.WSGATE_BIN;
      process.env.PATH = '/nonexistent';
      await assert.rejects(serve('echo.wasm'), /set WSGATE_BIN to its path or put wsgate on PATH/);
    } finally {
      if (saved.bin === undefined) delete process.env.WSGATE_BIN;
      else process.env.WSGATE_BIN = saved.bin;
      process.env.PATH = saved.path;
    }
  });

  test('a plugin that does not load is an error carrying the server log', { skip: !bin && 'WSGATE_BIN is not set' }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'wsgate-serve-test-'));
    try {
      await writeFile(join(dir, 'junk.wasm'), 'not a component');
      const failed = await serve(join(dir, 'junk.wasm')).catch((e) => e);
      assert.match(failed.message, /plugin junk did not load: /);
      assert.match(failed.message, /--- wsgate log ---\n[^]*junk/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a binary that cannot start is reported with its path', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'wsgate-serve-test-'));
    const saved = process.env.WSGATE_BIN;
    try {
      await writeFile(join(dir, 'x.wasm'), 'not loaded: the server never starts');
      process.env.WSGATE_BIN = '/nonexistent/wsgate';
      await assert.rejects(serve(join(dir, 'x.wasm')), /cannot start \/nonexistent\/wsgate/);
    } finally {
      if (saved === undefined) delete process.env.WSGATE_BIN;
      else process.env.WSGATE_BIN = saved;
      await rm(dir, { recursive: true, force: true });
    }
  });
});
