/**
 * wsgate-client.js — a small browser WebSocket client for wsgate.
 *
 * A plain ES module (no build step, no dependencies) that wraps the browser's
 * `WebSocket` with:
 *
 *  - automatic reconnection with exponential backoff and jitter,
 *  - JSON parsing of incoming text frames and a `sendJson()` helper,
 *  - event callbacks: `open`, `message`, `close`, `error`, `reconnecting`, `state`,
 *    `reset`, `recovered`,
 *  - resuming after a reconnect without losing or repeating a message (see below),
 *  - a clean, final `close()` that stops reconnecting.
 *
 * Browsers do not expose the HTTP status of a refused WebSocket handshake (a plugin
 * that rejects in `on-open` with, say, 403): the socket just fails with close code
 * 1006. The `close` event therefore reports `opened: false` when the connection never
 * opened, so an application can tell "refused or unreachable" from "dropped"; see
 * {@link WsgateClient#probe} to tell the first two apart.
 *
 * Resuming (option `resume`, on by default). A server whose channel history is on
 * (wsgate's `[history]`; the chat examples) puts each channel message's position,
 * `"pos": "EPOCH:OFFSET"`, in the JSON it sends. The client remembers the last one and
 * reconnects with `?since=EPOCH:OFFSET`; the plugin replays what was missed and then
 * says `{"type":"recovery","recovered":true|false,"latest":...}`. So that every message
 * reaches the application exactly once and in order:
 *  - a message at or before the last position (same epoch) was already seen: dropped;
 *  - a message past the next one (same epoch) means some were lost on the way: it is
 *    dropped and the client reconnects at once with `since=` the last one, to have the
 *    gap replayed;
 *  - a message of another epoch means the server's history restarted: `reset`
 *    `{ reason: 'epoch' }`, and the message is delivered;
 *  - `recovered: false` (away longer than the history keeps, or the channel is not
 *    recorded): `reset` `{ reason: 'not-recovered' }`; what follows is the history from
 *    its oldest kept message, so an application clears its view and rebuilds it;
 *  - `recovered: true`: `recovered`; the gap has been delivered as `message`s;
 *  - a refused handshake (the chat examples answer 503 while their history is
 *    unavailable) is a close like any other: the client retries with backoff and the
 *    same `since`, so the gap is still replayed once the history is back.
 * Recovery notices are never delivered as `message`. Positions are only read from
 * parsed JSON objects, so `resume` needs `json` not `false`.
 *
 * @example
 *   import { WsgateClient } from './wsgate-client.js';
 *
 *   const client = new WsgateClient('/ws/chat/lobby?username=ann');
 *   client.on('open', () => client.send('hello'));
 *   client.on('message', (data) => console.log(data.from, data.message));
 *   client.on('reconnecting', ({ attempt, delay }) => console.log(`retry #${attempt} in ${delay} ms`));
 *   client.on('close', ({ code, opened, willReconnect }) => console.log(code, opened, willReconnect));
 *   client.connect();
 *   // later
 *   client.close();            // 1000, no more reconnects
 *
 * API
 * ---
 * `new WsgateClient(url, options?)`
 *   `url`: absolute `ws:`/`wss:` URL, or a path / `http(s):` URL resolved against the
 *   page (`/ws/echo` on `https://host/` becomes `wss://host/ws/echo`).
 *   `options`:
 *     - `protocols` (string | string[]): WebSocket subprotocols to offer.
 *     - `reconnect` (boolean, default `true`): reconnect after an unrequested close.
 *     - `minDelay` (ms, default 500), `maxDelay` (ms, default 30000), `factor`
 *       (default 2): the n-th retry waits `min(maxDelay, minDelay * factor^(n-1))`,
 *     - `jitter` (0..1, default 0.2): ± that fraction of randomness on each delay,
 *     - `maxRetries` (default `Infinity`): give up after that many failed attempts
 *       in a row (the count resets whenever a connection opens).
 *     - `shouldReconnect(info)`: called on every unrequested close with the same
 *       `info` as the `close` event; return (or resolve to) `false` to stop.
 *     - `json` (`'auto'` | `true` | `false`, default `'auto'`): `'auto'` parses text
 *       frames that look like JSON objects/arrays and falls back to the raw string;
 *       `true` parses every text frame (a parse failure is an `error` event);
 *       `false` never parses.
 *     - `resume` (boolean, default `true`): track message positions and resume after a
 *       reconnect (above); `false` delivers every message as it comes.
 *     - `binaryType` (default `'arraybuffer'`), `WebSocket` (a constructor, for tests
 *       or Node).
 *
 * Methods
 *   `connect()`          start (or restart after `close()`); returns `this`.
 *   `send(data)`         send a string, ArrayBuffer, typed array or Blob; returns
 *                        `true` if handed to the socket, `false` when not open.
 *   `sendJson(value)`    `send(JSON.stringify(value))`.
 *   `close(code = 1000, reason = '')`  close for good: no reconnect.
 *   `reconnectNow()`     skip the current backoff wait and try immediately.
 *   `on(type, fn)`       subscribe; returns an unsubscribe function.
 *   `off(type, fn)`      unsubscribe.
 *   `probe(url = '/healthz')`  resolve `true` if the HTTP server answers 2xx.
 *
 * Properties (read-only)
 *   `state`   `'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'`.
 *   `url`     the resolved `ws(s):` URL.  `attempt`  failed attempts in a row.
 *   `socket`  the current `WebSocket` or `null`.
 *   `position`  the last position seen, `'EPOCH:OFFSET'`, or `null` (none yet, after a
 *             `reset` `not-recovered`, or with `resume: false`). Kept across
 *             `close()`/`connect()`, so a reconnect after `connect()` resumes too.
 *
 * Events (`on(type, fn)`; `fn` receives one argument unless noted)
 *   `open`         `{ url, attempt, since }` — `attempt` is how many retries it took;
 *                  `since`: the position asked to resume from, or `null`.
 *   `message`      `(data, event)` — parsed JSON, a string, or an ArrayBuffer/Blob.
 *   `close`        `{ code, reason, wasClean, opened, willReconnect, byClient }`.
 *                  `opened: false` means the handshake never completed (refused,
 *                  e.g. HTTP 403 from a plugin's `on-open`, or server unreachable).
 *                  Leaving a connection to resume after a gap reports
 *                  `{ code: 1000, reason: 'gap', byClient: true, willReconnect: true }`.
 *   `error`        `{ event, error?, opened }` — a socket error (always followed by
 *                  `close`), or a JSON parse error with `json: true`.
 *   `reconnecting` `{ attempt, delay, at }` — a retry is scheduled in `delay` ms
 *                  (`at` is the `Date.now()` it will fire at).
 *   `state`        the new `state` string.
 *   `reset`        `{ reason, latest, previous }` — the messages since `previous` (the
 *                  position before the reset) cannot be replayed: `reason`
 *                  `'not-recovered'` (the server said so; the history it keeps follows
 *                  as `message`s, oldest first) or `'epoch'` (a live message of a new
 *                  history epoch; it follows as a `message`). `latest`: the server's
 *                  newest position, if it said (else `null`). When `latest` has the
 *                  epoch of `previous`, what follows may repeat messages already
 *                  delivered (a view rebuilds from it); otherwise it is all new.
 *   `recovered`    `{ latest, replayed }` — after a reconnect with `since`, the whole
 *                  gap was replayed (`replayed` messages, already delivered).
 *
 * @module wsgate-client
 * @license Apache-2.0
 */

