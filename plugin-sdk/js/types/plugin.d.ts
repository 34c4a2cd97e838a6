/// <reference path="./interfaces/wsgate-plugin-batch-listener.d.ts" />
/// <reference path="./interfaces/wsgate-plugin-error-listener.d.ts" />
/// <reference path="./interfaces/wsgate-plugin-host.d.ts" />
/// <reference path="./interfaces/wsgate-plugin-listener.d.ts" />
/// <reference path="./interfaces/wsgate-plugin-types.d.ts" />
/// <reference path="./interfaces/wsgate-plugin-upstream-listener.d.ts" />
declare module 'wsgate:plugin/plugin@0.1.3' {
  export type * as WsgatePluginHost013 from 'wsgate:plugin/host@0.1.3'; // import wsgate:plugin/host@0.1.3
  export type * as WsgatePluginTypes013 from 'wsgate:plugin/types@0.1.3'; // import wsgate:plugin/types@0.1.3
  export * as listener from 'wsgate:plugin/listener@0.1.3'; // export wsgate:plugin/listener@0.1.3
  export * as upstreamListener from 'wsgate:plugin/upstream-listener@0.1.3'; // export wsgate:plugin/upstream-listener@0.1.3
  export * as errorListener from 'wsgate:plugin/error-listener@0.1.3'; // export wsgate:plugin/error-listener@0.1.3
  export * as batchListener from 'wsgate:plugin/batch-listener@0.1.3'; // export wsgate:plugin/batch-listener@0.1.3
}
