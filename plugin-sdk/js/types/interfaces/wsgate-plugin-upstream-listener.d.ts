/// <reference path="./wsgate-plugin-types.d.ts" />
declare module 'wsgate:plugin/upstream-listener@0.1.3' {
  /**
   * The upstream's handshake succeeded.
   */
  export function onUpstreamOpen(id: UpstreamId): void;
  /**
   * A data message from the upstream.
   */
  export function onUpstreamMessage(id: UpstreamId, msg: Message): void;
  /**
   * The upstream closed, or could not be opened (1006, with the reason).
   */
  export function onUpstreamClose(id: UpstreamId, code: number, reason: string): void;
  export type UpstreamId = import('wsgate:plugin/types@0.1.3').UpstreamId;
  export type Message = import('wsgate:plugin/types@0.1.3').Message;
}
