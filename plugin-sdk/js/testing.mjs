// Testing wsgate listeners in plain Node.js (20+): a FakeHost that behaves
// like the server's host for one plugin, to unit-test hooks without building
// a component, and serve(), which runs a real wsgate with a built plugin.
// README.md, "Testing a listener", shows both.
//
// Importing this module registers module hooks (testing-loader.mjs) that
// resolve `wsgate` and the SDK's host import, so it must run before the
// listener is loaded: import it first and load the listener with
// loadListener(), or preload it with `node --import`.

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
  'subscribe', 'unsubscribe', 'publish', 'channels', 'subscribers',
  'connections', 'connectionCount',
  'getAttribute', 'setAttribute',
  'tag', 'untag', 'tagged', 'sendToTag',
  'stateGet', 'stateSet',
  'setTimer', 'cancelTimer',
  'log',
];
const CURRENT_HOST_KEY = 'wsgate.testing.currentHost';
const CURRENT_HOST = Symbol.for(CURRENT_HOST_KEY);
// What a FakeConnection asks of its host: symbol-keyed, so no plugin or
// test mistakes them for host calls.
const CLIENT_MESSAGE = Symbol('client message');
const CLIENT_CLOSE = Symbol('client close');

// Once per process: this module may be reached both through --import and
// from a test file, and two sets of hooks would only slow resolution down.
const REGISTERED = Symbol.for('wsgate.testing.registered');
if (!globalThis[REGISTERED]) {
  globalThis[REGISTERED] = true;
  register('./testing-loader.mjs', import.meta.url, {
    data: { hostCalls: HOST_CALLS, currentHostKey: CURRENT_HOST_KEY },
  });
}

// Imported only now: index.js imports the host interface, which resolves
// only once the hooks above are registered.
const sdk = await import('./index.js');
export const { host, Message, OpenDecision, hostError, toListener } = sdk;

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

const utf8Length = (s) => Buffer.byteLength(s, 'utf8');
const messageSize = (m) => (m.tag === 'text' ? utf8Length(m.val) : m.val.length);
const isSendableCloseCode = (c) => (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);

