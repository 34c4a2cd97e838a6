declare module 'wsgate:plugin/types@0.1.1' {
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