const DEFAULTS = Object.freeze({
  protocols: undefined,
  reconnect: true,
  minDelay: 500,
  maxDelay: 30_000,
  factor: 2,
  jitter: 0.2,
  maxRetries: Infinity,
  shouldReconnect: undefined,
  json: 'auto',
  binaryType: 'arraybuffer',
  resume: true,
  WebSocket: undefined,
});

const EVENTS = ['open', 'message', 'close', 'error', 'reconnecting', 'state', 'reset', 'recovered'];

/**
 * Resolves `url` to a `ws:`/`wss:` URL, relative to the current page if needed.
 * @param {string | URL} url
 * @param {string} [base] defaults to `location.href` in a browser
 * @returns {string}
 */
export function toWebSocketUrl(url, base = globalThis.location?.href) {
  const u = new URL(url, base);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new TypeError(`not a WebSocket URL: ${u.href}`);
  }
  u.hash = '';
  return u.href;
}

/**
 * The delay before retry number `attempt` (1-based), without jitter.
 * @param {number} attempt
 * @param {{minDelay:number, maxDelay:number, factor:number}} opts
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, { minDelay, maxDelay, factor }) {
  const exp = Math.max(0, attempt - 1);
  return Math.min(maxDelay, minDelay * Math.pow(factor, exp));
}

/**
 * Parses a position `EPOCH:OFFSET` (the last `:` separates them; the epoch is not
 * empty, the offset a decimal integer). Offsets are BigInts: they are u64 on the server.
 * @param {string} text
 * @returns {{epoch: string, offset: bigint} | null} `null` if `text` is not a position
 */
