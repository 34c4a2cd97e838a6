// Types for the wsgate JavaScript SDK (index.js). The WIT-level types under
// types/ are generated from wit/wsgate.wit by `npm run types`.
/// <reference path="./types/interfaces/wsgate-plugin-types.d.ts" />
/// <reference path="./types/interfaces/wsgate-plugin-host.d.ts" />
/// <reference path="./types/interfaces/wsgate-plugin-listener.d.ts" />

import type * as wit from 'wsgate:plugin/types@0.1.0';

/** Every host call: send, publish, attributes, tags, state, timers, log. */
export * as host from 'wsgate:plugin/host@0.1.0';

/** Opaque connection id; a `bigint` because the WIT type is `u64`. */
export type ConnectionId = wit.ConnectionId;
export type LogLevel = wit.LogLevel;
/** A failed host call throws an error whose `payload` is one of these. */
export type HostErrorCode = wit.Error;
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

/** The hooks a listener module may export; each one is optional. */
export interface Hooks {
  /** Decide on a connection before the upgrade; returning nothing accepts. */
  onOpen?(conn: ConnectionId, req: Request): OpenDecision | void;
  /** A message from the client; a returned message is the reply. */
  onMessage?(conn: ConnectionId, msg: Message): Message | void;
  /** The connection closed with `code` (1006 when the peer vanished). */
  onClose?(conn: ConnectionId, code: number, reason: string): void;
  /** The first connection on `route` is about to open. */
  onFirstOpen?(route: string): void;
  /** The last connection on `route` has closed. */
  onLastClose?(route: string): void;
  /** A payload pushed from outside through the server's publish API. */
  onPush?(payload: Message): void;
  /** A timer set with `host.setTimer` fired. */
  onTimer?(id: bigint): void;
}

/** Logs through the host's tracing under the plugin's own target. */
export declare function log(level: LogLevel, msg: string): void;
/** The error code of a failed host call, undefined for any other error. */
export declare function hostError(err: unknown): HostErrorCode | undefined;
/** The `listener` export for a module of hooks (build.mjs calls it). */
export declare function toListener(hooks: Hooks): typeof import('wsgate:plugin/listener@0.1.0');
