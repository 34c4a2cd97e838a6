// Echoes every message, text or binary, back to its sender: a listener in C
// on the bindings `wit-bindgen c` generates from wit/ (scripts/build-c-plugins.sh).
//
// C has no SDK defaults, so every hook is written out. Arguments are owned
// by the callee (hence the *_free calls); a returned message is freed by the
// generated post-return code after the host copied it.
#include "plugin.h"

void exports_wsgate_plugin_listener_on_open(exports_wsgate_plugin_listener_connection_id_t conn,
                                            exports_wsgate_plugin_listener_request_t *req,
                                            exports_wsgate_plugin_listener_open_decision_t *ret) {
  (void)conn;
  exports_wsgate_plugin_listener_request_free(req);
  ret->tag = WSGATE_PLUGIN_TYPES_OPEN_DECISION_ACCEPT;
}

bool exports_wsgate_plugin_listener_on_message(exports_wsgate_plugin_listener_connection_id_t conn,
                                               exports_wsgate_plugin_listener_message_t *msg,
                                               exports_wsgate_plugin_listener_message_t *ret) {
  (void)conn;
  *ret = *msg; // hand the message's buffer straight back: no copy
  return true;
}

void exports_wsgate_plugin_listener_on_close(exports_wsgate_plugin_listener_connection_id_t conn,
                                             uint16_t code, plugin_string_t *reason) {
  (void)conn;
  (void)code;
  plugin_string_free(reason);
}

void exports_wsgate_plugin_listener_on_first_open(plugin_string_t *route) { plugin_string_free(route); }

void exports_wsgate_plugin_listener_on_last_close(plugin_string_t *route) { plugin_string_free(route); }

void exports_wsgate_plugin_listener_on_push(exports_wsgate_plugin_listener_message_t *payload) {
  exports_wsgate_plugin_listener_message_free(payload);
}

void exports_wsgate_plugin_listener_on_timer(uint64_t id) { (void)id; }