export function parsePosition(text) {
  if (typeof text !== 'string') return null;
  const i = text.lastIndexOf(':');
  const epoch = text.slice(0, i);
  const offset = text.slice(i + 1);
  if (i < 1 || !/^[0-9]{1,20}$/.test(offset)) return null;
  const n = BigInt(offset);
  return n <= 0xffff_ffff_ffff_ffffn ? { epoch, offset: n } : null;
}

/**
 * `url` with its `since` query parameter set to `position` (an existing one replaced).
 * Only that parameter is touched: the rest of the query keeps its exact encoding.
 * @param {string} url
 * @param {string} position `EPOCH:OFFSET`
 * @returns {string}
 */
export function withSince(url, position) {
  const u = new URL(url);
  const kept = u.search.slice(1).split('&').filter((part) => {
    if (part === '') return false;
    const key = part.split('=', 1)[0];
    try {
      return decodeURIComponent(key.replace(/\+/g, ' ')) !== 'since';
    } catch {
      return true;
    }
  });
  const at = position.lastIndexOf(':');
  kept.push(`since=${encodeURIComponent(position.slice(0, at))}:${position.slice(at + 1)}`);
  u.search = `?${kept.join('&')}`;
  return u.href;
}

const formatPosition = (pos) => `${pos.epoch}:${pos.offset}`;

export class WsgateClient {
  /**
   * @param {string | URL} url
   * @param {Partial<typeof DEFAULTS>} [options]
   */
  constructor(url, options = {}) {
    this.options = { ...DEFAULTS, ...options };
    this._url = toWebSocketUrl(url);
    this._listeners = new Map(EVENTS.map((t) => [t, new Set()]));
    this._socket = null;
    this._state = 'idle';
    this._attempt = 0;
    this._timer = null;
    this._retryAt = 0;
    this._stopped = true;
    this._generation = 0; // ignores events of sockets we have abandoned
    this._pos = null; // last position delivered: { epoch, offset: bigint }
    this._replayed = 0; // positioned messages delivered on this connection so far
    this._gapRetries = 0; // reconnects after a gap in a row, without progress
    this._onOnline = () => {
      if (this._state === 'reconnecting') this.reconnectNow();
    };
  }

  get state() { return this._state; }
  get url() { return this._url; }
  get attempt() { return this._attempt; }
  get socket() { return this._socket; }
  get position() { return this._pos && formatPosition(this._pos); }

  /**
   * Subscribes to an event. Returns a function that unsubscribes.
   * @param {'open'|'message'|'close'|'error'|'reconnecting'|'state'|'reset'|'recovered'} type
   * @param {Function} fn
   * @returns {() => void}
   */
  on(type, fn) {
    const set = this._listeners.get(type);
    if (!set) throw new TypeError(`unknown event "${type}" (one of ${EVENTS.join(', ')})`);
    set.add(fn);
    return () => set.delete(fn);
  }

  /** Unsubscribes `fn` from `type`. */
  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  /** Opens the connection (and keeps it open until `close()`). */
  connect() {
    if (!this._stopped) return this;
    this._stopped = false;
    this._attempt = 0;
    this._gapRetries = 0;
    globalThis.addEventListener?.('online', this._onOnline);
    this._open();
    return this;
  }

