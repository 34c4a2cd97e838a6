/// <reference path="./interfaces/wsgate-plugin-host.d.ts" />
/// <reference path="./interfaces/wsgate-plugin-listener.d.ts" />
/// <reference path="./interfaces/wsgate-plugin-types.d.ts" />
declare module 'wsgate:plugin/plugin@0.1.0' {
  export type * as WsgatePluginHost010 from 'wsgate:plugin/host@0.1.0'; // import wsgate:plugin/host@0.1.0
  export type * as WsgatePluginTypes010 from 'wsgate:plugin/types@0.1.0'; // import wsgate:plugin/types@0.1.0
  export * as listener from 'wsgate:plugin/listener@0.1.0'; // export wsgate:plugin/listener@0.1.0
}
