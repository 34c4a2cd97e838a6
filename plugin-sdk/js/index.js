// Write wsgate listeners in JavaScript.
//
// A listener is an ES module exporting only the hooks it needs (onOpen,
// onMessage, onClose, onFirstOpen, onLastClose, onPush, onTimer, onError,
// onUpstreamOpen, onUpstreamMessage, onUpstreamClose); the build
// (build.mjs) wraps it with `toListener`, which fills in the defaults:
// accept every connection, ignore every event. Any hook may be `async`
// (return a Promise), e.g. to `await fetch(...)`: the component runs the
// event loop until the Promise settles, and the server waits for that.
//
// Hooks run in one of a small pool of instances and any instance may serve
// any event, so never keep state in module variables: per-connection data
// belongs in host.setAttribute, plugin-wide data in host.stateSet.

import * as host from 'wsgate:plugin/host@0.1.2';
import { getEnvironment } from 'wasi:cli/environment@0.2.12';

export { host };

/**
 * An environment variable the plugin's sidecar was granted (`[grants] env`),
 * or undefined: the environment holds nothing else.
 */
export function env(name) {
  return getEnvironment().find(([k]) => k === name)?.[1];
}

/** Constructors and accessors for the WIT `message` variant. */
export const Message = {
  text: (text) => ({ tag: 'text', val: String(text) }),
  binary: (bytes) => ({ tag: 'binary', val: bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes) }),
  /** The text of a text message, undefined for binary. */
  asText: (msg) => (msg.tag === 'text' ? msg.val : undefined),
};

/** What onOpen returns. */
export const OpenDecision = {
  accept: () => ({ tag: 'accept' }),
  /** Accept and send `msg` (a string is sent as text) before anything else. */
  greet: (msg) => ({ tag: 'greet', val: typeof msg === 'string' ? Message.text(msg) : msg }),
  /** Refuse the handshake with `status` (400-599) and a short reason. */
  reject: (status, reason) => ({ tag: 'reject', val: { status, reason: String(reason) } }),
};

/** Logs through the host's tracing under the plugin's own target. */
export function log(level, msg) {
  host.log(level, String(msg));
}

/**
 * The error code ('unknown-connection', 'closed', ...) of a failed host
 * call: the bindings throw a ComponentError carrying it as `payload`.
 */
export function hostError(err) {
  return err && typeof err === 'object' && 'payload' in err ? err.payload : undefined;
}

const lookup = (pairs, key) => pairs.find(([k]) => k === key)?.[1];

// Lookups on the handshake request, so listeners need not scan pair lists.
// The bindings hand over a plain object; giving it this prototype adds the
// methods without copying it.
const requestMethods = {
  /** The first query parameter named `key`. */
  queryParam(key) { return lookup(this.query, key); },
  /** The route parameter `key`, e.g. `channel` for `/ws/chat/{channel}`. */
  param(key) { return lookup(this.params, key); },
  /** A header by name (case-insensitive: the host lower-cases names). */
  header(name) { return lookup(this.headers, name.toLowerCase()); },
  cookie(name) { return lookup(this.cookies, name); },
};

const noop = () => {};

// A hook's result, or what it resolves to: an async hook's Promise settles
// inside the component before the result goes back to the host.
const then = (value, f) => (typeof value?.then === 'function' ? value.then(f) : f(value));

/**
 * The exports for a module of hooks, with defaults for the rest: one object
 * with every hook, which build.mjs exports as `listener`,
 * `upstreamListener` and `errorListener` (the WIT's three interfaces).
 */
export function toListener(hooks) {
  const onOpen = hooks.onOpen ?? OpenDecision.accept;
  return {
    onOpen: (conn, req) => then(onOpen(conn, Object.setPrototypeOf(req, requestMethods)), (d) => d ?? OpenDecision.accept()),
    onMessage: hooks.onMessage ?? noop,
    onClose: hooks.onClose ?? noop,
    onFirstOpen: hooks.onFirstOpen ?? noop,
    onLastClose: hooks.onLastClose ?? noop,
    onPush: hooks.onPush ?? noop,
    onTimer: hooks.onTimer ?? noop,
    onError: hooks.onError ?? noop,
    onUpstreamOpen: hooks.onUpstreamOpen ?? noop,
    onUpstreamMessage: hooks.onUpstreamMessage ?? noop,
    onUpstreamClose: hooks.onUpstreamClose ?? noop,
  };
}