  /**
   * Sends a message if the socket is open.
   * @param {string | ArrayBuffer | ArrayBufferView | Blob} data
   * @returns {boolean} whether it was handed to the socket
   */
  send(data) {
    const ws = this._socket;
    if (!ws || ws.readyState !== 1 /* OPEN */) return false;
    ws.send(data);
    return true;
  }

  /** Sends `value` as a JSON text message. @returns {boolean} */
  sendJson(value) {
    return this.send(JSON.stringify(value));
  }

  /** Skips the backoff wait and retries now (no-op unless waiting to reconnect). */
  reconnectNow() {
    if (this._stopped || this._state !== 'reconnecting') return;
    clearTimeout(this._timer);
    this._timer = null;
    this._open();
  }

  /**
   * Closes the connection for good: no reconnect until `connect()` is called again.
   * @param {number} [code=1000]
   * @param {string} [reason='']
   */
  close(code = 1000, reason = '') {
    if (this._stopped) return;
    this._stopped = true;
    clearTimeout(this._timer);
    this._timer = null;
    globalThis.removeEventListener?.('online', this._onOnline);
    const ws = this._socket;
    this._socket = null;
    this._generation++;
    if (ws && (ws.readyState === 0 || ws.readyState === 1)) {
      const opened = ws.readyState === 1;
      try { ws.close(code, reason); } catch { ws.close(); }
      // The close handshake completes in the background; report the close now.
      this._emit('close', {
        code, reason, wasClean: true, opened, willReconnect: false, byClient: true,
      });
    }
    this._setState('closed');
  }

  /**
   * Checks whether the HTTP side of the server answers: after a close with
   * `opened: false`, `true` means the server is up and refused the handshake,
   * `false` that it is unreachable.
   * @param {string} [path='/healthz']
   * @param {number} [timeoutMs=3000]
   * @returns {Promise<boolean>}
   */
  async probe(path = '/healthz', timeoutMs = 3000) {
    const u = new URL(path, this._url);
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    const ctrl = new AbortController();
    const t = setTimeout(() => ctrl.abort(), timeoutMs);
    try {
      const res = await fetch(u, { cache: 'no-store', signal: ctrl.signal });
      return res.ok;
    } catch {
      return false;
    } finally {
      clearTimeout(t);
    }
  }

  // ---- internals -----------------------------------------------------------

  _open() {
    const Impl = this.options.WebSocket ?? globalThis.WebSocket;
    const generation = ++this._generation;
    const since = this.options.resume ? this.position : null;
    const url = since ? withSince(this._url, since) : this._url;
    this._replayed = 0;
    this._setState('connecting');
    let ws;
    try {
      ws = new Impl(url, this.options.protocols);
    } catch (error) {
      // Bad URL or a blocked port: reported like a failed connection.
      this._emit('error', { event: null, error, opened: false });
      this._handleClose(generation, { code: 1006, reason: String(error?.message ?? error), wasClean: false }, false);
      return;
    }
    ws.binaryType = this.options.binaryType;
    this._socket = ws;
    let opened = false;

    ws.onopen = () => {
      if (generation !== this._generation) return;
      opened = true;
      const attempt = this._attempt;
      this._attempt = 0;
      this._setState('open');
      this._emit('open', { url, attempt, since });
    };
    ws.onmessage = (event) => {
      if (generation !== this._generation) return;
      const data = this._decode(event.data);
      // _admit may emit reset/recovered or start over after a gap; a listener may close.
      if (!this._admit(data) || generation !== this._generation) return;
      this._emit('message', data, event);
    };
    ws.onerror = (event) => {
      if (generation !== this._generation) return;
      this._emit('error', { event, opened });
    };
    ws.onclose = (event) => {
      this._handleClose(generation, event, opened);
    };
  }

  async _handleClose(generation, event, opened) {
    if (generation !== this._generation) return;
    this._socket = null;
    const info = {
      code: event.code,
      reason: event.reason ?? '',
      wasClean: !!event.wasClean,
      opened,
      attempt: this._attempt,
      byClient: false,
    };
    let again = this.options.reconnect && !this._stopped && this._attempt < this.options.maxRetries;
    if (again && typeof this.options.shouldReconnect === 'function') {
      try {
        again = (await this.options.shouldReconnect(info)) !== false;
      } catch {
        again = false;
      }
      // close() or connect() may have been called while we were waiting.
      if (generation !== this._generation || this._stopped) {
        if (this._stopped) this._emit('close', { ...info, willReconnect: false });
        return;
      }
    }
    this._emit('close', { ...info, willReconnect: again });
    if (!again) {
      this._stopped = true;
      globalThis.removeEventListener?.('online', this._onOnline);
      this._setState('closed');
      return;
    }
    this._attempt++;
    this._retryLater(this._attempt);
  }

