// Types for the wsgate JavaScript SDK's test harness (testing.mjs).
import type { ConnectionId, HostErrorCode, LogLevel, Message, OpenDecision, Position, toListener } from './index.js';

export {
  host, hostError, log, Message, OpenDecision, toListener,
  Position, publishRecorded, publishPositioned, history, historyPages,
} from './index.js';

/** A listener as the build makes it: toListener() of a module of hooks. */
export type Listener = ReturnType<typeof toListener>;

/** What a failed host call throws, as the ComponentizeJS bindings do. */
export declare class ComponentError extends Error {
  constructor(value: HostErrorCode);
  /** The error code ('unknown-connection', 'closed', ...); also the message. */
  readonly payload: HostErrorCode;
}

/** The server's `[limits]` that host calls check. */
export interface Limits {
  /** The most keys one stateKeys call lists. */
  stateKeysListed: number;
  /** Upstreams a plugin may have connecting or open at once. */
  upstreamsPerPlugin: number;
  maxMessageSize: number;
  maxNameLen: number;
  channelsPerConnection: number;
  tagsPerConnection: number;
  attributesPerConnection: number;
  attributeBytes: number;
  stateBytes: number;
  timersPerPlugin: number;
  minTimerMs: number;
  deliveriesPerHook: number;
}

/** The server's defaults. */
export declare const DEFAULT_LIMITS: Readonly<Limits>;

type Pairs = Record<string, string> | Array<[string, string]>;
/** A driver's result, or a Promise of it once a hook was async: `await` works on both. */
type MaybeAsync<T> = T | Promise<T>;

/** A handshake to open; what is left out is derived as the server would. */
export interface OpenRequest {
  /** The path, with an optional ?query. */
  path?: string;
  /** The route pattern; default: the first of the host's `routes` that matches, else the path. */
  route?: string;
  /** Route parameters; default: matched from the route and the path. */
  params?: Pairs;
  /** Query parameters, after those in the path. */
  query?: Pairs | string;
  /** Header names are lower-cased, as the server does. */
  headers?: Pairs;
  /** Default: parsed from the cookie header. */
  cookies?: Pairs;
  remoteAddr?: string;
  /** Default: from the sec-websocket-protocol header. */
  subprotocols?: string[];
  /** Default: the first of the host's `subprotocols` the client offered. */
  protocol?: string;
}

/** One client connection opened with FakeHost.open(). */
export interface FakeConnection {
  readonly id: ConnectionId;
  readonly route: string;
  readonly path: string;
  /** What onOpen returned. */
  readonly decision: OpenDecision;
  /** `{ status, reason }` as the client would get it, if refused. */
  readonly rejection: { status: number; reason: string } | undefined;
  /** Accepted and not yet ended. */
  readonly open: boolean;
  /** Set once the plugin closed it with host.close: what onClose will report. */
  readonly closing: { code: number; reason: string } | undefined;
  /** Every message it was sent, in order (greeting first). */
  readonly received: Message[];
  /** The text messages it was sent. */
  texts(): string[];
  /** The messages received since the last take(), removed from `received`. */
  take(): Message[];
  /** Runs onMessage; returns the reply (also added to `received`). */
  sendText(text: string): MaybeAsync<Message | undefined>;
  sendBinary(data: Uint8Array | ArrayLike<number>): MaybeAsync<Message | undefined>;
  send(msg: Message): MaybeAsync<Message | undefined>;
  /**
   * One on-messages call with a burst (a string is text, bytes binary):
   * its results, one per message handled (fewer when one delivered or
   * closed); `received` gets the earlier replies, what was queued, the last.
   */
  onMessages(msgs: Array<Message | string | Uint8Array>): MaybeAsync<Array<Message | undefined>>;
  /**
   * The server's loop over a burst: on-messages until every message is
   * handled or the connection closes (on-message each for a burst of one,
   * or the rest after a call that handled only its first); the replies.
   */
  sendBurst(msgs: Array<Message | string | Uint8Array>): MaybeAsync<Array<Message | undefined>>;
  /** Runs onClose (with the plugin's close if it closed first), then onLastClose for the route's last. */
  close(code?: number, reason?: string): MaybeAsync<void>;
}

