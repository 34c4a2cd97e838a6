declare module 'wsgate:plugin/types@0.1.0' {
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