  /** Schedules retry number `attempt` after its backoff delay. */
  _retryLater(attempt) {
    const generation = this._generation;
    const delay = this._jittered(backoffDelay(attempt, this.options));
    this._retryAt = Date.now() + delay;
    this._setState('reconnecting');
    this._emit('reconnecting', { attempt, delay, at: this._retryAt });
    this._timer = setTimeout(() => {
      this._timer = null;
      if (!this._stopped && generation === this._generation) this._open();
    }, delay);
  }

  /**
   * The resume rules (see the module doc) for one incoming message: updates the
   * position, emits `reset`/`recovered`, and says whether to deliver the message.
   * @returns {boolean}
   */
  _admit(data) {
    if (!this.options.resume || data === null || typeof data !== 'object' || Array.isArray(data)) return true;
    if (data.type === 'recovery' && typeof data.recovered === 'boolean') {
      const latest = typeof data.latest === 'string' ? data.latest : null;
      if (data.recovered) {
        this._emit('recovered', { latest, replayed: this._replayed });
      } else {
        // The kept history follows, oldest first: its first message sets the position.
        const previous = this.position;
        this._pos = null;
        this._emit('reset', { reason: 'not-recovered', latest, previous });
      }
      return false;
    }
    const pos = parsePosition(data.pos);
    if (!pos) return true;
    const last = this._pos;
    if (last && pos.epoch === last.epoch) {
      if (pos.offset <= last.offset) return false; // already delivered (a replay)
      if (pos.offset > last.offset + 1n) {
        this._resumeAfterGap();
        return false;
      }
      this._gapRetries = 0;
      this._pos = pos;
    } else {
      this._pos = pos;
      if (last) this._emit('reset', { reason: 'epoch', latest: data.pos, previous: formatPosition(last) });
    }
    this._replayed++;
    return true;
  }

  /**
   * Messages were lost on the way (a node lost its Redis subscription, say): drop this
   * connection and reconnect with `since` at once, so that the plugin replays the gap.
   * Only a gap that comes back without any progress in between waits for a backoff,
   * so that a server that keeps skipping cannot make the client spin.
   */
  _resumeAfterGap() {
    const ws = this._socket;
    this._generation++; // the old socket's remaining events are ignored
    this._socket = null;
    this._gapRetries++;
    try { ws?.close(1000, 'gap'); } catch { /* already closing */ }
    this._emit('close', {
      code: 1000, reason: 'gap', wasClean: true, opened: true, attempt: this._attempt, willReconnect: true, byClient: true,
    });
    if (this._stopped) return; // a close listener called close()
    if (this._gapRetries === 1) this._open();
    else this._retryLater(this._gapRetries - 1);
  }

  _jittered(ms) {
    const j = Math.min(1, Math.max(0, this.options.jitter));
    return Math.round(ms * (1 - j + Math.random() * 2 * j));
  }

  _decode(data) {
    if (typeof data !== 'string' || this.options.json === false) return data;
    if (this.options.json === 'auto') {
      const c = data.trimStart()[0];
      if (c !== '{' && c !== '[') return data;
      try { return JSON.parse(data); } catch { return data; }
    }
    try {
      return JSON.parse(data);
    } catch (error) {
      this._emit('error', { event: null, error, opened: true });
      return data;
    }
  }

  _setState(state) {
    if (this._state === state) return;
    this._state = state;
    this._emit('state', state);
  }

  _emit(type, ...args) {
    for (const fn of [...this._listeners.get(type)]) {
      try {
        fn(...args);
      } catch (err) {
        // A listener's bug must not break the connection loop.
        setTimeout(() => { throw err; });
      }
    }
  }
}

export default WsgateClient;
