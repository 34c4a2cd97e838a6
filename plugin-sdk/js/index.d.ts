// Types for the wsgate JavaScript SDK (index.js). The WIT-level types under
// types/ are generated from wit/wsgate.wit by `npm run types`.
/// <reference path="./types/interfaces/wsgate-plugin-types.d.ts" />
/// <reference path="./types/interfaces/wsgate-plugin-host.d.ts" />
/// <reference path="./types/interfaces/wsgate-plugin-listener.d.ts" />
/// <reference path="./types/interfaces/wsgate-plugin-upstream-listener.d.ts" />
/// <reference path="./types/interfaces/wsgate-plugin-error-listener.d.ts" />
/// <reference path="./types/interfaces/wsgate-plugin-batch-listener.d.ts" />

import type * as wit from 'wsgate:plugin/types@0.1.3';

/**
 * Every host call: send, publish, history, attributes, tags, state,
 * upstreams, timers, log. The delivering ones (send, broadcast, sendToTag,
 * publish, publishRecorded, close) end a batch of messages (see
 * `Listener.onMessages`): call them through this object, not the bindings.
 */
export declare const host: Readonly<typeof import('wsgate:plugin/host@0.1.3')>;

/** Opaque connection id; a `bigint` because the WIT type is `u64`. */
export type ConnectionId = wit.ConnectionId;
export type LogLevel = wit.LogLevel;
/** Opaque id of an upstream (outbound WebSocket); a `bigint`. */
export type UpstreamId = wit.UpstreamId;
/**
 * A failed host call throws an error whose `payload` is one of these: an
 * `Error` code, a `StateError` code for the state calls that return one
 * (stateIncrement, stateCompareAndSwap, stateSetExpiring, stateKeys), an
 * `UpstreamError` code for the upstream calls.
 */
export type HostErrorCode = wit.Error | wit.StateError | wit.UpstreamError | wit.HistoryError;
/** A place in a channel's history; as text `EPOCH:OFFSET`. */
export type Position = wit.Position;
export type Published = wit.Published;
export type HistoryPage = wit.HistoryPage;
export type HistoryEntry = wit.HistoryEntry;
export type Message = wit.Message;
export type OpenDecision = wit.OpenDecision;

export declare const Message: {
  text(text: string): wit.MessageText;
  binary(bytes: Uint8Array | ArrayLike<number>): wit.MessageBinary;
  /** The text of a text message, undefined for binary. */
  asText(msg: Message): string | undefined;
};

export declare const OpenDecision: {
  accept(): wit.OpenDecisionAccept;
  /** Accept and send `msg` (a string is sent as text) before anything else. */
  greet(msg: Message | string): wit.OpenDecisionGreet;
  /** Refuse the handshake with `status` (400-599) and a short reason. */
  reject(status: number, reason: string): wit.OpenDecisionReject;
};

export declare const Position: {
  /**
   * The position written as `EPOCH:OFFSET`: the epoch is everything before
   * the last ':'. Throws a SyntaxError for an empty epoch or an offset that
   * is not a decimal u64.
   */
  parse(text: string): Position;
  /** The `EPOCH:OFFSET` text of a position. */
  format(pos: Position): string;
};

/**
 * Publishes `msg` (a string is text) to `channel` and records it in its
 * history. Throws as host calls do (hostError: 'not-recorded' when the
 * sidecar's `[history] channels` does not match the channel).
 */
export declare function publishRecorded(channel: string, msg: Message | string, except?: ConnectionId): Published;
/**
 * Publishes and records a text that contains its own position: `render(pos)`
 * is called once with a random placeholder, which must appear exactly once
 * in the text it returns; the host puts `EPOCH:OFFSET` in its place.
 */
export declare function publishPositioned(channel: string, render: (pos: string) => string, except?: ConnectionId): Published;
/**
 * One page of `channel`'s history after `since` (a position or its text;
 * undefined: all kept entries), at most `limit` (default 100) entries.
 */
export declare function history(channel: string, since?: Position | string, limit?: number): HistoryPage;
/** history() page after page, up to the `latest` of the last page. */
export declare function historyPages(channel: string, since?: Position | string, limit?: number): Generator<HistoryPage, void, void>;

/** The handshake request, with lookups added by the SDK. */
export interface Request extends wit.Request {
  /** The first query parameter named `key`. */
  queryParam(key: string): string | undefined;
  /** The route parameter `key`, e.g. `channel` for `/ws/chat/{channel}`. */
  param(key: string): string | undefined;
  /** A header by name (case-insensitive). */
  header(name: string): string | undefined;
  cookie(name: string): string | undefined;
}

/** What a hook returns, or a Promise of it: any hook may be `async`. */
type MaybeAsync<T> = T | Promise<T>;

/**
 * The hooks a listener module may export; each one is optional. Any hook
 * may be `async` (e.g. to `await fetch(...)`): the component runs its
 * event loop until the Promise settles, and the server waits for that
 * within the hook's deadline.
 */
export interface Hooks {
  /** Decide on a connection before the upgrade; returning nothing accepts. */
  onOpen?(conn: ConnectionId, req: Request): MaybeAsync<OpenDecision | void>;
  /** A message from the client; a returned message is the reply. */
  onMessage?(conn: ConnectionId, msg: Message): MaybeAsync<Message | void>;
  /** The connection closed with `code` (1006 when the peer vanished). */
  onClose?(conn: ConnectionId, code: number, reason: string): MaybeAsync<void>;
  /** The first connection on `route` is about to open. */
  onFirstOpen?(route: string): MaybeAsync<void>;
  /** The last connection on `route` has closed. */
  onLastClose?(route: string): MaybeAsync<void>;
  /** A payload pushed from outside through the server's publish API. */
  onPush?(payload: Message): MaybeAsync<void>;
  /** A timer set with `host.setTimer` fired. */
  onTimer?(id: bigint): MaybeAsync<void>;
  /**
   * A hook for `conn` threw or ran past its deadline, and the server closed
   * the connection (1011); `detail` says which hook and why. Runs on a
   * fresh instance; what it throws is only logged.
   */
  onError?(conn: ConnectionId, detail: string): MaybeAsync<void>;
  /** An upstream opened with `host.upstreamConnect` is connected. */
  onUpstreamOpen?(id: UpstreamId): MaybeAsync<void>;
  /** A message from an upstream. */
  onUpstreamMessage?(id: UpstreamId, msg: Message): MaybeAsync<void>;
  /** An upstream closed, or could not connect (1006, with the reason). */
  onUpstreamClose?(id: UpstreamId, code: number, reason: string): MaybeAsync<void>;
}

/** Logs through the host's tracing under the plugin's own target. */
export declare function log(level: LogLevel, msg: string): void;
/** An environment variable the sidecar was granted (`[grants] env`), else undefined. */
export declare function env(name: string): string | undefined;
/** The error code of a failed host call, undefined for any other error. */
export declare function hostError(err: unknown): HostErrorCode | undefined;
/** What toListener() makes: every hook, and the batch export. */
export interface Listener extends Required<Hooks> {
  /**
   * `batch-listener`'s on-messages: onMessage for each message in turn,
   * their replies in order, ending after a message whose handling called a
   * delivering host call (the server hands the rest to its next call). A
   * Promise if an onMessage was async.
   */
  onMessages(conn: ConnectionId, msgs: Message[]): MaybeAsync<Array<Message | void>>;
}

/**
 * The exports for a module of hooks (build.mjs calls it): one object with
 * every hook of `listener`, `upstream-listener`, `error-listener` and
 * `batch-listener`.
 */
export declare function toListener(hooks: Hooks): Listener;
