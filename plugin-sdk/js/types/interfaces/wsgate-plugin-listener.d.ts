/// <reference path="./wsgate-plugin-types.d.ts" />
declare module 'wsgate:plugin/listener@0.1.1' {
  /**
   * Called before the WebSocket upgrade; may reject with an HTTP status.
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
   * `on-open`); re-armed after the route drains.
   */
  export function onFirstOpen(route: string): void;
  /**
   * The last connection on `route` closed (called after its `on-close`).
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
  export type ConnectionId = import('wsgate:plugin/types@0.1.1').ConnectionId;
  export type Message = import('wsgate:plugin/types@0.1.1').Message;
  export type Request = import('wsgate:plugin/types@0.1.1').Request;
  export type OpenDecision = import('wsgate:plugin/types@0.1.1').OpenDecision;
}
