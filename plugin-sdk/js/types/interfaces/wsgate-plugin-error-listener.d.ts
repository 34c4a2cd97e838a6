/// <reference path="./wsgate-plugin-types.d.ts" />
declare module 'wsgate:plugin/error-listener@0.1.3' {
  /**
   * A hook for `conn` trapped or ran past its deadline, and the host
   * closed the connection (1011). Called on a fresh instance, so that
   * the plugin can log or notify; a trap in `on-error` is only logged.
   */
  export function onError(conn: ConnectionId, detail: string): void;
  export type ConnectionId = import('wsgate:plugin/types@0.1.3').ConnectionId;
}
