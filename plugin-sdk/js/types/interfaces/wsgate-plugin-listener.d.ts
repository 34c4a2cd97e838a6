/// <reference path="./wsgate-plugin-types.d.ts" />
declare module 'wsgate:plugin/listener@0.1.3' {
  /**
   * Called before the WebSocket upgrade; may reject with an HTTP status.
   * The connection is already in its route's channel. What is
   * published to its channels and tags while `on-open` runs reaches it
   * after everything `on-open` sends it, so a replay of history sent
   * here comes before the live messages that follow it.
   */
  export function onOpen(conn: ConnectionId, req: Request): OpenDecision;
  /**
   * A data message from the client; a returned message is the reply to
   * the sender.
   */
  export function onMessage(conn: ConnectionId, msg: Message): Message | undefined;
  /**
   * The connection closed, with the close code (1006 if the peer vanished).
   */
  export function onClose(conn: ConnectionId, code: number, reason: string): void;
  /**
   * The first connection on `route` is opening (called before its
   * `on-open`); re-armed after the route drains. Per node: in a
   * cluster, each node calls it for its own first connection, since
   * what a plugin starts here (timers, upstreams) runs on that node.
   */
  export function onFirstOpen(route: string): void;
  /**
   * The last connection on `route` closed (called after its `on-close`).
   * Per node, as `on-first-open`.
   */
  export function onLastClose(route: string): void;
  /**
   * A push from outside the plugin (the HTTP publish API).
   */
  export function onPush(payload: Message): void;
  /**
   * A timer set with `set-timer` fired.
   */
  export function onTimer(id: bigint): void;
  export type ConnectionId = import('wsgate:plugin/types@0.1.3').ConnectionId;
  export type Message = import('wsgate:plugin/types@0.1.3').Message;
  export type Request = import('wsgate:plugin/types@0.1.3').Request;
  export type OpenDecision = import('wsgate:plugin/types@0.1.3').OpenDecision;
}
