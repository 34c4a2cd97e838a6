// Module resolution hooks for testing.mjs, registered with node:module's
// register(); they run on Node's loader thread, so they share nothing with
// the tests but the host call names they are given.
//
// Under Node, a plugin's `import ... from 'wsgate'` and the SDK's import of
// `wsgate:plugin/host@0.1.3` resolve to nothing: at build time esbuild
// aliases the first and ComponentizeJS supplies the second. Here the first
// becomes the SDK's index.js and the second a module whose functions call
// whichever FakeHost is current, so plugins and the SDK load unchanged.

const SDK = new URL('./index.js', import.meta.url).href;
const TESTING = new URL('./testing.mjs', import.meta.url).href;
const HOST_SPECIFIER = 'wsgate:plugin/host@0.1.3';
// A scheme of our own rather than a data: URL, so stack traces through a
// host call stay readable.
const HOST_URL = 'wsgate-testing:host';
// The SDK's env() reads WASI's environment: here, the current FakeHost's `env`.
const ENV_SPECIFIER = 'wasi:cli/environment@0.2.12';
const ENV_URL = 'wsgate-testing:environment';

let hostSource;
let envSource;

/** @param {{ hostCalls: string[], currentHostKey: string, hookHostKey: string }} data */
export function initialize({ hostCalls, currentHostKey, hookHostKey }) {
  const key = JSON.stringify(currentHostKey);
  // The host of the running hook (an AsyncLocalStorage, kept across an
  // async hook's awaits), else the current one.
  const hookKey = JSON.stringify(hookHostKey);
  const current = `function current() {
  const host = globalThis[Symbol.for(${hookKey})]?.getStore() ?? globalThis[Symbol.for(${key})];
  if (!host) throw new Error('no FakeHost: create one (new FakeHost()) before calling the host');
  return host;
}`;
  hostSource = [
    current,
    ...hostCalls.map((name) => `export function ${name}(...args) { return current().${name}(...args); }`),
  ].join('\n');
  envSource = [current, 'export function getEnvironment() { return Object.entries(current().env); }'].join('\n');
}

export async function resolve(specifier, context, nextResolve) {
  switch (specifier) {
    case 'wsgate':
      return { url: SDK, shortCircuit: true };
    case 'wsgate/testing':
      return { url: TESTING, shortCircuit: true };
    case HOST_SPECIFIER:
      return { url: HOST_URL, shortCircuit: true };
    case ENV_SPECIFIER:
      return { url: ENV_URL, shortCircuit: true };
    default:
      return nextResolve(specifier, context);
  }
}

export async function load(url, context, nextLoad) {
  if (url === HOST_URL) return { format: 'module', source: hostSource, shortCircuit: true };
  if (url === ENV_URL) return { format: 'module', source: envSource, shortCircuit: true };
  return nextLoad(url, context);
}
