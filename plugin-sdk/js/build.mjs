// Builds one JavaScript listener into a Wasm component.
// Usage: node build.mjs PLUGIN_DIR OUT.wasm
//
// PLUGIN_DIR/index.js is the listener module. esbuild bundles it with this
// SDK (imported as 'wsgate') into one ES module, because componentize-js
// resolves only relative paths and WIT interfaces, not packages; then
// componentize-js snapshots SpiderMonkey with that module preloaded.
import { build } from 'esbuild';
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const [pluginDir, outArg] = process.argv.slice(2);
if (!pluginDir || !outArg) {
  console.error('usage: node build.mjs PLUGIN_DIR OUT.wasm');
  process.exit(2);
}
const sdk = dirname(fileURLToPath(import.meta.url));
const wit = resolve(process.env.WSGATE_WIT ?? join(sdk, '../../wit'));
const main = resolve(pluginDir, 'index.js');
const out = resolve(outArg);

const bundled = await build({
  stdin: {
    contents: `import * as hooks from ${JSON.stringify(main)};
import { toListener } from 'wsgate';
const exported = toListener(hooks);
export { exported as listener, exported as upstreamListener, exported as errorListener, exported as batchListener };`,
    resolveDir: resolve(pluginDir),
    sourcefile: 'wsgate-entry.js',
  },
  bundle: true,
  format: 'esm',
  platform: 'neutral',
  write: false,
  outfile: 'listener.js',
  alias: { wsgate: join(sdk, 'index.js') },
  external: ['wsgate:*', 'wasi:*'],
  logLevel: 'warning',
});

// componentize-js reads the module from a file.
const work = await mkdtemp(join(tmpdir(), 'wsgate-js-'));
const source = join(work, 'listener.js');
await writeFile(source, bundled.outputFiles[0].contents);
// componentize-js maps the source's folder into the engine by stripping the
// cwd from its path as a string prefix, which breaks when the cwd is a
// string prefix of that folder without containing it (/tmp/ws vs
// /tmp/wsgate-js-1): running from the folder itself is always right.
process.chdir(work);
try {
  const { component } = await componentize({
    sourcePath: source,
    witPath: wit,
    // plugin-http: the plugin world plus the environment, which env()
    // reads (fetch needs nothing from the world).
    worldName: 'plugin-http',
    // clocks (Date.now), random, stdio (console output and uncaught errors
    // reach the host's stderr if it passes them on) and http: fetch() over
    // wasi:http/outgoing-handler, which the server answers for the hosts a
    // plugin's sidecar grants. Not fetch-event: a plugin serves no HTTP.
    disableFeatures: ['fetch-event'],
  });
  await writeFile(out, component);
} finally {
  await rm(work, { recursive: true, force: true });
}
