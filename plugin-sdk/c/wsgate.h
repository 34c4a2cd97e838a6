// The wsgate C SDK: a thin layer over the bindings `wit-bindgen c`
// generates from the WIT contract (plugin.h, plugin.c; see README.md).
//
// The generated bindings are the API: hooks are the `exports_wsgate_plugin_
// listener_*`, `exports_wsgate_plugin_upstream_listener_*`,
// `exports_wsgate_plugin_error_listener_on_error` and
// `exports_wsgate_plugin_batch_listener_on_messages` functions, host calls
// the `wsgate_plugin_host_*` functions.
// This header only adds what every C listener would otherwise write itself:
// short type names, string and message views of C strings, request
// lookups, open decisions, an error name for logs, the wall clock, a byte
// buffer, and a default for every hook (wsgate.c) so a listener defines
// only the hooks it needs.
//
// Bursts: the default `on-messages` hands each message of a burst to
// `on_message`, in order, and stops after a message whose handling made a
// host call that delivers or closes (`send`, `broadcast`, `send_to_tag`,
// `publish`, `publish_recorded`, `close`), as the contract requires; the
// host passes the rest in its next call. To see those calls, wsgate.c
// defines these six `wsgate_plugin_host_*` functions itself (they note the
// call and run the generated code, which wsgate_bindings.c renames), so a
// listener calls them as generated and needs no change. Build
// wsgate_bindings.c in place of the generated plugin.c. A listener that
// defines `on_messages` itself must follow the same rule.
//
// Ownership, as the generated code implements it:
// - Hook arguments (a request, a message, a string) belong to the hook:
//   free them with the generated *_free functions (or hand their buffers
//   on, e.g. return a received message as the reply).
// - What a hook returns (the reply, a greeting, a rejection reason) must
//   be heap-allocated: the generated post-return code frees it after the
//   host has copied it. The constructors below that take `ret` allocate.
// - Host calls only borrow their arguments: pass views (wsgate_str,
//   wsgate_text), which allocate nothing.
// - What a host call returns (an attribute, a list) belongs to the caller:
//   free it with the generated *_free function.
// - Empty strings and lists from the host may have a dangling non-NULL
//   pointer: free them with the *_free functions, never with free().
//
// Allocation failure aborts (a trap): the host closes the affected
// connection with 1011 and replaces the instance.
#ifndef WSGATE_H
#define WSGATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef wsgate_plugin_types_connection_id_t wsgate_conn_t;
typedef plugin_string_t wsgate_string_t;
typedef wsgate_plugin_types_message_t wsgate_message_t;
typedef wsgate_plugin_types_request_t wsgate_request_t;
typedef wsgate_plugin_types_open_decision_t wsgate_open_decision_t;
typedef wsgate_plugin_types_error_t wsgate_error_t;
typedef wsgate_plugin_types_log_level_t wsgate_log_level_t;
typedef wsgate_plugin_types_upstream_id_t wsgate_upstream_t;
typedef wsgate_plugin_types_state_error_t wsgate_state_error_t;
typedef wsgate_plugin_types_upstream_error_t wsgate_upstream_error_t;
typedef plugin_list_u8_t wsgate_bytes_t;
// on-messages' argument and result: a burst of messages, and one reply
// (or none) for each message handled.
typedef exports_wsgate_plugin_batch_listener_list_message_t wsgate_message_list_t;
typedef exports_wsgate_plugin_batch_listener_option_message_t wsgate_reply_t;
typedef exports_wsgate_plugin_batch_listener_list_option_message_t wsgate_reply_list_t;

// --- Views: borrowed, for host-call arguments; nothing to free. ---

// A string view of the NUL-terminated `s`.
wsgate_string_t wsgate_str(const char *s);
// A string view of `len` bytes at `s`.
wsgate_string_t wsgate_str_n(const char *s, size_t len);
// A text-message view of the NUL-terminated `s`.
wsgate_message_t wsgate_text(const char *s);
// A text-message view of the string `s`.
wsgate_message_t wsgate_text_str(wsgate_string_t s);
// A byte-list view of `len` bytes at `p`, e.g. a state value.
wsgate_bytes_t wsgate_bytes(const void *p, size_t len);

