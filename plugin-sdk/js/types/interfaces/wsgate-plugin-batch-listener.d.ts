/// <reference path="./wsgate-plugin-types.d.ts" />
declare module 'wsgate:plugin/batch-listener@0.1.3' {
  /**
   * `msgs` arrived together from `conn`, in order (at least one).
   * Returns what `on-message` would have returned for each message it
   * handled, in order. It may handle fewer than it was given (at least
   * one): the host hands the rest to the next call.
   * 
   * It must stop after a message whose handling delivered to
   * connections or closed one (`send`, `broadcast`, `send-to-tag`,
   * `publish`, `publish-recorded`, `close`). The host writes the earlier
   * replies, then what was queued for the sender, then the last reply,
   * so the sender sees what one `on-message` per message would have
   * shown it. A result list that is empty or longer than `msgs` is a
   * failure of the call, like a trap.
   */
  export function onMessages(conn: ConnectionId, msgs: Array<Message>): Array<Message | undefined>;
  export type ConnectionId = import('wsgate:plugin/types@0.1.3').ConnectionId;
  export type Message = import('wsgate:plugin/types@0.1.3').Message;
}