// The bindings lower a hook's return value too: returning a Promise (an
// async hook) or a bare string traps in the server.
function hookResult(hook, value, lower) {
  if (typeof value?.then === 'function') {
    throw new TypeError(`${hook} returned a Promise: hooks run synchronously and cannot be async`);
  }
  return lower(value);
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

const HOOKS = ['onOpen', 'onMessage', 'onClose', 'onFirstOpen', 'onLastClose', 'onPush', 'onTimer'];

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
 * channels, tags, state, timers and logs, with the server's checks and
 * errors. Its host-call methods are the ones the plugin's `host` reaches
 * (while it is the current FakeHost: the newest one, or the one running a
 * hook); open(), push(), fireTimers() and advanceTime() drive the plugin.
 */
export class FakeHost {
  /** Every `publish`, in order: `{ channel, msg, except, reached }`. */
  publishes = [];
  /** Every successful `close` the plugin made: `{ conn, code, reason }`. */
  closes = [];
  /** Every `log` line: `{ level, msg }`. */
  logs = [];
  /** Virtual milliseconds, moved only by advanceTime(). */
  now = 0;

  #conns = new Map();
  #channels = new Map();
  #tags = new Map();
  #state = new Map();
  #stateBytes = 0;
  #timers = new Map();
  #routeOpen = new Map();
  #nextConn = 1n;
  #lastTimer = 0n;
  #budget;
  // Timers fire into the plugin version in service: the listener most
  // recently passed to open() or push().
  #listener;

  /**
   * @param {{ routes?: string[], subprotocols?: string[], limits?: Partial<typeof DEFAULT_LIMITS> }} [options]
   *   `routes` and `subprotocols` as in the plugin's sidecar.
   */
  constructor({ routes = [], subprotocols = [], limits = {} } = {}) {
    this.routes = routes;
    this.subprotocols = subprotocols;
    this.limits = { ...DEFAULT_LIMITS, ...limits };
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
   */
  open(listener, request = {}) {
    this.#listener = listenerOf(listener);
    const id = this.#nextConn++;
    const req = this.#request(typeof request === 'string' ? { path: request } : request, id);
    const conn = {
      id, route: req.route, path: req.path, listener,
      attributes: new Map(), channels: new Set(), tags: new Set(),
      shut: false, closing: undefined, ended: false, received: [],
    };
    this.#conns.set(id, conn);
    let decision;
    try {
      this.#enterRoute(listener, req.route);
      const channel = lookup(req.params, 'channel');
      if (channel !== undefined && utf8Length(channel) <= this.limits.maxNameLen) this.#join(this.#channels, conn, 'channels', channel);
      decision = this.#hook(() => hookResult('onOpen', listener.onOpen(id, req), openDecision));
    } catch (e) {
      // The server refuses with 500 and undoes the registration.
      this.#end(conn);
      throw e;
    }
    const handle = new FakeConnection(this, conn, decision);
    if (decision.tag === 'reject') {
      const { status, reason } = decision.val;
      handle.rejection = status >= 400 && status <= 599 ? { status, reason } : { status: 500, reason: 'connection refused' };
      conn.received.length = 0;
      this.#end(conn);
    } else if (decision.tag === 'greet' && messageSize(decision.val) > this.limits.maxMessageSize) {
      handle.rejection = { status: 500, reason: 'the listener failed to open the connection' };
      conn.received.length = 0;
      this.#finish(conn, 1011, 'internal error');
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
    this.#hook(() => listener.onPush(msg));
  }

  /** Timers now pending: `{ id, delayMs, repeat, due }` (due in virtual ms). */
  get pendingTimers() {
    return [...this.#timers.values()].map((t) => ({ ...t }));
  }

  /**
   * Fires every pending timer once, soonest first, whatever its delay: a
   * one-shot timer is then gone, a repeating one stays. Timers set while
   * these fire wait for the next call.
   * @returns {bigint[]} the ids fired
   */
  fireTimers() {
    const fired = [];
    for (const timer of this.#dueOrder([...this.#timers.values()])) {
      // An earlier timer's hook may have cancelled this one.
      if (!this.#timers.has(timer.id)) continue;
      timer.due = this.now + timer.delayMs;
      this.#fire(timer);
      fired.push(timer.id);
    }
    return fired;
  }

  /**
   * Moves virtual time on by `ms`, firing each timer as often as it falls
   * due meanwhile, in order.
   * @returns {bigint[]} the ids fired, once per firing
   */
  advanceTime(ms) {
    const until = this.now + ms;
    const fired = [];
    for (;;) {
      const [next] = this.#dueOrder([...this.#timers.values()].filter((t) => t.due <= until));
      if (!next) break;
      this.now = next.due;
      next.due += Math.max(1, next.delayMs);
      this.#fire(next);
      fired.push(next.id);
    }
    this.now = until;
    return fired;
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
    if (this.#deliver(msg, [c], undefined) === 0) throw new ComponentError('closed');
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
    const reached = this.#deliver(msg, this.#members(this.#channels, channel), except);
    this.publishes.push({ channel, msg, except, reached });
    return reached;
  }

  channels() {
    return [...this.#channels.keys()];
  }

  subscribers(channel) {
    return BigUint64Array.from(this.#channels.get(string(channel)) ?? []);
  }

  connections() {
    return BigUint64Array.from(this.#conns.keys());
  }

  connectionCount() {
    return this.#conns.size;
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

  sendToTag(tag, msg, except) {
    tag = string(tag);
    msg = message(msg);
    except = optional(except, u64);
    this.#checkName(tag);
    return this.#deliver(msg, this.#members(this.#tags, tag), except);
  }

  stateGet(key) {
    return this.#state.get(string(key))?.slice();
  }

  stateSet(key, value) {
    key = string(key);
    value = optional(value, bytes);
    this.#checkName(key);
    const cost = (v) => (v === undefined ? 0 : utf8Length(key) + v.length + STATE_ENTRY_OVERHEAD);
    const used = this.#stateBytes - cost(this.#state.get(key)) + cost(value);
    if (used > this.limits.stateBytes) throw new ComponentError('limit-reached');
    this.#stateBytes = used;
    if (value === undefined) this.#state.delete(key);
    else this.#state.set(key, value);
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

  // Runs one hook call: this host is the one the plugin reaches, with a
  // fresh delivery budget, as each hook call gets in the server.
  #hook(call) {
    globalThis[CURRENT_HOST] = this;
    this.#budget = this.limits.deliveriesPerHook;
    return call();
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

  #deliver(msg, targets, except) {
    if (messageSize(msg) > this.limits.maxMessageSize) throw new ComponentError('invalid-argument');
    if (this.#budget <= 0) throw new ComponentError('limit-reached');
    let sent = 0;
    for (const conn of targets) {
      // A closing connection takes nothing more and is not counted.
      if (conn.id === except || conn.shut) continue;
      conn.received.push(msg);
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
  #enterRoute(listener, route) {
    const open = this.#routeOpen.get(route) ?? 0;
    this.#routeOpen.set(route, open + 1);
    if (open === 0) this.#hook(() => listener.onFirstOpen(route));
  }

  // Unregisters a connection and counts it off its route, calling
  // on-last-close for the last: what follows on-close, or a refusal.
  #end(conn) {
    conn.shut = true;
    conn.ended = true;
    for (const channel of [...conn.channels]) this.#leave(this.#channels, conn, 'channels', channel);
    for (const tag of [...conn.tags]) this.#leave(this.#tags, conn, 'tags', tag);
    this.#conns.delete(conn.id);
    const open = (this.#routeOpen.get(conn.route) ?? 1) - 1;
    this.#routeOpen.set(conn.route, open);
    if (open === 0) this.#hook(() => conn.listener.onLastClose(conn.route));
  }

  // The connection ended: on-close with the server's close if it closed
  // first (as the server reports it), else the client's.
  #finish(conn, code, reason) {
    conn.shut = true;
    const how = conn.closing ?? { code, reason };
    try {
      this.#hook(() => conn.listener.onClose(conn.id, how.code, how.reason));
    } finally {
      this.#end(conn);
    }
  }

  #message(conn, msg) {
    // The server discards data that arrives after it started closing.
    if (conn.shut) return undefined;
    const reply = this.#hook(() => hookResult('onMessage', conn.listener.onMessage(conn.id, msg), (r) => optional(r, message)));
    if (reply !== undefined && messageSize(reply) > this.limits.maxMessageSize) {
      conn.shut = true;
      conn.closing ??= { code: 1011, reason: 'internal error' };
    } else if (reply !== undefined && !conn.shut) {
      conn.received.push(reply);
    }
    return reply;
  }

  #dueOrder(timers) {
    return timers.sort((a, b) => a.due - b.due || (a.id < b.id ? -1 : 1));
  }

  #fire(timer) {
    if (!timer.repeat) this.#timers.delete(timer.id);
    const listener = this.#listener;
    if (!listener) throw new Error('a timer is due but no listener has run on this FakeHost (open() or push() one first)');
    this.#hook(() => listener.onTimer(timer.id));
  }

  [CLIENT_MESSAGE](conn, msg) {
    return this.#message(conn, msg);
  }

  [CLIENT_CLOSE](conn, code, reason) {
    this.#finish(conn, code, reason);
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

  /** The client sends a text message: `on-message`; returns its reply. */
  sendText(text) {
    return this.send(Message.text(text));
  }

  sendBinary(data) {
    return this.send(Message.binary(data));
  }

  /** The client sends a message: `on-message`; returns its reply (also in `received`). */
  send(msg) {
    this.#usable();
    return this.#host[CLIENT_MESSAGE](this.#conn, message(msg));
  }

  /**
   * The connection ends: `on-close` (with the server's code and reason if
   * the plugin closed it first), then `on-last-close` for its route's last.
   * 1006 is a client that vanished.
   */
  close(code = 1000, reason = '') {
    this.#usable();
    this.#host[CLIENT_CLOSE](this.#conn, code, reason);
  }

  #usable() {
    if (this.rejection) throw new Error(`connection ${this.id} was refused (${this.rejection.status})`);
    if (this.#conn.ended) throw new Error(`connection ${this.id} is closed`);
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
