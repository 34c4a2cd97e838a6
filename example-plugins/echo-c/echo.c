// Echoes every message, text or binary, back to its sender: a listener in
// C on the wsgate C SDK (plugin-sdk/c). The SDK's defaults serve every
// other hook.
#include "wsgate.h"

bool exports_wsgate_plugin_listener_on_message(wsgate_conn_t conn, wsgate_message_t *msg, wsgate_message_t *ret) {
  (void)conn;
  // The hook owns `msg`; handing its buffer back as the reply moves it,
  // and the generated post-return code frees it once the host has copied
  // it: no copy, nothing to free here.
  *ret = *msg;
  return true;
}
