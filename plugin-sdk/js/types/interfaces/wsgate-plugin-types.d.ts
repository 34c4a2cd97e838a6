declare module 'wsgate:plugin/types@0.1.3' {
  /**
   * Opaque id of one WebSocket connection, unique for the server's lifetime.
   */
  export type ConnectionId = bigint;
  /**
   * A WebSocket data message. The host validates that text is UTF-8.
   */
  export type Message = MessageText | MessageBinary;
  export interface MessageText {
    tag: 'text',
    val: string,
  }
  export interface MessageBinary {
    tag: 'binary',
    val: Uint8Array,
  }
  /**
   * The HTTP upgrade request, seen by `on-open` before the upgrade happens.
   */
  export interface Request {
    /**
     * The request path, e.g. `/ws/chat/lobby`.
     */
    path: string,
    /**
     * The route pattern that matched, e.g. `/ws/chat/{channel}`.
     */
    route: string,
    /**
     * Values of the pattern's parameters, e.g. `("channel", "lobby")`.
     */
    params: Array<[string, string]>,
    /**
     * Percent-decoded query parameters in order; a key may repeat.
     */
    query: Array<[string, string]>,
    /**
     * Request headers, names lower-cased.
     */
    headers: Array<[string, string]>,
    /**
     * Cookies from the `cookie` header.
     */
    cookies: Array<[string, string]>,
    /**
     * The peer's address, `ip:port`.
     */
    remoteAddr: string,
    /**
     * Subprotocols the client offered (`sec-websocket-protocol`).
     */
    subprotocols: Array<string>,
    /**
     * The subprotocol the server chose: the first one in the plugin's
     * sidecar `subprotocols` list (its order of preference) that the
     * client offered; `none` if there is no match.
     */
    protocol?: string,
  }
  /**
   * Refuses the connection with an HTTP status (400-599) before the upgrade.
   */
  export interface Rejection {
    status: number,
    reason: string,
  }
  export type OpenDecision = OpenDecisionAccept | OpenDecisionGreet | OpenDecisionReject;
  /**
   * Upgrade the connection.
   */
  export interface OpenDecisionAccept {
    tag: 'accept',
  }
  /**
   * Upgrade and send this message first (it is queued before any other).
   */
  export interface OpenDecisionGreet {
    tag: 'greet',
    val: Message,
  }
  /**
   * Answer the handshake with an HTTP error instead of upgrading.
   */
  export interface OpenDecisionReject {
    tag: 'reject',
    val: Rejection,
  }
  /**
   * Why a host call did not happen. Host calls never trap on bad input.
   * # Variants
   * 
   * ## `"unknown-connection"`
   * 
   * No open connection with that id belongs to this plugin.
   * ## `"closed"`
   * 
   * The connection is closing; it accepts nothing more.
   * ## `"queue-full"`
   * 
   * The connection's send queue is full (the client is not reading).
   * ## `"invalid-argument"`
   * 
   * An argument is out of range: a bad close code, an empty name, a
   * message over the size limit.
   * ## `"limit-reached"`
   * 
   * A configured limit was reached (timers, state size, attributes).
   */
  export type Error = 'unknown-connection' | 'closed' | 'queue-full' | 'invalid-argument' | 'limit-reached';
  /**
   * Opaque id of one outbound WebSocket connection (an upstream) that the
   * plugin opened with `upstream-connect`.
   */
  export type UpstreamId = bigint;
  /**
   * Why a state call failed. A new type rather than new `error` cases:
   * plugins built against 0.1.0 import `error` as it was.
   * # Variants
   * 
   * ## `"limit-reached"`
   * 
   * A configured limit was reached: the plugin's state bytes.
   * ## `"invalid-argument"`
   * 
   * An empty key, a key over the length limit, a TTL of zero.
   * ## `"not-a-number"`
   * 
   * `state-increment` on a value that is not a decimal s64, or a
   * result that would overflow.
   * ## `"unavailable"`
   * 
   * The backend (SQLite, Redis) failed or did not answer in time;
   * the call may or may not have taken effect.
   */
  export type StateError = 'limit-reached' | 'invalid-argument' | 'not-a-number' | 'unavailable';
  /**
   * Why an upstream call failed.
   * # Variants
   * 
   * ## `"invalid-url"`
   * 
   * Not a `ws://` or `wss://` URL.
   * ## `"denied"`
   * 
   * The plugin's sidecar does not allow this host (see
   * `allowed_outbound_hosts`), or it resolves to an address that is
   * not allowed.
   * ## `"limit-reached"`
   * 
   * The plugin has as many upstreams open as it may.
   * ## `"unknown-upstream"`
   * 
   * No upstream with that id belongs to this plugin.
   * ## `"closed"`
   * 
   * The upstream is closing; it accepts nothing more.
   * ## `"queue-full"`
   * 
   * Its send queue is full (the upstream is not reading).
   * ## `"invalid-argument"`
   * 
   * An argument is out of range: a bad close code, a message over
   * the size limit, too many or too long headers.
   */
  export type UpstreamError = 'invalid-url' | 'denied' | 'limit-reached' | 'unknown-upstream' | 'closed' | 'queue-full' | 'invalid-argument';
  /**
   * A place in a channel's history. `epoch` names one unbroken history
   * of the channel: it changes whenever history was lost (in-memory
   * history after a restart, a Redis stream that expired or was
   * deleted), so offsets of different epochs are never compared.
   * `offset` counts the channel's recorded messages within the epoch,
   * from 1; offset 0 is "before the first". As text (in a query string,
   * in a message) a position is `EPOCH:OFFSET`.
   */
  export interface Position {
    epoch: string,
    offset: bigint,
  }
  /**
   * A text message that carries its own position: the host assigns the
   * position, then records and delivers `before`, the position as
   * `EPOCH:OFFSET`, and `after`. A plugin cannot know the position
   * before it is assigned, and a client resuming needs it inside the
   * message.
   */
  export interface PositionedText {
    before: string,
    after: string,
  }
  /**
   * What `publish-recorded` publishes.
   */
  export type Publication = PublicationPlain | PublicationPositioned;
  /**
   * Recorded and delivered as it is.
   */
  export interface PublicationPlain {
    tag: 'plain',
    val: Message,
  }
  /**
   * Recorded and delivered with its position filled in.
   */
  export interface PublicationPositioned {
    tag: 'positioned',
    val: PositionedText,
  }
  /**
   * A published message and where it stands.
   */
  export interface Published {
    /**
     * Connections it was queued for on this node, plus one for each
     * other node with subscribers (as `publish` counts).
     */
    delivered: number,
    position: Position,
  }
  export interface HistoryEntry {
    position: Position,
    msg: Message,
  }
  /**
   * A slice of a channel's history.
   */
  export interface HistoryPage {
    /**
     * Messages after `since`, oldest first, at most `limit`.
     */
    entries: Array<HistoryEntry>,
    /**
     * The channel's newest position now. When it is past the last
     * entry, more follow: ask again from the last entry.
     */
    latest: Position,
    /**
     * Whether nothing after `since` was lost: every message after it
     * is in `entries` or after them. False when `since` is from
     * another epoch, or when messages after it were dropped by the
     * history's size or age; the client should then reload.
     */
    recovered: boolean,
  }
  /**
   * Why a history call failed.
   * # Variants
   * 
   * ## `"not-recorded"`
   * 
   * The channel is not recorded: no `[history] channels` pattern
   * of the plugin's sidecar matches it.
   * ## `"invalid-argument"`
   * 
   * An empty or too long channel name, a message over the size
   * limit, a limit of 0.
   * ## `"limit-reached"`
   * 
   * The hook call already queued `limits.deliveries_per_hook`
   * messages; nothing was published.
   * ## `"unavailable"`
   * 
   * The history backend (Redis) failed or did not answer in time;
   * the call may or may not have taken effect.
   */
  export type HistoryError = 'not-recorded' | 'invalid-argument' | 'limit-reached' | 'unavailable';
  /**
   * # Variants
   * 
   * ## `"trace"`
   * 
   * ## `"debug"`
   * 
   * ## `"info"`
   * 
   * ## `"warn"`
   * 
   * ## `"error"`
   */
  export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';
}