/** An upstream the plugin opened with host.upstreamConnect; the test plays its far end. */
export interface FakeUpstream {
  readonly id: bigint;
  readonly url: string;
  readonly protocols: string[];
  readonly headers: Array<[string, string]>;
  /** The listener whose hook opened it: its hooks hear the upstream's events. */
  readonly listener: Listener | undefined;
  readonly status: 'connecting' | 'open' | 'closing' | 'closed';
  /** Every message the plugin sent it, in order. */
  readonly sent: Message[];
  /** Set once the plugin called upstreamClose. */
  readonly closeSent: { code: number; reason: string } | undefined;
  /** What onUpstreamClose was told, once it was. */
  readonly closed: { code: number; reason: string } | undefined;
  /** The text messages the plugin sent it. */
  texts(): string[];
  /** The handshake succeeded: runs onUpstreamOpen. */
  open(listener?: Listener): MaybeAsync<void>;
  /** The upstream sends a message (a string is text, bytes binary): runs onUpstreamMessage. */
  send(msg: string | Uint8Array | Message, listener?: Listener): MaybeAsync<void>;
  /** The connection ends: runs onUpstreamClose (with the plugin's close if it closed first). */
  close(code?: number, reason?: string, listener?: Listener): MaybeAsync<void>;
  /** The upstream could not be reached, or vanished: onUpstreamClose with 1006. */
  fail(reason?: string, listener?: Listener): MaybeAsync<void>;
}

/**
 * An answer to the plugin's fetch(): a Response, a string (200, text), a
 * JSON value (200), `{ status, headers, body }`, an Error (fetch rejects
 * with it), or a function of the Request returning one of these.
 */
export type HttpAnswer =
  | Response
  | string
  | { status: number; headers?: HeadersInit; body?: BodyInit | null }
  | Error
  | object
  | ((request: Request) => HttpAnswer | undefined | Promise<HttpAnswer | undefined>);

export interface PendingTimer {
  id: bigint;
  delayMs: number;
  repeat: boolean;
  /** When it next falls due, in the host's virtual milliseconds. */
  due: number;
}

export interface FakeHostOptions {
  /** Route patterns, as in the plugin's sidecar. */
  routes?: string[];
  /** The sidecar's subprotocols, in order of preference. */
  subprotocols?: string[];
  limits?: Partial<Limits>;
  /** Answers to fetch(), by URL or 'METHOD URL'. */
  http?: Record<string, HttpAnswer> | Map<string, HttpAnswer>;
  /** Answers what `http` does not; undefined means no answer (the fetch is denied). */
  httpHandler?: (request: Request) => HttpAnswer | undefined | Promise<HttpAnswer | undefined>;
  /** Hostnames fetch() and upstreams may reach, as the sidecar grants them; default: any. */
  allowedHosts?: string[];
  /** Granted environment variables, which the SDK's env() reads. */
  env?: Record<string, string>;
  /** The sidecar's `[history]`; without it no channel is recorded. */
  history?: HistoryOptions;
}

/** A sidecar's `[history]` table. */
export interface HistoryOptions {
  /** Patterns of the recorded channels: `*` matches any run of characters. */
  channels?: string[];
  /** Messages kept per channel, 1-10000 (default 100). */
  size?: number;
  /** How long entries are kept: humantime text ("5m", the default) or milliseconds. */
  ttl?: string | number;
}

type HostCalls = typeof import('wsgate:plugin/host@0.1.3');

/** Every host call of the WIT, with the server's checks and errors. */
export interface FakeHost extends HostCalls {}

