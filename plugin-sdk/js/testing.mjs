// Testing wsgate listeners in plain Node.js (20+): a FakeHost that behaves
// like the server's host for one plugin, to unit-test hooks without building
// a component, and serve(), which runs a real wsgate with a built plugin.
// README.md, "Testing a listener", shows both.
//
// Importing this module registers module hooks (testing-loader.mjs) that
// resolve `wsgate` and the SDK's host import, so it must run before the
// listener is loaded: import it first and load the listener with
// loadListener(), or preload it with `node --import`.
//
// Channel history follows the server's rules when the FakeHost is given the
// sidecar's `[history]` table (`new FakeHost({ history: { channels: ['*'] } })`):
// sizes, TTLs on the virtual clock, epochs (newEpoch() plays a lost
// history), `recovered`. A cluster is not modelled: the node* calls answer
// as their cluster-wide twins.

import { AsyncLocalStorage } from 'node:async_hooks';
import { spawn } from 'node:child_process';
import { accessSync, constants as fsConstants, rmSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { register } from 'node:module';
import { createServer, connect as tcpConnect } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { basename, delimiter, join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** The host calls of wit/wsgate.wit (interface host), as the bindings name them. */
const HOST_CALLS = [
  'send', 'broadcast', 'close',
  'subscribe', 'unsubscribe', 'publish', 'publishRecorded', 'history',
  'channels', 'subscribers', 'nodeChannels', 'nodeSubscribers',
  'connections', 'connectionCount', 'nodeConnectionCount',
  'getAttribute', 'setAttribute',
  'tag', 'untag', 'tagged', 'nodeTagged', 'sendToTag',
  'stateGet', 'stateSet', 'stateIncrement', 'stateCompareAndSwap', 'stateSetExpiring', 'stateKeys',
  'upstreamConnect', 'upstreamSend', 'upstreamClose', 'upstreams',
  'setTimer', 'cancelTimer',
  'log',
];
const CURRENT_HOST_KEY = 'wsgate.testing.currentHost';
const CURRENT_HOST = Symbol.for(CURRENT_HOST_KEY);
// The FakeHost whose hook is running, kept across the awaits of an async
// hook: its host calls and fetches go to that host even if another hook or
// FakeHost ran meanwhile. Outside hooks, CURRENT_HOST answers host calls.
const HOOK_HOST_KEY = 'wsgate.testing.hookHost';
const hookHost = (globalThis[Symbol.for(HOOK_HOST_KEY)] ??= new AsyncLocalStorage());
// What a FakeConnection asks of its host: symbol-keyed, so no plugin or
// test mistakes them for host calls.
const CLIENT_MESSAGE = Symbol('client message');
const CLIENT_BATCH = Symbol('client batch');
const CLIENT_BURST = Symbol('client burst');
const CLIENT_CLOSE = Symbol('client close');
const UPSTREAM_EVENT = Symbol('upstream event');
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

// Once per process: this module may be reached both through --import and
// from a test file, and two sets of hooks would only slow resolution down.
const REGISTERED = Symbol.for('wsgate.testing.registered');
if (!globalThis[REGISTERED]) {
  globalThis[REGISTERED] = true;
  register('./testing-loader.mjs', import.meta.url, {
    data: { hostCalls: HOST_CALLS, currentHostKey: CURRENT_HOST_KEY, hookHostKey: HOOK_HOST_KEY },
  });
}

// A plugin's fetch(): inside a hook it goes to that hook's FakeHost (see
// FakeHost.http); anywhere else, e.g. a test talking to a real server, it
// is Node's own.
const FETCH = Symbol('fetch');
const FETCH_INSTALLED = Symbol.for('wsgate.testing.fetch');
if (!globalThis[FETCH_INSTALLED]) {
  const nodeFetch = globalThis.fetch;
  globalThis[FETCH_INSTALLED] = true;
  globalThis.fetch = function fetch(input, init) {
    const host = hookHost.getStore();
    return host ? host[FETCH](input, init) : nodeFetch(input, init);
  };
}

// Imported only now: index.js imports the host interface, which resolves
// only once the hooks above are registered.
const sdk = await import('./index.js');
export const {
  host, log, Message, OpenDecision, hostError, toListener,
  Position, publishRecorded, publishPositioned, history, historyPages,
} = sdk;

/**
 * What the ComponentizeJS bindings throw when a host call returns an
 * `error`: jco's ComponentError, whose `payload` (and message) is the code,
 * so the SDK's hostError() reads it the same way here as in the server.
 */
export class ComponentError extends Error {
  constructor(value) {
    const enumerable = typeof value !== 'string';
    super(enumerable ? `${String(value)} (see error.payload)` : value);
    Object.defineProperty(this, 'payload', { value, enumerable });
  }
}

/** The server's default `[limits]` that host calls check. */
export const DEFAULT_LIMITS = Object.freeze({
  stateKeysListed: 1000,
  upstreamsPerPlugin: 16,
  maxMessageSize: 1 << 20,
  maxNameLen: 256,
  channelsPerConnection: 64,
  tagsPerConnection: 32,
  attributesPerConnection: 64,
  attributeBytes: 64 << 10,
  stateBytes: 16 << 20,
  timersPerPlugin: 64,
  minTimerMs: 10,
  deliveriesPerHook: 100_000,
});

// What one state entry costs beyond its key and value (registry/state.rs).
const STATE_ENTRY_OVERHEAD = 64;
const MAX_CLOSE_REASON_BYTES = 123;
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

// Argument conversions as jco's generated bindings do them, so a plugin
// that passes a bad value fails here as it would in the server.
const u64 = (v) => BigInt.asUintN(64, BigInt(v));
const s64 = (v) => BigInt.asIntN(64, BigInt(v));
const u32 = (v) => v >>> 0;
const u16 = (v) => (v >>> 0) % 65536;
const optional = (v, convert) => (v === undefined || v === null ? undefined : convert(v));

function string(s) {
  if (typeof s !== 'string') throw new TypeError(`expected a string, received [${typeof s}]`);
  return s;
}

// The host gets its own copy, as it does of a lowered list<u8>.
function bytes(v) {
  if (v instanceof ArrayBuffer) return new Uint8Array(v.slice(0));
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength).slice();
  throw new TypeError(`expected a Uint8Array, received [${typeof v}]`);
}

function message(m) {
  switch (m?.tag) {
    case 'text': return { tag: 'text', val: string(m.val) };
    case 'binary': return { tag: 'binary', val: bytes(m.val) };
    default: throw new TypeError(`invalid variant tag value \`${JSON.stringify(m?.tag)}\` specified for \`Message\``);
  }
}

function logLevel(level) {
  if (!LOG_LEVELS.includes(level)) throw new TypeError(`"${level}" is not one of the cases of log-level`);
  return level;
}

// humantime's units, as the server reads `ttl = "5m"`, in milliseconds.
const DURATION_UNITS = new Map([
  [['nsec', 'ns'], 1e-6], [['usec', 'us'], 1e-3], [['msec', 'ms'], 1],
  [['seconds', 'second', 'secs', 'sec', 's'], 1000],
  [['minutes', 'minute', 'mins', 'min', 'm'], 60_000],
  [['hours', 'hour', 'hrs', 'hr', 'h'], 3_600_000],
  [['days', 'day', 'd'], 86_400_000],
  [['weeks', 'week', 'w'], 604_800_000],
  [['months', 'month', 'M'], 2_630_016_000],
  [['years', 'year', 'y'], 31_557_600_000],
].flatMap(([names, ms]) => names.map((n) => [n, ms])));

/** A humantime duration ("5m", "90s", "1h 30m") in milliseconds. */
function durationMs(text) {
  const part = /\s*([0-9]+)\s*([A-Za-z]+)/y;
  const trimmed = text.trim();
  let total = 0;
  for (part.lastIndex = 0; part.lastIndex < trimmed.length;) {
    const m = part.exec(trimmed);
    if (!m || !DURATION_UNITS.has(m[2])) throw new RangeError(`not a duration: ${JSON.stringify(text)} (e.g. "5m", "90s", "1h 30m")`);
    total += Number(m[1]) * DURATION_UNITS.get(m[2]);
  }
  if (!trimmed) throw new RangeError('an empty duration');
  return Math.floor(total);
}

/** The most messages `[history] size` may keep per channel. */
const MAX_HISTORY_SIZE = 10_000;

/**
 * A sidecar's `[history]` table with the server's defaults, checked as the
 * server checks it; `ttlMs` is the TTL in milliseconds.
 */
function readHistoryConfig({ channels = [], size = 100, ttl = '5m', ...rest }) {
  const unknown = Object.keys(rest);
  if (unknown.length) throw new TypeError(`unknown [history] keys: ${unknown.join(', ')}`);
  if (!Array.isArray(channels)) throw new TypeError('history channels is an array of patterns, e.g. ["*"]');
  if (!Number.isInteger(size) || size < 1 || size > MAX_HISTORY_SIZE) throw new RangeError(`history size must be 1-${MAX_HISTORY_SIZE}, not ${size}`);
  const ttlMs = typeof ttl === 'string' ? durationMs(ttl) : Number(ttl);
  if (!(ttlMs > 0)) throw new RangeError(`history ttl must be positive, not ${ttl}`);
  // `*` matches any run of characters; everything else is literal.
  const literal = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const patterns = channels.map((p) => new RegExp(`^${string(p).split('*').map(literal).join('.*')}$`, 's'));
  return { channels: [...channels], size, ttl, ttlMs, records: (channel) => patterns.some((re) => re.test(channel)) };
}

/** One recorded channel, as the server's memory backend keeps it. */
class ChannelHistory {
  // 16 lowercase hex characters, as the host makes.
  epoch = randomBytes(8).toString('hex');
  /** Offsets given out in this epoch. */
  last = 0n;
  /** The newest offset dropped by size or age. */
  droppedThrough = 0n;
  /** `{ offset, msg, at }`, oldest first. */
  entries = [];

  expire(now, ttlMs) {
    while (this.entries.length && this.entries[0].at + ttlMs <= now) this.droppedThrough = this.entries.shift().offset;
  }

  record(msg, now, size) {
    this.last += 1n;
    this.entries.push({ offset: this.last, msg, at: now });
    while (this.entries.length > size) this.droppedThrough = this.entries.shift().offset;
    return { epoch: this.epoch, offset: this.last };
  }

  page(since, limit) {
    const recovered = since === undefined
      ? this.droppedThrough === 0n
      : since.epoch === this.epoch && this.droppedThrough <= since.offset && since.offset <= this.last;
    const after = since !== undefined && recovered ? since.offset : 0n;
    const entries = this.entries.filter((e) => e.offset > after).slice(0, limit)
      .map((e) => ({ position: { epoch: this.epoch, offset: e.offset }, msg: e.msg }));
    return { entries, latest: { epoch: this.epoch, offset: this.last }, recovered };
  }
}

const utf8Length = (s) => Buffer.byteLength(s, 'utf8');
const messageSize = (m) => (m.tag === 'text' ? utf8Length(m.val) : m.val.length);
const isSendableCloseCode = (c) => (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);

/**
 * Runs a driver written as a generator that yields each hook's result: in
 * step while hooks return plain values, so a test of synchronous hooks
 * stays synchronous; from the first Promise on (an async hook), the rest
 * waits for it and the driver returns a Promise, as the component's
 * export waits for the hook's Promise to settle. A hook's error (thrown
 * or rejected) is thrown into the generator where the hook was called.
 */
function drive(gen) {
  const step = (method, arg) => {
    for (;;) {
      const { value, done } = gen[method](arg);
      if (done) return value;
      if (typeof value?.then === 'function') {
        return Promise.resolve(value).then((v) => step('next', v), (e) => step('throw', e));
      }
      method = 'next';
      arg = value;
    }
  };
  return step('next', undefined);
}

function openDecision(d) {
  switch (d?.tag) {
    case 'accept': return { tag: 'accept' };
    case 'greet': return { tag: 'greet', val: message(d.val) };
    case 'reject': return { tag: 'reject', val: { status: u16(d.val?.status), reason: string(d.val?.reason) } };
    default: throw new TypeError(`invalid variant tag value \`${JSON.stringify(d?.tag)}\` specified for \`OpenDecision\``);
  }
}

const pairs = (v) => (v === undefined ? [] : Array.isArray(v) ? v.map(([k, x]) => [String(k), String(x)]) : Object.entries(v).map(([k, x]) => [k, String(x)]));
const lookup = (list, key) => list.find(([k]) => k === key)?.[1];

/** `{name}` matches one segment, `{*rest}` the rest of the path; undefined if the path does not match. */
function matchRoute(pattern, path) {
  const want = pattern.split('/');
  const got = path.split('/');
  const params = [];
  for (let i = 0; i < want.length; i++) {
    const catchAll = /^\{\*(.+)\}$/.exec(want[i]);
    if (catchAll) {
      const rest = got.slice(i).join('/');
      return rest ? [...params, [catchAll[1], rest]] : undefined;
    }
    if (i >= got.length) return undefined;
    const param = /^\{(.+)\}$/.exec(want[i]);
    if (param && got[i]) params.push([param[1], got[i]]);
    else if (want[i] !== got[i]) return undefined;
  }
  return want.length === got.length ? params : undefined;
}

// As the server reads the cookie header (http/upgrade.rs).
function parseCookies(header) {
  return header.split(';').flatMap((pair) => {
    const at = pair.indexOf('=');
    if (at < 0) return [];
    const k = pair.slice(0, at).trim();
    const v = pair.slice(at + 1).trim().replace(/^"+|"+$/g, '');
    return k ? [[k, v]] : [];
  });
}

const HOOKS = [
  'onOpen', 'onMessage', 'onClose', 'onFirstOpen', 'onLastClose', 'onPush', 'onTimer',
  'onError', 'onUpstreamOpen', 'onUpstreamMessage', 'onUpstreamClose',
];

// A module of hooks passed as it is lacks the defaults toListener() adds,
// and would fail later on a missing hook with a less helpful message.
function listenerOf(listener) {
  const missing = HOOKS.filter((hook) => typeof listener?.[hook] !== 'function');
  if (missing.length) {
    throw new TypeError(`not a listener (no ${missing.join(', ')}): pass loadListener(path) or toListener(hooks)`);
  }
  return listener;
}

/**
 * Loads a listener module (a plugin's index.js) the way the build does:
 * its exported hooks, wrapped by the SDK's toListener().
 * @param {string | URL} path
 */
export async function loadListener(path) {
  const url = path instanceof URL || /^file:/.test(path) ? String(path) : pathToFileURL(path).href;
  return toListener(await import(url));
}

/**
 * wsgate's host for one plugin, in memory: connections, attributes,
 * channels, tags, state, upstreams, timers, logs and outbound HTTP, with
 * the server's checks and errors. Its host-call methods are the ones the
 * plugin's `host` reaches (while it is the current FakeHost: the one
 * running a hook, else the newest one); open(), push(), fireTimers(),
 * advanceTime(), hookFailed() and the upstream handles drive the plugin.
 *
 * Hooks may be async. A driver method whose hooks all return plain values
 * returns its result directly; once a hook returns a Promise, the driver
 * waits for it and returns a Promise. `await` works on both, so a test can
 * always write `await host.open(...)`.
 */
export class FakeHost {
  /**
   * Every `publish` and `publishRecorded`, in order: `{ channel, msg,
   * except, reached, position }`; `msg` as delivered (a positioned text
   * with its position filled in), `position` undefined if not recorded.
   */
  publishes = [];
  /**
   * The sidecar's `[history]` (`{ channels, size, ttl, ttlMs }`), or
   * undefined: no channel is recorded.
   */
  historyConfig;
  /** Set to a history error code (e.g. 'unavailable': Redis is down) to make publishRecorded and history fail with it. */
  historyError;
  /** Every successful `close` the plugin made: `{ conn, code, reason }`. */
  closes = [];
  /** Every `log` line: `{ level, msg }`. */
  logs = [];
  /** Virtual milliseconds, moved only by advanceTime(). */
  now = 0;
  /**
   * Answers to the plugin's fetch(), by URL or `'METHOD URL'` (which wins):
   * a Response, a string (200, text), an object or array (200, JSON), a
   * `{ status, headers, body }` record, an Error (the fetch rejects, with
   * it as the `cause` of StarlingMonkey's "NetworkError when attempting to
   * fetch resource" TypeError), or a function of the Request returning one
   * of these (or a Promise of one).
   */
  http = new Map();
  /** Answers what `http` does not: a function of the Request, as above; undefined means no answer. */
  httpHandler;
  /** Every request the plugin fetched, in order: a Request (body unread). */
  httpRequests = [];
  /** The plugin's granted environment variables, which `env()` reads. */
  env = {};
  /** Every upstream the plugin opened, by id: FakeUpstream handles, closed ones too. */
  upstreamsOpened = new Map();

  #conns = new Map();
  #histories = new Map();
  #channels = new Map();
  #tags = new Map();
  #state = new Map();
  #expiry = new Map();
  #stateBytes = 0;
  #timers = new Map();
  #routeOpen = new Map();
  #nextConn = 1n;
  #lastTimer = 0n;
  #lastUpstream = 0n;
  #budget;
  // Timers fire into the plugin version in service: the listener most
  // recently passed to open() or push().
  #listener;
  // The listeners whose hooks are running: an upstream belongs to the one
  // that opened it.
  #running = [];

  /**
   * @param {{ routes?: string[], subprotocols?: string[], limits?: Partial<typeof DEFAULT_LIMITS>,
   *   http?: Record<string, unknown> | Map<string, unknown>, httpHandler?: (req: Request) => unknown,
   *   allowedHosts?: string[], env?: Record<string, string> }} [options]
   *   `routes`, `subprotocols` and `allowedHosts` (hostnames for fetch and
   *   upstreams; default: any) as in the plugin's sidecar; `http` and
   *   `httpHandler` answer fetch() (see the fields of the same names);
   *   `env` the granted environment variables; `history` the sidecar's
   *   `[history]` table (`{ channels, size, ttl }`, e.g. `{ channels: ['*'] }`).
   *   As in the server, what is published to a connection's channels and
   *   tags while its on-open runs reaches it after everything on-open sent it.
   */
  constructor({ routes = [], subprotocols = [], limits = {}, http = {}, httpHandler, allowedHosts, env = {}, history } = {}) {
    this.env = { ...env };
    this.historyConfig = history === undefined ? undefined : readHistoryConfig(history);
    this.routes = routes;
    this.subprotocols = subprotocols;
    this.limits = { ...DEFAULT_LIMITS, ...limits };
    this.http = new Map(http instanceof Map ? http : Object.entries(http));
    this.httpHandler = httpHandler;
    this.allowedHosts = allowedHosts === undefined ? undefined : new Set(allowedHosts);
    this.#budget = this.limits.deliveriesPerHook;
    globalThis[CURRENT_HOST] = this;
  }

  // ---- driving the plugin ----

  /**
   * A client connects: `on-first-open` for its route's first connection,
   * the `channel` route parameter subscribed, then `on-open`.
   * @param {object} listener from loadListener() or toListener()
   * @param {string | object} [request] a path (with ?query) or
   *   `{ path, route, params, query, headers, cookies, remoteAddr, subprotocols, protocol }`
   * @returns the connection, or a Promise of it if a hook was async
   */
  open(listener, request = {}) {
    return drive(this.#open(listener, request));
  }

  *#open(listener, request) {
    this.#listener = listenerOf(listener);
    const id = this.#nextConn++;
    const req = this.#request(typeof request === 'string' ? { path: request } : request, id);
    const conn = {
      id, route: req.route, path: req.path, listener,
      attributes: new Map(), channels: new Set(), tags: new Set(),
      shut: false, closing: undefined, ended: false, received: [],
      // While on-open runs: fan-out deliveries, which wait for it to return.
      deferred: undefined,
    };
    this.#conns.set(id, conn);
    let decision;
    try {
      yield* this.#enterRoute(listener, req.route);
      const channel = lookup(req.params, 'channel');
      if (channel !== undefined && utf8Length(channel) <= this.limits.maxNameLen) this.#join(this.#channels, conn, 'channels', channel);
      conn.deferred = [];
      decision = openDecision(yield this.#hook(listener, () => listener.onOpen(id, req)));
    } catch (e) {
      // The server refuses with 500 and undoes the registration.
      conn.deferred = undefined;
      yield* this.#end(conn);
      throw e;
    }
    conn.received.push(...conn.deferred);
    conn.deferred = undefined;
    const handle = new FakeConnection(this, conn, decision);
    if (decision.tag === 'reject') {
      const { status, reason } = decision.val;
      handle.rejection = status >= 400 && status <= 599 ? { status, reason } : { status: 500, reason: 'connection refused' };
      conn.received.length = 0;
      yield* this.#end(conn);
    } else if (decision.tag === 'greet' && messageSize(decision.val) > this.limits.maxMessageSize) {
      handle.rejection = { status: 500, reason: 'the listener failed to open the connection' };
      conn.received.length = 0;
      yield* this.#finish(conn, 1011, 'internal error');
    } else if (decision.tag === 'greet') {
      conn.received.unshift(decision.val);
    }
    return handle;
  }

  /**
   * A push through the server's publish API: `on-push`.
   * @param {object} listener
   * @param {string | Uint8Array | object} payload a string is text, bytes binary
   */
  push(listener, payload) {
    this.#listener = listenerOf(listener);
    const msg = message(typeof payload === 'string' ? Message.text(payload)
      : ArrayBuffer.isView(payload) || payload instanceof ArrayBuffer ? Message.binary(payload)
      : payload);
    return drive((function* push(host) {
      yield host.#hook(listener, () => listener.onPush(msg));
    })(this));
  }

  /**
   * What the server does after a hook for `conn` threw or overran its
   * deadline: `on-error` with `detail`, into the connection's listener (or
   * `listener`). Only the hook runs here; the server also closes the
   * connection with 1011.
   * @param {bigint | number | { id: bigint }} conn an id or a connection handle
   */
  hookFailed(conn, detail = 'on-message trapped', listener) {
    const id = u64(typeof conn === 'object' ? conn.id : conn);
    listener ??= this.#conns.get(id)?.listener ?? this.#listener;
    if (!listener) throw new Error('no listener to report the error to: pass one');
    listenerOf(listener);
    return drive((function* failed(host) {
      yield host.#hook(listener, () => listener.onError(id, string(detail)));
    })(this));
  }

  /** Timers now pending: `{ id, delayMs, repeat, due }` (due in virtual ms). */
  get pendingTimers() {
    return [...this.#timers.values()].map((t) => ({ ...t }));
  }

  /**
   * Fires every pending timer once, soonest first, whatever its delay: a
   * one-shot timer is then gone, a repeating one stays. Timers set while
   * these fire wait for the next call.
   * @returns {bigint[]} the ids fired (or a Promise of them)
   */
  fireTimers() {
    return drive(this.#fireTimers());
  }

  *#fireTimers() {
    const fired = [];
    for (const timer of this.#dueOrder([...this.#timers.values()])) {
      // An earlier timer's hook may have cancelled this one.
      if (!this.#timers.has(timer.id)) continue;
      timer.due = this.now + timer.delayMs;
      yield* this.#fire(timer);
      fired.push(timer.id);
    }
    return fired;
  }

  /**
   * Moves virtual time on by `ms`, firing each timer as often as it falls
   * due meanwhile, in order; state keys set with a TTL expire on the way.
   * @returns {bigint[]} the ids fired, once per firing (or a Promise of them)
   */
  advanceTime(ms) {
    return drive(this.#advanceTime(ms));
  }

  *#advanceTime(ms) {
    const until = this.now + ms;
    const fired = [];
    for (;;) {
      const [next] = this.#dueOrder([...this.#timers.values()].filter((t) => t.due <= until));
      if (!next) break;
      this.now = next.due;
      next.due += Math.max(1, next.delayMs);
      yield* this.#fire(next);
      fired.push(next.id);
    }
    this.now = until;
    this.#expireState();
    return fired;
  }

  /**
   * History is lost, as when the server restarts with in-memory history or
   * a Redis stream is deleted: `channel` (every channel if undefined)
   * starts a new epoch, empty, its offsets from 1 again.
   */
  newEpoch(channel) {
    if (channel === undefined) this.#histories.clear();
    else this.#histories.delete(string(channel));
  }

  /** The handle of an upstream the plugin opened, by id. */
  upstream(id) {
    return this.upstreamsOpened.get(u64(id));
  }

  /** The handle of an open connection, e.g. for an id a plugin stored. */
  connection(id) {
    const conn = this.#conns.get(u64(id));
    return conn && new FakeConnection(this, conn, conn.decision);
  }

  // ---- host calls (interface host) ----

  send(conn, msg) {
    const id = u64(conn);
    msg = message(msg);
    const c = this.#conn(id);
    if (this.#deliver(msg, [c], undefined, true) === 0) throw new ComponentError('closed');
  }

  broadcast(msg, except) {
    msg = message(msg);
    except = optional(except, u64);
    // The WIT gives broadcast no error: too big or over budget reaches nobody.
    try {
      return this.#deliver(msg, [...this.#conns.values()], except);
    } catch (e) {
      if (e instanceof ComponentError) return 0;
      throw e;
    }
  }

  close(conn, code, reason) {
    const id = u64(conn);
    code = u16(code);
    reason = string(reason);
    if (!isSendableCloseCode(code) || utf8Length(reason) > MAX_CLOSE_REASON_BYTES) throw new ComponentError('invalid-argument');
    const c = this.#conn(id);
    if (c.shut) throw new ComponentError('closed');
    c.shut = true;
    c.closing = { code, reason };
    this.closes.push({ conn: id, code, reason });
  }

  subscribe(conn, channel) {
    this.#joinChecked(this.#channels, 'channels', u64(conn), string(channel), this.limits.channelsPerConnection);
  }

  unsubscribe(conn, channel) {
    const id = u64(conn);
    channel = string(channel);
    this.#leave(this.#channels, this.#conn(id), 'channels', channel);
  }

  publish(channel, msg, except) {
    channel = string(channel);
    msg = message(msg);
    except = optional(except, u64);
    this.#checkName(channel);
    this.#checkDeliverable(msg);
    // The old call records too, as plain, on a recorded channel.
    const position = this.#recorded(channel) ? this.#record(channel, msg) : undefined;
    const reached = this.#deliver(msg, this.#members(this.#channels, channel), except);
    this.publishes.push({ channel, msg, except, reached, position });
    return reached;
  }

  publishRecorded(channel, publication, except) {
    channel = string(channel);
    except = optional(except, u64);
    let msg;
    let positioned;
    switch (publication?.tag) {
      case 'plain': msg = message(publication.val); break;
      case 'positioned': positioned = { before: string(publication.val?.before), after: string(publication.val?.after) }; break;
      default: throw new TypeError(`invalid variant tag value \`${JSON.stringify(publication?.tag)}\` specified for \`Publication\``);
    }
    if (channel.length === 0 || utf8Length(channel) > this.limits.maxNameLen) throw new ComponentError('invalid-argument');
    if (!this.#recorded(channel)) throw new ComponentError('not-recorded');
    if (this.historyError !== undefined) throw new ComponentError(this.historyError);
    const history = this.#history(channel);
    if (positioned) msg = Message.text(`${positioned.before}${history.epoch}:${history.last + 1n}${positioned.after}`);
    // Too big (invalid-argument) or past the hook's delivery budget
    // (limit-reached), as the host says: nothing recorded.
    this.#checkDeliverable(msg);
    const position = this.#record(channel, msg);
    const reached = this.#deliver(msg, this.#members(this.#channels, channel), except);
    this.publishes.push({ channel, msg, except, reached, position });
    return { delivered: reached, position: { ...position } };
  }

  history(channel, since, limit) {
    channel = string(channel);
    limit = u32(limit);
    if (since !== undefined && since !== null) since = { epoch: string(since.epoch), offset: u64(since.offset) };
    else since = undefined;
    if (channel.length === 0 || utf8Length(channel) > this.limits.maxNameLen || limit === 0) throw new ComponentError('invalid-argument');
    if (!this.#recorded(channel)) throw new ComponentError('not-recorded');
    if (this.historyError !== undefined) throw new ComponentError(this.historyError);
    return this.#history(channel).page(since, Math.min(limit, this.historyConfig.size));
  }

  channels() {
    return [...this.#channels.keys()];
  }

  subscribers(channel) {
    return BigUint64Array.from(this.#channels.get(string(channel)) ?? []);
  }

  // One node: the whole cluster.
  nodeChannels() {
    return this.channels();
  }

  nodeSubscribers(channel) {
    return this.subscribers(channel);
  }

  connections() {
    return BigUint64Array.from(this.#conns.keys());
  }

  connectionCount() {
    return this.#conns.size;
  }

  nodeConnectionCount() {
    return this.connectionCount();
  }

  getAttribute(conn, key) {
    const id = u64(conn);
    key = string(key);
    return this.#conn(id).attributes.get(key);
  }

  setAttribute(conn, key, value) {
    const id = u64(conn);
    key = string(key);
    value = optional(value, string);
    this.#checkName(key);
    const attrs = this.#conn(id).attributes;
    if (value === undefined) {
      attrs.delete(key);
      return;
    }
    const { attributeBytes, attributesPerConnection } = this.limits;
    if (utf8Length(value) > attributeBytes) throw new ComponentError('invalid-argument');
    if (attrs.size >= attributesPerConnection && !attrs.has(key)) throw new ComponentError('limit-reached');
    let held = 0;
    for (const [k, v] of attrs) if (k !== key) held += utf8Length(k) + utf8Length(v);
    if (held + utf8Length(key) + utf8Length(value) > attributeBytes) throw new ComponentError('limit-reached');
    attrs.set(key, value);
  }

  tag(conn, tag) {
    this.#joinChecked(this.#tags, 'tags', u64(conn), string(tag), this.limits.tagsPerConnection);
  }

  untag(conn, tag) {
    const id = u64(conn);
    tag = string(tag);
    this.#leave(this.#tags, this.#conn(id), 'tags', tag);
  }

  tagged(tag) {
    return BigUint64Array.from(this.#tags.get(string(tag)) ?? []);
  }

  nodeTagged(tag) {
    return this.tagged(tag);
  }

  sendToTag(tag, msg, except) {
    tag = string(tag);
    msg = message(msg);
    except = optional(except, u64);
    this.#checkName(tag);
    return this.#deliver(msg, this.#members(this.#tags, tag), except);
  }

  stateGet(key) {
    key = string(key);
    this.#expireState();
    return this.#state.get(key)?.slice();
  }

  stateSet(key, value) {
    key = string(key);
    value = optional(value, bytes);
    this.#checkName(key);
    this.#expireState();
    this.#store(key, value);
    this.#expiry.delete(key);
  }

  stateIncrement(key, delta) {
    key = string(key);
    delta = s64(delta);
    this.#checkStateKey(key);
    this.#expireState();
    const current = this.#state.get(key);
    const text = current === undefined ? '0' : Buffer.from(current).toString('latin1');
    if (!/^[+-]?[0-9]+$/.test(text)) throw new ComponentError('not-a-number');
    const value = BigInt(text);
    const result = value + delta;
    if (value !== BigInt.asIntN(64, value) || result !== BigInt.asIntN(64, result)) throw new ComponentError('not-a-number');
    this.#store(key, new TextEncoder().encode(String(result)));
    return result;
  }

  stateCompareAndSwap(key, expected, new_) {
    key = string(key);
    expected = optional(expected, bytes);
    new_ = optional(new_, bytes);
    this.#checkStateKey(key);
    this.#expireState();
    const current = this.#state.get(key);
    const same = current === undefined || expected === undefined
      ? current === expected
      : Buffer.from(current).equals(Buffer.from(expected));
    if (!same) return false;
    this.#store(key, new_);
    this.#expiry.delete(key);
    return true;
  }

  stateSetExpiring(key, value, ttlMs) {
    key = string(key);
    value = bytes(value);
    ttlMs = u64(ttlMs);
    this.#checkStateKey(key);
    if (ttlMs === 0n) throw new ComponentError('invalid-argument');
    this.#expireState();
    this.#store(key, value);
    this.#expiry.set(key, this.now + Number(ttlMs));
  }

  stateKeys(prefix, limit) {
    prefix = string(prefix);
    limit = Math.min(u32(limit), this.limits.stateKeysListed);
    this.#expireState();
    return [...this.#state.keys()]
      .filter((k) => k.startsWith(prefix))
      .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
      .slice(0, limit);
  }

  /** The state as it stands, for assertions: key -> bytes. */
  get state() {
    this.#expireState();
    return new Map([...this.#state].map(([k, v]) => [k, v.slice()]));
  }

  upstreamConnect(url, protocols, headers) {
    url = string(url);
    if (!Array.isArray(protocols)) throw new TypeError('protocols must be an array of strings');
    protocols = protocols.map(string);
    if (!Array.isArray(headers)) throw new TypeError('headers must be an array of [name, value] pairs');
    headers = headers.map(([k, v]) => [string(k), string(v)]);
    let parsed;
    try {
      parsed = new URL(url);
    } catch {
      throw new ComponentError('invalid-url');
    }
    if ((parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') || !parsed.hostname) throw new ComponentError('invalid-url');
    if (!this.#granted(parsed.hostname)) throw new ComponentError('denied');
    if (headers.some(([k, v]) => !TOKEN.test(k) || /[\r\n\0]/.test(v))
      || protocols.some((p) => p.length === 0 || utf8Length(p) > this.limits.maxNameLen)) {
      throw new ComponentError('invalid-argument');
    }
    if (this.upstreams().length >= this.limits.upstreamsPerPlugin) throw new ComponentError('limit-reached');
    const id = ++this.#lastUpstream;
    const listener = this.#running.at(-1) ?? this.#listener;
    const state = { id, url, protocols, headers, listener, status: 'connecting', sent: [], closeSent: undefined, closed: undefined };
    this.upstreamsOpened.set(id, new FakeUpstream(this, state));
    return id;
  }

  upstreamSend(id, msg) {
    const up = this.#upstream(u64(id));
    msg = message(msg);
    if (up.status === 'closing') throw new ComponentError('closed');
    if (messageSize(msg) > this.limits.maxMessageSize) throw new ComponentError('invalid-argument');
    up.sent.push(msg);
  }

  upstreamClose(id, code, reason) {
    id = u64(id);
    code = u16(code);
    reason = string(reason);
    if (!isSendableCloseCode(code) || utf8Length(reason) > MAX_CLOSE_REASON_BYTES) throw new ComponentError('invalid-argument');
    const up = this.#upstream(id);
    if (up.status === 'closing') throw new ComponentError('closed');
    up.status = 'closing';
    up.closeSent = { code, reason };
  }

  upstreams() {
    return BigUint64Array.from([...this.upstreamsOpened.values()]
      .filter((u) => u.status === 'connecting' || u.status === 'open')
      .map((u) => u.id));
  }

  setTimer(delayMs, repeat) {
    const delay = u32(delayMs);
    repeat = Boolean(repeat);
    if (delay < this.limits.minTimerMs) throw new ComponentError('invalid-argument');
    if (this.#timers.size >= this.limits.timersPerPlugin) throw new ComponentError('limit-reached');
    const id = ++this.#lastTimer;
    this.#timers.set(id, { id, delayMs: delay, repeat, due: this.now + delay });
    return id;
  }

  cancelTimer(id) {
    return this.#timers.delete(u64(id));
  }

  log(level, msg) {
    this.logs.push({ level: logLevel(level), msg: string(msg) });
  }

  // ---- internals ----

  // Runs one hook call: this host is the one the plugin reaches (for the
  // whole of an async hook), with a fresh delivery budget, as each hook
  // call gets in the server. Returns what the hook returns: a Promise
  // for an async hook, which the driver (see drive()) waits for.
  #hook(listener, call) {
    globalThis[CURRENT_HOST] = this;
    this.#budget = this.limits.deliveriesPerHook;
    this.#running.push(listener);
    try {
      return hookHost.run(this, call);
    } finally {
      this.#running.pop();
    }
  }

  #store(key, value) {
    const cost = (v) => (v === undefined ? 0 : utf8Length(key) + v.length + STATE_ENTRY_OVERHEAD);
    const used = this.#stateBytes - cost(this.#state.get(key)) + cost(value);
    if (used > this.limits.stateBytes) throw new ComponentError('limit-reached');
    this.#stateBytes = used;
    if (value === undefined) {
      this.#state.delete(key);
      this.#expiry.delete(key);
    } else {
      this.#state.set(key, value);
    }
  }

  #checkStateKey(key) {
    if (key.length === 0 || utf8Length(key) > this.limits.maxNameLen) throw new ComponentError('invalid-argument');
  }

  // Keys whose TTL ran out on the virtual clock are gone, and free their bytes.
  #expireState() {
    for (const [key, at] of this.#expiry) if (at <= this.now) this.#store(key, undefined);
  }

  #granted(hostname) {
    return this.allowedHosts === undefined || this.allowedHosts.has(hostname);
  }

  #upstream(id) {
    const up = this.upstreamsOpened.get(id);
    if (!up || up.status === 'closed') throw new ComponentError('unknown-upstream');
    return up;
  }

  // The far end of an upstream acts: the hook runs into the listener that
  // opened it (or the one given).
  [UPSTREAM_EVENT](up, listener, hook, ...args) {
    listener ??= up.listener ?? this.#listener;
    if (!listener) throw new Error('no listener for the upstream\'s events: pass one');
    listenerOf(listener);
    return drive((function* event(host) {
      yield host.#hook(listener, () => listener[hook](...args));
    })(this));
  }

  // fetch() from inside a hook, answered in memory (see `http`).
  async [FETCH](input, init) {
    const request = new Request(input, init);
    this.httpRequests.push(request.clone());
    const { hostname, protocol } = new URL(request.url);
    const key = `${request.method} ${request.url}`;
    let answer = (protocol === 'http:' || protocol === 'https:') && this.#granted(hostname)
      ? this.http.get(key) ?? this.http.get(request.url) : undefined;
    if (answer === undefined && this.#granted(hostname) && this.httpHandler) answer = this.httpHandler;
    if (typeof answer === 'function') answer = await answer(request);
    // StarlingMonkey rejects every failed fetch with this TypeError and no
    // more detail; the cause says what happened here.
    const networkError = (cause) => new TypeError('NetworkError when attempting to fetch resource', { cause });
    if (answer === undefined || answer === null) {
      throw networkError(`${request.method} ${request.url}: denied (no answer in FakeHost.http, as the server denies a host the sidecar does not grant)`);
    }
    if (answer instanceof Error) throw networkError(answer);
    if (answer instanceof Response) return answer.clone();
    if (typeof answer === 'string') return new Response(answer, { headers: { 'content-type': 'text/plain;charset=UTF-8' } });
    if ('status' in answer && !Array.isArray(answer)) {
      return new Response(answer.body ?? null, { status: answer.status, headers: answer.headers });
    }
    return Response.json(answer);
  }

  #request(opts, id) {
    const raw = opts.path ?? '/';
    const q = raw.indexOf('?');
    const path = q < 0 ? raw : raw.slice(0, q);
    const query = [...new URLSearchParams(q < 0 ? '' : raw.slice(q + 1))];
    if (opts.query !== undefined) query.push(...new URLSearchParams(opts.query));
    let route = opts.route ?? this.routes.find((r) => matchRoute(r, path));
    if (route === undefined) {
      if (this.routes.length) throw new Error(`no route of ${JSON.stringify(this.routes)} matches ${path} (the server would answer 404)`);
      route = path;
    }
    let params = opts.params === undefined ? undefined : pairs(opts.params);
    if (params === undefined) {
      params = matchRoute(route, path);
      if (!params) throw new Error(`path ${path} does not match route ${route}: give the route parameters as \`params\``);
    }
    const headers = pairs(opts.headers).map(([k, v]) => [k.toLowerCase(), v]);
    const cookies = opts.cookies !== undefined ? pairs(opts.cookies)
      : headers.filter(([k]) => k === 'cookie').flatMap(([, v]) => parseCookies(v));
    const subprotocols = opts.subprotocols ?? headers
      .filter(([k]) => k === 'sec-websocket-protocol')
      .flatMap(([, v]) => v.split(',').map((p) => p.trim()).filter(Boolean));
    const protocol = opts.protocol ?? this.subprotocols.find((p) => subprotocols.includes(p));
    const remoteAddr = opts.remoteAddr ?? `127.0.0.1:${40000 + Number(id % 20000n)}`;
    return { path, route, params, query, headers, cookies, remoteAddr, subprotocols, protocol };
  }

  #conn(id) {
    const conn = this.#conns.get(id);
    if (!conn) throw new ComponentError('unknown-connection');
    return conn;
  }

  #checkName(name) {
    if (name.length === 0 || utf8Length(name) > this.limits.maxNameLen) throw new ComponentError('invalid-argument');
  }

  #recorded(channel) {
    return this.historyConfig !== undefined && this.historyConfig.records(channel);
  }

  // The channel's history, its expired entries dropped.
  #history(channel) {
    let history = this.#histories.get(channel);
    if (!history) this.#histories.set(channel, (history = new ChannelHistory()));
    history.expire(this.now, this.historyConfig.ttlMs);
    return history;
  }

  #record(channel, msg) {
    return this.#history(channel).record(msg, this.now, this.historyConfig.size);
  }

  // What the server checks before queueing: the size, then the budget.
  #checkDeliverable(msg) {
    if (messageSize(msg) > this.limits.maxMessageSize) throw new ComponentError('invalid-argument');
    if (this.#budget <= 0) throw new ComponentError('limit-reached');
  }

  // `direct` (send) reaches a connection whose on-open runs at once; fan-out
  // waits until on-open returns.
  #deliver(msg, targets, except, direct = false) {
    this.#checkDeliverable(msg);
    let sent = 0;
    for (const conn of targets) {
      // A closing connection takes nothing more and is not counted.
      if (conn.id === except || conn.shut) continue;
      (direct || !conn.deferred ? conn.received : conn.deferred).push(msg);
      sent++;
    }
    this.#budget = Math.max(0, this.#budget - sent);
    return sent;
  }

  #members(groups, name) {
    return [...(groups.get(name) ?? [])].map((id) => this.#conns.get(id));
  }

  #joinChecked(groups, field, id, name, cap) {
    this.#checkName(name);
    const conn = this.#conn(id);
    if (conn.shut) throw new ComponentError('closed');
    if (!conn[field].has(name) && conn[field].size >= cap) throw new ComponentError('limit-reached');
    this.#join(groups, conn, field, name);
  }

  #join(groups, conn, field, name) {
    conn[field].add(name);
    if (!groups.has(name)) groups.set(name, new Set());
    groups.get(name).add(conn.id);
  }

  #leave(groups, conn, field, name) {
    conn[field].delete(name);
    const members = groups.get(name);
    if (!members) return;
    members.delete(conn.id);
    // Like the server, a group without members is gone from channels().
    if (members.size === 0) groups.delete(name);
  }

  // Counted before on-first-open runs, so a hook that throws is undone
  // (and paired with on-last-close) like any refused connection.
  *#enterRoute(listener, route) {
    const open = this.#routeOpen.get(route) ?? 0;
    this.#routeOpen.set(route, open + 1);
    if (open === 0) yield this.#hook(listener, () => listener.onFirstOpen(route));
  }

  // Unregisters a connection and counts it off its route, calling
  // on-last-close for the last: what follows on-close, or a refusal.
  *#end(conn) {
    conn.shut = true;
    conn.ended = true;
    for (const channel of [...conn.channels]) this.#leave(this.#channels, conn, 'channels', channel);
    for (const tag of [...conn.tags]) this.#leave(this.#tags, conn, 'tags', tag);
    this.#conns.delete(conn.id);
    const open = (this.#routeOpen.get(conn.route) ?? 1) - 1;
    this.#routeOpen.set(conn.route, open);
    if (open === 0) yield this.#hook(conn.listener, () => conn.listener.onLastClose(conn.route));
  }

  // The connection ended: on-close with the server's close if it closed
  // first (as the server reports it), else the client's.
  *#finish(conn, code, reason) {
    conn.shut = true;
    const how = conn.closing ?? { code, reason };
    try {
      yield this.#hook(conn.listener, () => conn.listener.onClose(conn.id, how.code, how.reason));
    } finally {
      yield* this.#end(conn);
    }
  }

  *#message(conn, msg) {
    // The server discards data that arrives after it started closing.
    if (conn.shut) return undefined;
    const reply = optional(yield this.#hook(conn.listener, () => conn.listener.onMessage(conn.id, msg)), message);
    if (reply !== undefined && messageSize(reply) > this.limits.maxMessageSize) {
      conn.shut = true;
      conn.closing ??= { code: 1011, reason: 'internal error' };
    } else if (reply !== undefined && !conn.shut) {
      conn.received.push(reply);
    }
    return reply;
  }

  // One on-messages call, and what the server writes to the sender after
  // it: the replies of all but the last message handled, then what the
  // call queued for the sender, then the last reply (unless the connection
  // is closing by then). A reply over the size limit fails the connection
  // (1011) where it comes, and nothing after it is written.
  *#batch(conn, msgs) {
    if (conn.shut) return [];
    const mark = conn.received.length;
    const results = yield this.#hook(conn.listener, () => conn.listener.onMessages(conn.id, msgs));
    if (!Array.isArray(results) || results.length === 0 || results.length > msgs.length) {
      const got = Array.isArray(results) ? `${results.length} results` : String(results);
      throw new Error(`onMessages returned ${got} for ${msgs.length} messages: 1 to msgs.length are due (the server fails the call as a trap, closing with 1011)`);
    }
    const replies = results.map((r) => optional(r, message));
    const queued = conn.received.splice(mark);
    const fail = () => {
      conn.shut = true;
      conn.closing ??= { code: 1011, reason: 'internal error' };
    };
    for (const reply of replies.slice(0, -1)) {
      if (reply === undefined) continue;
      if (messageSize(reply) > this.limits.maxMessageSize) {
        fail();
        return replies;
      }
      conn.received.push(reply);
    }
    conn.received.push(...queued);
    const last = replies.at(-1);
    if (last !== undefined && messageSize(last) > this.limits.maxMessageSize) fail();
    else if (last !== undefined && !conn.shut) conn.received.push(last);
    return replies;
  }

  // The server's loop over a burst: on-messages with what is left until
  // nothing is, or the connection is closing (the rest is discarded). A
  // burst of one, a listener without onMessages, and the rest after a call
  // that handled only its first message (a plugin that delivers on every
  // message) get one on-message call per message instead.
  *#burst(conn, msgs) {
    const replies = [];
    const oneByOne = function* (host, rest) {
      for (const msg of rest) {
        if (conn.shut) break;
        replies.push(yield* host.#message(conn, msg));
      }
      return replies;
    };
    for (let rest = msgs; rest.length && !conn.shut;) {
      if (rest.length === 1 || typeof conn.listener.onMessages !== 'function') return yield* oneByOne(this, rest);
      const handled = yield* this.#batch(conn, rest);
      replies.push(...handled);
      rest = rest.slice(handled.length);
      if (handled.length === 1 && rest.length) return yield* oneByOne(this, rest);
    }
    return replies;
  }

  #dueOrder(timers) {
    return timers.sort((a, b) => a.due - b.due || (a.id < b.id ? -1 : 1));
  }

  *#fire(timer) {
    if (!timer.repeat) this.#timers.delete(timer.id);
    const listener = this.#listener;
    if (!listener) throw new Error('a timer is due but no listener has run on this FakeHost (open() or push() one first)');
    yield this.#hook(listener, () => listener.onTimer(timer.id));
  }

  [CLIENT_MESSAGE](conn, msg) {
    return drive(this.#message(conn, msg));
  }

  [CLIENT_BATCH](conn, msgs) {
    return drive(this.#batch(conn, msgs));
  }

  [CLIENT_BURST](conn, msgs) {
    return drive(this.#burst(conn, msgs));
  }

  [CLIENT_CLOSE](conn, code, reason) {
    return drive(this.#finish(conn, code, reason));
  }
}

/** One client connection opened with FakeHost.open(). */
class FakeConnection {
  #host;
  #conn;

  constructor(host, conn, decision) {
    this.#host = host;
    this.#conn = conn;
    conn.decision = decision;
    /** What onOpen returned (accept, greet or reject). */
    this.decision = decision;
    /** `{ status, reason }` as the client would get it, if refused. */
    this.rejection = undefined;
  }

  /** The connection id (a bigint, as the plugin sees it). */
  get id() { return this.#conn.id; }
  get route() { return this.#conn.route; }
  get path() { return this.#conn.path; }
  /** Whether the connection is open (accepted and not yet ended). */
  get open() { return !this.#conn.ended; }
  /** `{ code, reason }` once the server is closing it (host.close), else undefined. */
  get closing() { return this.#conn.closing; }
  /** Every message it was sent, in order (greeting first): Message objects. */
  get received() { return this.#conn.received; }

  /** The text messages it was sent, as strings. */
  texts() {
    return this.received.filter((m) => m.tag === 'text').map((m) => m.val);
  }

  /** The messages received since the last take(), removing them from `received`. */
  take() {
    return this.received.splice(0);
  }

  /** The client sends a text message: `on-message`; returns its reply (a Promise of it if the hook is async). */
  sendText(text) {
    return this.send(Message.text(text));
  }

  sendBinary(data) {
    return this.send(Message.binary(data));
  }

  /**
   * The client sends a message: `on-message`; returns its reply (also in
   * `received`). A message that arrives alone is what the server gives
   * `on-message` even where the plugin exports `on-messages`; sendBurst()
   * sends several at once.
   */
  send(msg) {
    this.#usable();
    return this.#host[CLIENT_MESSAGE](this.#conn, message(msg));
  }

  /**
   * One `on-messages` call with `msgs` (messages; a string is text, bytes
   * binary), as the server makes for messages that arrived together.
   * Returns the call's results, one per message it handled: fewer than
   * given when one delivered or closed (sendBurst() hands on the rest).
   * `received` gets what the server writes: the earlier replies, what the
   * call queued, then the last reply. A result list that is empty or
   * longer than `msgs` throws (the server fails the call as a trap, 1011).
   */
  onMessages(msgs) {
    this.#usable();
    const batch = this.#clientMessages(msgs);
    if (batch.length === 0) throw new RangeError('the server calls on-messages with at least one message');
    if (typeof this.#conn.listener.onMessages !== 'function') throw new TypeError('the listener has no onMessages: make it with toListener() or loadListener()');
    return this.#host[CLIENT_BATCH](this.#conn, batch);
  }

  /**
   * The client sends `msgs` at once and the server does what it does with
   * a burst: `on-messages` with all of them, then with those not handled,
   * until none is left or the connection is closing (the server discards
   * the rest); a burst of one, and the rest after a call that handled only
   * its first message, get one `on-message` call per message. Returns the
   * replies, one per message handled; `received` reads as after one
   * send() per message.
   */
  sendBurst(msgs) {
    this.#usable();
    return this.#host[CLIENT_BURST](this.#conn, this.#clientMessages(msgs));
  }

  #clientMessages(msgs) {
    return [...msgs].map((m) => message(typeof m === 'string' ? Message.text(m)
      : ArrayBuffer.isView(m) || m instanceof ArrayBuffer ? Message.binary(m) : m));
  }

  /**
   * The connection ends: `on-close` (with the server's code and reason if
   * the plugin closed it first), then `on-last-close` for its route's last.
   * 1006 is a client that vanished. Returns a Promise if a hook is async.
   */
  close(code = 1000, reason = '') {
    this.#usable();
    return this.#host[CLIENT_CLOSE](this.#conn, code, reason);
  }

  #usable() {
    if (this.rejection) throw new Error(`connection ${this.id} was refused (${this.rejection.status})`);
    if (this.#conn.ended) throw new Error(`connection ${this.id} is closed`);
  }
}

/**
 * One upstream (outbound WebSocket) the plugin opened with
 * `host.upstreamConnect`, and the test's end of it: `sent` is what the
 * plugin sent it (before the handshake too), `closeSent` the plugin's
 * `upstreamClose`. open(), send(), close() and fail() play the far end,
 * running the hooks into the listener that opened it (or the one given);
 * each returns a Promise if the hook is async.
 */
class FakeUpstream {
  #host;
  #state;

  constructor(host, state) {
    this.#host = host;
    this.#state = state;
  }

  get id() { return this.#state.id; }
  get url() { return this.#state.url; }
  get protocols() { return this.#state.protocols; }
  /** The handshake headers, `[name, value]` pairs. */
  get headers() { return this.#state.headers; }
  get listener() { return this.#state.listener; }
  /** `'connecting'`, `'open'`, `'closing'` (the plugin closed it) or `'closed'`. */
  get status() { return this.#state.status; }
  set status(status) { this.#state.status = status; }
  /** Every message the plugin sent it, in order. */
  get sent() { return this.#state.sent; }
  /** `{ code, reason }` once the plugin called upstreamClose, else undefined. */
  get closeSent() { return this.#state.closeSent; }
  set closeSent(close) { this.#state.closeSent = close; }
  /** `{ code, reason }` that on-upstream-close was told, once it was. */
  get closed() { return this.#state.closed; }

  /** The text messages the plugin sent it. */
  texts() {
    return this.sent.filter((m) => m.tag === 'text').map((m) => m.val);
  }

  /** The handshake succeeded: `on-upstream-open`. */
  open(listener) {
    if (this.status !== 'connecting') throw new Error(`upstream ${this.id} is ${this.status}, not connecting`);
    this.status = 'open';
    return this.#host[UPSTREAM_EVENT](this, listener, 'onUpstreamOpen', this.id);
  }

  /** The upstream sends a message (a string is text, bytes binary): `on-upstream-message`. */
  send(msg, listener) {
    if (this.status !== 'open') throw new Error(`upstream ${this.id} is ${this.status}: only an open upstream sends`);
    msg = message(typeof msg === 'string' ? Message.text(msg) : ArrayBuffer.isView(msg) ? Message.binary(msg) : msg);
    return this.#host[UPSTREAM_EVENT](this, listener, 'onUpstreamMessage', this.id, msg);
  }

  /**
   * The upstream's connection ends: `on-upstream-close` with the plugin's
   * close if it closed first (as the server reports it), else this one.
   */
  close(code = 1000, reason = '', listener) {
    if (this.status === 'closed') throw new Error(`upstream ${this.id} is closed`);
    const how = this.closeSent ?? { code: u16(code), reason: string(reason) };
    this.status = 'closed';
    this.#state.closed = how;
    return this.#host[UPSTREAM_EVENT](this, listener, 'onUpstreamClose', this.id, how.code, how.reason);
  }

  /** The upstream could not be reached, or vanished: `on-upstream-close` with 1006. */
  fail(reason = 'connection refused', listener) {
    return this.close(1006, reason, listener);
  }
}

// ---- a real server ----

function onPath(name) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const file = join(dir, name);
    try {
      accessSync(file, fsConstants.X_OK);
      return file;
    } catch {}
  }
  return undefined;
}

// Both ports are held until both are known, so they differ.
async function freePorts(n) {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => resolve(s));
  })));
  const ports = servers.map((s) => s.address().port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

// node:http without keep-alive: a pooled socket would keep the test
// process alive after the server has gone.
function httpGet(url, headers = {}) {
  return new Promise((resolve) => {
    const req = httpRequest(url, { headers, agent: false, timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', () => resolve({ status: 0, body }));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.end();
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The server answered the upgrade with an HTTP status instead of 101. */
export class WebSocketRefused extends Error {
  constructor(status, head) {
    super(`the upgrade was refused: ${head.split('\r\n')[0]}`);
    this.name = 'WebSocketRefused';
    /** The HTTP status, e.g. 404 or 403. */
    this.status = status;
  }
}

/**
 * A WebSocket client for integration tests: RFC 6455 over node:net,
 * without extensions. Node 20 has no global WebSocket without
 * --experimental-websocket, a flag whose meaning changes across Node
 * versions; this one also shows the HTTP status of a refusal (as
 * WebSocketRefused), which the WebSocket API hides.
 * Resolves to a client: `sendText`, `sendBinary`, `next()` (the next event:
 * `{ type: 'text' | 'binary', data }`, `{ type: 'close', code, reason }` or
 * `{ type: 'end' }`), `close(code, reason)` and `destroy()`.
 * @param {string} url a ws:// URL
 */
export function connect(url) {
  const { hostname, port, pathname, search } = new URL(url);
  const key = randomBytes(16).toString('base64');
  const socket = tcpConnect(Number(port), hostname);
  return new Promise((resolve, reject) => {
    let buffer = Buffer.alloc(0);
    let client;
    socket.on('error', reject);
    socket.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (!client) {
        const end = buffer.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buffer.subarray(0, end).toString('latin1');
        buffer = buffer.subarray(end + 4);
        const status = Number(head.split(' ')[1]);
        if (status !== 101) {
          socket.destroy();
          return reject(new WebSocketRefused(status, head));
        }
        const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
        if (!head.toLowerCase().includes(`sec-websocket-accept: ${accept.toLowerCase()}`)) {
          return reject(new Error(`bad Sec-WebSocket-Accept in:\n${head}`));
        }
        client = wsClient(socket);
        resolve(client);
      }
      buffer = client.feed(buffer);
    });
    socket.write(
      `GET ${pathname}${search} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
  });
}

function wsClient(socket) {
  const inbox = [];
  const waiting = [];
  let fragments = [];
  let fragmentOp = 0;
  let closeSent = false;
  const deliver = (event) => (waiting.length ? waiting.shift()(event) : inbox.push(event));
  // Clients mask every frame (RFC 6455 §5.3).
  const sendFrame = (opcode, payload) => {
    const mask = randomBytes(4);
    const len = payload.length;
    const head = len < 126 ? Buffer.from([0x80 | opcode, 0x80 | len])
      : len < 65536 ? Buffer.from([0x80 | opcode, 0x80 | 126, len >> 8, len & 255])
      : Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | 127]), (() => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(len)); return b; })()]);
    const body = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
    socket.write(Buffer.concat([head, mask, body]));
  };
  socket.on('close', () => deliver({ type: 'end' }));
  return {
    /** Parses whole frames from `buffer`; returns what is left. */
    feed(buffer) {
      for (;;) {
        if (buffer.length < 2) return buffer;
        const fin = buffer[0] & 0x80;
        const opcode = buffer[0] & 0x0f;
        let len = buffer[1] & 0x7f;
        let at = 2;
        if (len === 126) {
          if (buffer.length < 4) return buffer;
          len = buffer.readUInt16BE(2);
          at = 4;
        } else if (len === 127) {
          if (buffer.length < 10) return buffer;
          len = Number(buffer.readBigUInt64BE(2));
          at = 10;
        }
        if (buffer.length < at + len) return buffer;
        const payload = buffer.subarray(at, at + len);
        buffer = buffer.subarray(at + len);
        if (opcode === 0x9) sendFrame(0xa, payload);
        else if (opcode === 0x8) {
          // Answered at once, so a server shutting down never waits on us.
          if (!closeSent) {
            closeSent = true;
            sendFrame(0x8, payload.subarray(0, 2));
          }
          deliver({ type: 'close', code: payload.length >= 2 ? payload.readUInt16BE(0) : 1005, reason: payload.subarray(2).toString('utf8') });
        } else if (opcode === 0x1 || opcode === 0x2 || opcode === 0x0) {
          if (opcode !== 0x0) fragmentOp = opcode;
          fragments.push(payload);
          if (fin) {
            const data = Buffer.concat(fragments);
            fragments = [];
            deliver(fragmentOp === 0x1 ? { type: 'text', data: data.toString('utf8') } : { type: 'binary', data: new Uint8Array(data) });
          }
        }
      }
    },
    sendText: (s) => sendFrame(0x1, Buffer.from(s, 'utf8')),
    sendBinary: (bytes) => sendFrame(0x2, Buffer.from(bytes)),
    close(code = 1000, reason = '') {
      closeSent = true;
      const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
      payload.writeUInt16BE(code, 0);
      payload.write(reason, 2);
      sendFrame(0x8, payload);
    },
    /** The next event (text, binary, close, end), or a rejection after `ms`. */
    next(ms = 5000) {
      if (inbox.length) return Promise.resolve(inbox.shift());
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no WebSocket event within ${ms} ms`)), ms);
        waiting.push((event) => {
          clearTimeout(timer);
          resolve(event);
        });
      });
    },
    destroy: () => socket.destroy(),
  };
}

/**
 * Starts the wsgate binary (WSGATE_BIN, else `wsgate` on PATH) serving one
 * built plugin on free loopback ports, from a temporary plugin directory,
 * without watching it; resolves once /readyz answers 200 and the plugin
 * has loaded.
 * @param {string} wasmPath the built plugin; served as its file name
 * @param {{ sidecar?: string, name?: string, args?: string[], env?: Record<string, string>, timeoutMs?: number }} [options]
 *   `sidecar`: the TOML of NAME.toml (default: the .toml beside the .wasm, if any);
 *   `args`: more server flags; `timeoutMs`: how long to wait for ready (120 s: a debug build of wsgate compiles a JavaScript plugin in tens of seconds, more on a busy machine).
 */
export async function serve(wasmPath, { sidecar, name, args = [], env = {}, timeoutMs = 120_000 } = {}) {
  const bin = process.env.WSGATE_BIN || onPath('wsgate');
  if (!bin) throw new Error('serve() needs the wsgate binary: set WSGATE_BIN to its path or put wsgate on PATH');
  name ??= basename(wasmPath).replace(/\.wasm$/, '');
  sidecar ??= await readFile(wasmPath.replace(/\.wasm$/, '') + '.toml', 'utf8').catch(() => undefined);
  const dir = await mkdtemp(join(tmpdir(), 'wsgate-serve-'));
  const plugins = join(dir, 'plugins');
  await mkdir(plugins);
  await copyFile(wasmPath, join(plugins, `${name}.wasm`));
  if (sidecar !== undefined) await writeFile(join(plugins, `${name}.toml`), sidecar);

  const [port, adminPort] = await freePorts(2);
  const adminToken = randomBytes(16).toString('hex');
  const output = [];
  // Run from the temporary directory, so a wsgate.toml in the caller's
  // working directory is not read as the server's config.
  const child = spawn(bin, [
    '--listen', `127.0.0.1:${port}`,
    '--admin-listen', `127.0.0.1:${adminPort}`,
    '--plugins', plugins,
    '--no-watch',
    ...args,
  ], {
    cwd: dir,
    // Inherited WSGATE_* variables are dropped: a stray WSGATE_LIMITS__...
    // would change what is tested.
    env: {
      ...Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('WSGATE_'))),
      RUST_LOG: process.env.RUST_LOG ?? 'info', ...env, WSGATE_ADMIN__TOKEN: adminToken,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (chunk) => output.push(chunk));
  child.stderr.on('data', (chunk) => output.push(chunk));
  const logs = () => Buffer.concat(output).toString('utf8');
  let exit;
  // 'close' rather than 'exit': it comes once the output has been read to
  // the end, so an error quoting logs() misses nothing. A binary that
  // cannot start gets 'error' and then 'close': the first one tells why.
  const exited = new Promise((resolve) => {
    child.once('close', (code, signal) => resolve((exit ??= { code, signal })));
    child.once('error', (error) => resolve((exit ??= { error })));
  });
  // A test that never calls stop() (it failed, or forgot) must neither
  // keep its process alive nor leave a server and its directory behind.
  for (const handle of [child, child.stdout, child.stderr]) handle.unref();
  const killOnExit = () => {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', killOnExit);

  let stopped;
  const stop = () => (stopped ??= (async () => {
    process.removeListener('exit', killOnExit);
    if (!exit) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
  })());

  const url = `http://127.0.0.1:${port}`;
  const fail = async (why) => {
    await stop();
    throw new Error(`${why}\n--- wsgate log ---\n${logs()}`);
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exit?.error) await fail(`cannot start ${bin}: ${exit.error.message}`);
    if (exit) await fail(`wsgate exited (${exit.signal ?? `code ${exit.code}`}) before it was ready`);
    if ((await httpGet(`${url}/readyz`)).status === 200) break;
    if (Date.now() > deadline) await fail(`wsgate was not ready within ${timeoutMs} ms`);
    await sleep(50);
  }
  // Ready means every plugin loaded or failed: find out which.
  const info = await httpGet(`http://127.0.0.1:${adminPort}/admin/info`, { authorization: `Bearer ${adminToken}` });
  let plugin;
  try {
    plugin = JSON.parse(info.body).plugins?.find((p) => p.name === name);
  } catch {}
  if (plugin?.status !== 'loaded') {
    await fail(`plugin ${name} did not load: ${plugin?.error ?? `admin/info answered ${info.status}`}`);
  }
  return {
    url,
    port,
    adminPort,
    adminToken,
    /** The ws:// URL of `path` on this server. */
    wsUrl: (path = `/ws/${name}`) => `ws://127.0.0.1:${port}${path}`,
    /** A WebSocket client (see connect()) on `path` of this server. */
    connect: (path = `/ws/${name}`) => connect(`ws://127.0.0.1:${port}${path}`),
    logs,
    stop,
  };
}
