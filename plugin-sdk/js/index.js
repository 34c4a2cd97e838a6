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
//
// Channel history (0.1.2): a channel the sidecar's `[history] channels`
// records keeps its recent messages, each at a position (`EPOCH:OFFSET` as
// text, see Position). publishPositioned() publishes a text that carries
// its own position, publishRecorded() any message; history() and
// historyPages() read it back, e.g. to replay what a returning client
// missed. host.nodeChannels, nodeSubscribers, nodeTagged and
// nodeConnectionCount answer for this node only, where channels,
// subscribers, tagged and connectionCount answer for the whole cluster.
//
// Bursts (0.1.3): every plugin also exports onMessages (the WIT's
// batch-listener), which the server calls with the messages that arrived
// together from one connection. toListener() makes it a loop over the
// plugin's onMessage that ends after a message whose handling delivered
// to connections or closed one, which `host` notes (see below).

import * as bindings from 'wsgate:plugin/host@0.1.3';
import { getEnvironment } from 'wasi:cli/environment@0.2.12';

// Set by a delivering host call; cleared before each message of a batch.
let delivered = false;

// The host calls that deliver to connections or close one. onMessages must
// stop after a message that made one, because the server writes the
// earlier messages' replies before what such a call queued: had it gone
// on, a later reply would overtake what an earlier message sent. A call
// that fails still ends the batch, which costs a call but never reorders.
const DELIVERING = ['send', 'broadcast', 'sendToTag', 'publish', 'publishRecorded', 'close'];

/**
 * Every host call of the WIT (the generated bindings), the delivering ones
 * wrapped to note that they ran. Plugins reach the host through this
 * object; importing the bindings directly would go around the note.
 */
export const host = Object.freeze(Object.fromEntries(Object.entries(bindings).map(([name, call]) => [
  name,
  DELIVERING.includes(name)
    ? { [name](...args) { delivered = true; return call(...args); } }[name]
    : call,
])));

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

const U64_MAX = (1n << 64n) - 1n;

/** Positions in a channel's history: `{ epoch, offset }`, as text `EPOCH:OFFSET`. */
export const Position = {
  /**
   * The position written as `EPOCH:OFFSET` (a `since` query parameter, a
   * message's `pos`): the epoch is everything before the last ':'. Throws
   * a SyntaxError for an empty epoch or an offset that is not a decimal u64.
   */
  parse(text) {
    if (typeof text !== 'string') throw new SyntaxError(`a position is EPOCH:OFFSET text, not ${typeof text}`);
    const at = text.lastIndexOf(':');
    const epoch = text.slice(0, at);
    const digits = text.slice(at + 1);
    if (at <= 0 || !/^[0-9]{1,20}$/.test(digits) || BigInt(digits) > U64_MAX) {
      throw new SyntaxError(`not a position (EPOCH:OFFSET): ${JSON.stringify(text)}`);
    }
    return { epoch, offset: BigInt(digits) };
  },
  /** The `EPOCH:OFFSET` text of a position. */
  format: (pos) => `${pos.epoch}:${pos.offset}`,
};

// 32 hex characters no render function can guess, from WASI's random
// source (StarlingMonkey's crypto.getRandomValues reads wasi:random).
function sentinel() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

const asMessage = (msg) => (typeof msg === 'string' ? Message.text(msg) : msg);

/**
 * Publishes `msg` (a string is text) to `channel` and records it in the
 * channel's history; returns `{ delivered, position }`. Throws as host
 * calls do: hostError(e) is 'not-recorded' when the sidecar's
 * `[history] channels` does not match the channel.
 */
export function publishRecorded(channel, msg, except) {
  return host.publishRecorded(channel, { tag: 'plain', val: asMessage(msg) }, except);
}

/**
 * Publishes and records a text message that contains its own position,
 * which the host assigns only as it records it. `render(pos)` returns the
 * text with `pos` where the position goes, e.g.
 * `(pos) => JSON.stringify({ pos, text })`; it is called once with a random
 * placeholder that the host replaces with `EPOCH:OFFSET`. Throws an Error
 * if the text holds the placeholder other than exactly once; else as
 * publishRecorded().
 */
export function publishPositioned(channel, render, except) {
  const mark = sentinel();
  const text = render(mark);
  if (typeof text !== 'string') throw new TypeError(`render must return a string, not ${typeof text}`);
  const parts = text.split(mark);
  if (parts.length !== 2) {
    throw new Error(`render must put its argument in the text exactly once, not ${parts.length - 1} times`);
  }
  return host.publishRecorded(channel, { tag: 'positioned', val: { before: parts[0], after: parts[1] } }, except);
}

const sinceOf = (since) => (typeof since === 'string' ? Position.parse(since) : since ?? undefined);

/**
 * One page of `channel`'s history: `{ entries, latest, recovered }`, the
 * entries after `since` (a position or its text; undefined: all kept ones),
 * oldest first, at most `limit`. `recovered` is false when part of the gap
 * is gone; `entries` then start from the oldest kept one.
 */
export function history(channel, since, limit = 100) {
  return host.history(channel, sinceOf(since), limit);
}

/**
 * history() page after page, until the last entry reaches its page's
 * `latest`. Whether the gap was recovered is the first page's `recovered`;
 * should messages be dropped while it pages (a later page not recovered),
 * it stops there, and a client sees the gap in the offsets.
 */
export function* historyPages(channel, since, limit = 100) {
  since = sinceOf(since);
  for (let first = true; ; first = false) {
    const page = host.history(channel, since, limit);
    if (!first && !page.recovered) return;
    yield page;
    const last = page.entries.at(-1)?.position;
    if (!last || last.epoch !== page.latest.epoch || last.offset >= page.latest.offset) return;
    since = last;
  }
}

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

/**
 * The batch export's loop: onMessage for each message in turn, their
 * replies in order, ending after a message during which a delivering host
 * call ran (the server hands the rest to its next call). An async onMessage
 * is awaited before the next message, and the batch's result is then a
 * Promise; what onMessage throws or rejects with fails the whole call.
 */
function batchOf(onMessage) {
  return (conn, msgs) => {
    const replies = [];
    const from = (start) => {
      for (let i = start; i < msgs.length; i++) {
        delivered = false;
        const reply = onMessage(conn, msgs[i]);
        if (typeof reply?.then === 'function') {
          return reply.then((value) => {
            replies.push(value);
            return delivered ? replies : from(i + 1);
          });
        }
        replies.push(reply);
        if (delivered) break;
      }
      return replies;
    };
    return from(0);
  };
}

// A hook's result, or what it resolves to: an async hook's Promise settles
// inside the component before the result goes back to the host.
const then = (value, f) => (typeof value?.then === 'function' ? value.then(f) : f(value));

/**
 * The exports for a module of hooks, with defaults for the rest: one object
 * with every hook, which build.mjs exports as `listener`,
 * `upstreamListener`, `errorListener` and `batchListener` (the WIT's four
 * interfaces). `onMessages` is always the SDK's loop over `onMessage`.
 */
export function toListener(hooks) {
  const onOpen = hooks.onOpen ?? OpenDecision.accept;
  const onMessage = hooks.onMessage ?? noop;
  return {
    onOpen: (conn, req) => then(onOpen(conn, Object.setPrototypeOf(req, requestMethods)), (d) => d ?? OpenDecision.accept()),
    onMessage,
    onMessages: batchOf(onMessage),
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