/** wsgate's host for one plugin, in memory. */
export declare class FakeHost {
  constructor(options?: FakeHostOptions);
  readonly routes: string[];
  readonly subprotocols: string[];
  readonly limits: Limits;
  /** Every publish and publishRecorded, in order; `position` where it was recorded, if it was. */
  readonly publishes: Array<{ channel: string; msg: Message; except: ConnectionId | undefined; reached: number; position: Position | undefined }>;
  /** The `[history]` in effect (`ttlMs` in milliseconds), or undefined: nothing recorded. */
  readonly historyConfig: (Required<HistoryOptions> & { ttlMs: number }) | undefined;
  /** A history error code ('unavailable', ...) that publishRecorded and history then throw. */
  historyError: HostErrorCode | undefined;
  /** History is lost: `channel` (every one if undefined) starts a new epoch, empty. */
  newEpoch(channel?: string): void;
  /** Every successful close the plugin made. */
  readonly closes: Array<{ conn: ConnectionId; code: number; reason: string }>;
  readonly logs: Array<{ level: LogLevel; msg: string }>;
  /** Virtual milliseconds, moved by advanceTime(). */
  now: number;
  /** The state, key -> bytes (expired keys gone). */
  readonly state: Map<string, Uint8Array>;
  /** Answers to fetch(), by URL or 'METHOD URL' (which wins). */
  http: Map<string, HttpAnswer>;
  httpHandler: FakeHostOptions['httpHandler'];
  /** Every request the plugin fetched, in order. */
  readonly httpRequests: Request[];
  /** Every upstream the plugin opened, by id. */
  readonly upstreamsOpened: Map<bigint, FakeUpstream>;
  /** Runs onFirstOpen for the route's first connection, subscribes the `channel` parameter, runs onOpen. */
  open(listener: Listener, request?: string | OpenRequest): MaybeAsync<FakeConnection>;
  /** Runs onPush: a string is sent as text, bytes as binary. */
  push(listener: Listener, payload: string | Uint8Array | ArrayBuffer | Message): MaybeAsync<void>;
  /** Runs onError, as the server does after a hook for `conn` failed. */
  hookFailed(conn: ConnectionId | number | { id: ConnectionId }, detail?: string, listener?: Listener): MaybeAsync<void>;
  readonly pendingTimers: PendingTimer[];
  /** Fires every pending timer once, soonest first; returns their ids. */
  fireTimers(): MaybeAsync<bigint[]>;
  /** Moves virtual time on, firing timers as they fall due and expiring state; returns the ids fired. */
  advanceTime(ms: number): MaybeAsync<bigint[]>;
  /** The handle of an open connection. */
  connection(id: ConnectionId | number): FakeConnection | undefined;
  /** The handle of an upstream the plugin opened. */
  upstream(id: bigint | number): FakeUpstream | undefined;
}

/** Loads a listener module (a plugin's index.js) and wraps it with toListener(). */
export declare function loadListener(path: string | URL): Promise<Listener>;

export interface ServeOptions {
  /** The TOML of the plugin's sidecar; default: the .toml beside the .wasm, if any. */
  sidecar?: string;
  /** The plugin name; default: the .wasm file's name. */
  name?: string;
  /** More wsgate flags. */
  args?: string[];
  /** More environment variables for the server. */
  env?: Record<string, string>;
  /** How long to wait for /readyz (default 120 s). */
  timeoutMs?: number;
}

export interface Server {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  readonly port: number;
  readonly adminPort: number;
  /** The admin API's bearer token. */
  readonly adminToken: string;
  /** The ws:// URL of `path` (default: /ws/NAME). */
  wsUrl(path?: string): string;
  /** A WebSocket client on `path` (default: /ws/NAME); see connect(). */
  connect(path?: string): Promise<WebSocketClient>;
  /** What the server printed so far. */
  logs(): string;
  /** Stops the server and removes its plugin directory. */
  stop(): Promise<void>;
}

export type WebSocketEvent =
  | { type: 'text'; data: string }
  | { type: 'binary'; data: Uint8Array }
  | { type: 'close'; code: number; reason: string }
  | { type: 'end' };

/** A minimal WebSocket client for integration tests (pings are answered). */
export interface WebSocketClient {
  sendText(text: string): void;
  sendBinary(data: Uint8Array | ArrayLike<number>): void;
  /** The next event, or a rejection after `ms` (default 5000). */
  next(ms?: number): Promise<WebSocketEvent>;
  /** Sends a close frame; the server's comes as a 'close' event. */
  close(code?: number, reason?: string): void;
  destroy(): void;
}

/** The server answered the upgrade with an HTTP status instead of 101. */
export declare class WebSocketRefused extends Error {
  readonly status: number;
}

/** Connects to a ws:// URL; rejects with WebSocketRefused if not upgraded. */
export declare function connect(url: string): Promise<WebSocketClient>;

/** Runs the wsgate binary ($WSGATE_BIN, else on PATH) with one built plugin. */
export declare function serve(wasmPath: string, options?: ServeOptions): Promise<Server>;
