/// <reference path="./wsgate-plugin-types.d.ts" />
declare module 'wsgate:plugin/host@0.1.3' {
  /**
   * Queues a message for one connection.
   */
  export function send(conn: ConnectionId, msg: Message): void;
  /**
   * Sends to every open connection of this plugin except `except`;
   * returns how many connections it was queued for.
   */
  export function broadcast(msg: Message, except: ConnectionId | undefined): number;
  /**
   * Starts the close handshake with `code` (1000-1003, 1007-1014 or
   * 3000-4999) and a reason of at most 123 bytes.
   */
  export function close(conn: ConnectionId, code: number, reason: string): void;
  /**
   * Adds a connection to a channel (channels are created on first use).
   */
  export function subscribe(conn: ConnectionId, channel: string): void;
  export function unsubscribe(conn: ConnectionId, channel: string): void;
  /**
   * Sends to every subscriber of `channel` except `except`; returns the
   * number of connections it was queued for. On a recorded channel (see
   * `publish-recorded`) the message is recorded too; if the history
   * backend fails, nothing is sent and the answer is `limit-reached`.
   */
  export function publish(channel: string, msg: Message, except: ConnectionId | undefined): number;
  /**
   * Channels with at least one subscriber. In a cluster: anywhere in
   * the cluster, as last announced by the other nodes (they announce a
   * channel's first and last member as it happens).
   */
  export function channels(): Array<string>;
  /**
   * Subscribers of one channel. In a cluster: on every node, asked of
   * the nodes with members when called; a node that does not answer
   * within `cluster.presence_timeout` is left out.
   */
  export function subscribers(channel: string): BigUint64Array;
  /**
   * This plugin's open connections on this node.
   */
  export function connections(): BigUint64Array;
  /**
   * This plugin's open connections. In a cluster: on every node, this
   * node's exactly and the others' as of their last heartbeat
   * (`cluster.heartbeat`).
   */
  export function connectionCount(): number;
  /**
   * `channels`, `subscribers`, `tagged` and `connection-count` for
   * this node alone (the same answers when not clustered).
   */
  export function nodeChannels(): Array<string>;
  export function nodeSubscribers(channel: string): BigUint64Array;
  export function nodeTagged(tag: string): BigUint64Array;
  export function nodeConnectionCount(): number;
  /**
   * Publishes to a recorded channel: one that a `[history] channels`
   * pattern of the plugin's sidecar matches. The message is given the
   * channel's next position and kept in its history (bounded by
   * `[history] size` and `ttl`), then queued to every subscriber but
   * `except`. Every subscriber, on every node, gets a channel's
   * recorded messages in the order of their positions.
   */
  export function publishRecorded(channel: string, msg: Publication, except: ConnectionId | undefined): Published;
  /**
   * Recorded messages of `channel` after `since` (from the oldest kept
   * when `none`), at most `limit` (and never more than the history's
   * size). A client that comes back passes the position of the last
   * message it got; replay the page to it, or tell it to reload when
   * the page is not `recovered`.
   */
  export function history(channel: string, since: Position | undefined, limit: number): HistoryPage;
  /**
   * Per-connection attributes: the session scope. Gone when the
   * connection closes.
   */
  export function getAttribute(conn: ConnectionId, key: string): string | undefined;
  /**
   * `none` removes the attribute.
   */
  export function setAttribute(conn: ConnectionId, key: string, value: string | undefined): void;
  /**
   * Tags group connections across channels, e.g. `user:42` for one user
   * on several devices.
   */
  export function tag(conn: ConnectionId, tag: string): void;
  export function untag(conn: ConnectionId, tag: string): void;
  /**
   * Connections with `tag`. In a cluster: on every node, as
   * `subscribers` asks.
   */
  export function tagged(tag: string): BigUint64Array;
  /**
   * Sends to every connection with `tag` except `except`; returns the count.
   */
  export function sendToTag(tag: string, msg: Message, except: ConnectionId | undefined): number;
  /**
   * Plugin key-value state: the application scope. Shared by all of the
   * plugin's instances; survives instance recycling and reloads.
   */
  export function stateGet(key: string): Uint8Array | undefined;
  /**
   * `none` deletes the key.
   */
  export function stateSet(key: string, value: Uint8Array | undefined): void;
  /**
   * Adds `delta` to the decimal integer stored at `key` (an absent key
   * counts as 0) and returns the result: atomic across the plugin's
   * instances and, with a shared backend, across nodes.
   */
  export function stateIncrement(key: string, delta: bigint): bigint;
  /**
   * Sets `key` to `new` (`none` deletes it) only if its value is
   * `expected` (`none`: the key is absent); returns whether it did.
   */
  export function stateCompareAndSwap(key: string, expected: Uint8Array | undefined, new_: Uint8Array | undefined): boolean;
  /**
   * Sets `key`, which then expires after `ttl-ms`. `state-set` and a
   * successful `state-compare-and-swap` make a key permanent again.
   */
  export function stateSetExpiring(key: string, value: Uint8Array, ttlMs: bigint): void;
  /**
   * Keys that start with `prefix`, in byte order, at most `limit` of
   * them (and never more than the host's `limits.state_keys_listed`).
   */
  export function stateKeys(prefix: string, limit: number): Array<string>;
  /**
   * Opens a WebSocket client connection to `url` (`ws://` or `wss://`,
   * allowed by the plugin's sidecar), offering `protocols` and sending
   * `headers` with the handshake. Returns at once: `on-upstream-open`
   * follows when the handshake succeeds, `on-upstream-close` (1006) if
   * it fails. Messages sent before then wait in its queue.
   */
  export function upstreamConnect(url: string, protocols: Array<string>, headers: Array<[string, string]>): UpstreamId;
  export function upstreamSend(id: UpstreamId, msg: Message): void;
  /**
   * Starts the close handshake, as `close` does for a client.
   */
  export function upstreamClose(id: UpstreamId, code: number, reason: string): void;
  /**
   * This plugin's upstreams that are connecting or open.
   */
  export function upstreams(): BigUint64Array;
  /**
   * Schedules `on-timer(id)` after `delay-ms`, then every `delay-ms` if
   * `repeat`. Returns the timer id.
   */
  export function setTimer(delayMs: number, repeat: boolean): bigint;
  /**
   * Returns false if no such timer was pending.
   */
  export function cancelTimer(id: bigint): boolean;
  export function log(level: LogLevel, msg: string): void;
  export type ConnectionId = import('wsgate:plugin/types@0.1.3').ConnectionId;
  export type Message = import('wsgate:plugin/types@0.1.3').Message;
  export type Error = import('wsgate:plugin/types@0.1.3').Error;
  export type LogLevel = import('wsgate:plugin/types@0.1.3').LogLevel;
  export type StateError = import('wsgate:plugin/types@0.1.3').StateError;
  export type UpstreamId = import('wsgate:plugin/types@0.1.3').UpstreamId;
  export type UpstreamError = import('wsgate:plugin/types@0.1.3').UpstreamError;
  export type Position = import('wsgate:plugin/types@0.1.3').Position;
  export type Publication = import('wsgate:plugin/types@0.1.3').Publication;
  export type Published = import('wsgate:plugin/types@0.1.3').Published;
  export type HistoryPage = import('wsgate:plugin/types@0.1.3').HistoryPage;
  export type HistoryError = import('wsgate:plugin/types@0.1.3').HistoryError;
}