// --- Reading strings and messages. ---

// Whether `s` holds exactly the bytes of the NUL-terminated `c`.
bool wsgate_str_eq(const wsgate_string_t *s, const char *c);
// A NUL-terminated copy of `s`, for C string functions; free() it. A NUL
// byte inside `s` ends the copy early.
char *wsgate_str_cstr(const wsgate_string_t *s);
// The text of a text message, or NULL for a binary one. Borrowed from `msg`.
const wsgate_string_t *wsgate_message_text(const wsgate_message_t *msg);

// --- Request lookups; the result is borrowed from `req`, NULL if absent. ---

// The first query parameter named `key`.
const wsgate_string_t *wsgate_query_param(const wsgate_request_t *req, const char *key);
// The route parameter `key`, e.g. `channel` for `/ws/chat/{channel}`.
const wsgate_string_t *wsgate_param(const wsgate_request_t *req, const char *key);
// A header by name, ignoring ASCII case.
const wsgate_string_t *wsgate_header(const wsgate_request_t *req, const char *name);
const wsgate_string_t *wsgate_cookie(const wsgate_request_t *req, const char *name);

// --- What hooks return: each allocates, the post-return code frees. ---

void wsgate_accept(wsgate_open_decision_t *ret);
// Accepts and sends the text `greeting` first.
void wsgate_greet(wsgate_open_decision_t *ret, const char *greeting);
// Refuses the handshake with an HTTP status (400-599) and a reason.
void wsgate_reject(wsgate_open_decision_t *ret, uint16_t status, const char *reason);
// Sets `*ret` to a text message holding a copy of `len` bytes at `s`.
void wsgate_text_dup(wsgate_message_t *ret, const char *s, size_t len);

// --- Everything else. ---

// The WIT name of a host error, e.g. "unknown-connection", for logs.
const char *wsgate_error_name(wsgate_error_t err);
// The WIT name of a state error, e.g. "not-a-number".
const char *wsgate_state_error_name(wsgate_state_error_t err);
// The WIT name of an upstream error, e.g. "denied".
const char *wsgate_upstream_error_name(wsgate_upstream_error_t err);
// Opens an upstream (an outbound WebSocket) to the NUL-terminated `url`
// with no subprotocols and no extra headers: wsgate_plugin_host_upstream_
// connect with empty lists. Returns false and sets `*err` on failure;
// on-upstream-open or on-upstream-close (1006) follows a success.
bool wsgate_upstream_connect(const char *url, wsgate_upstream_t *ret, wsgate_upstream_error_t *err);
// Logs a message through the server.
void wsgate_log(wsgate_log_level_t level, const char *msg);
// Wall-clock time in milliseconds since the Unix epoch.
uint64_t wsgate_now_ms(void);

// A growable byte buffer, for composing messages (wasi-libc's printf
// family would import WASI preview 1; see README.md). Zero-initialize it
// (`wsgate_buf_t b = {0};`) and wsgate_buf_free() it when done.
typedef struct wsgate_buf_t {
  char *ptr;
  size_t len;
  size_t cap;
} wsgate_buf_t;

void wsgate_buf_append(wsgate_buf_t *b, const void *data, size_t len);
void wsgate_buf_puts(wsgate_buf_t *b, const char *s);
void wsgate_buf_putc(wsgate_buf_t *b, char c);
// Appends `s`'s bytes.
void wsgate_buf_put_str(wsgate_buf_t *b, const wsgate_string_t *s);
// Appends `n` in decimal.
void wsgate_buf_put_u64(wsgate_buf_t *b, uint64_t n);
// A view of the buffer's bytes, valid until the buffer changes.
wsgate_string_t wsgate_buf_str(const wsgate_buf_t *b);
void wsgate_buf_free(wsgate_buf_t *b);

#ifdef __cplusplus
}
#endif

#endif
