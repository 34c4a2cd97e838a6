// Tests of {{name}}: `wsgate test` runs them (it builds the plugin first).
//
// The unit test drives the hooks against the SDK's in-memory host; the
// integration test serves the built plugin, dist/{{name}}.wasm, in a real
// wsgate and talks to it over a socket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// testing.mjs first: it lets index.js import 'wsgate' outside wasm.
import { FakeHost, loadListener, serve } from './sdk/plugin-sdk/js/testing.mjs';

const listener = await loadListener(new URL('./index.js', import.meta.url));

test('greets, then answers', () => {
  const host = new FakeHost();
  const conn = host.open(listener, '/ws/{{name}}');
  assert.deepEqual(conn.texts(), ['welcome to {{name}}']);
  assert.equal(conn.sendText('hello').val, 'echo: hello');
});

test('serves over a real socket', async () => {
  const wasm = fileURLToPath(new URL('./dist/{{name}}.wasm', import.meta.url));
  assert.ok(existsSync(wasm), `${wasm} is missing: run \`wsgate build\` first, or \`wsgate test\`, which builds`);
  const server = await serve(wasm);
  try {
    const ws = await server.connect('/ws/{{name}}');
    assert.deepEqual(await ws.next(), { type: 'text', data: 'welcome to {{name}}' });
    ws.sendText('hello');
    assert.deepEqual(await ws.next(), { type: 'text', data: 'echo: hello' });
    ws.close();
  } finally {
    await server.stop();
  }
});
