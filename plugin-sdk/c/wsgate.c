// The wsgate C SDK; see wsgate.h.
#include "wsgate.h"

#include <stdlib.h>
#include <string.h>

static void *must_alloc(void *ptr, size_t size) {
  void *p = realloc(ptr, size);
  if (p == NULL) abort();
  return p;
}

wsgate_string_t wsgate_str(const char *s) { return wsgate_str_n(s, strlen(s)); }

wsgate_string_t wsgate_str_n(const char *s, size_t len) {
  // Host calls take non-const pointers but only read through them.
  return (wsgate_string_t){(uint8_t *)s, len};
}

wsgate_message_t wsgate_text(const char *s) { return wsgate_text_str(wsgate_str(s)); }

wsgate_message_t wsgate_text_str(wsgate_string_t s) {
  wsgate_message_t msg = {.tag = WSGATE_PLUGIN_TYPES_MESSAGE_TEXT};
  msg.val.text = s;
  return msg;
}

wsgate_bytes_t wsgate_bytes(const void *p, size_t len) {
  // As for strings: host calls only read through the pointer.
  return (wsgate_bytes_t){(uint8_t *)p, len};
}

bool wsgate_str_eq(const wsgate_string_t *s, const char *c) {
  size_t len = strlen(c);
  return s->len == len && (len == 0 || memcmp(s->ptr, c, len) == 0);
}

char *wsgate_str_cstr(const wsgate_string_t *s) {
  char *c = must_alloc(NULL, s->len + 1);
  if (s->len > 0) memcpy(c, s->ptr, s->len);
  c[s->len] = '\0';
  return c;
}

const wsgate_string_t *wsgate_message_text(const wsgate_message_t *msg) {
  return msg->tag == WSGATE_PLUGIN_TYPES_MESSAGE_TEXT ? &msg->val.text : NULL;
}

static bool ascii_eq_ignore_case(const wsgate_string_t *s, const char *c) {
  size_t len = strlen(c);
  if (s->len != len) return false;
  for (size_t i = 0; i < len; i++) {
    unsigned char a = s->ptr[i], b = (unsigned char)c[i];
    if (a >= 'A' && a <= 'Z') a += 'a' - 'A';
    if (b >= 'A' && b <= 'Z') b += 'a' - 'A';
    if (a != b) return false;
  }
  return true;
}

static const wsgate_string_t *lookup(const plugin_list_tuple2_string_string_t *pairs, const char *key,
                                     bool ignore_case) {
  for (size_t i = 0; i < pairs->len; i++) {
    const wsgate_string_t *k = &pairs->ptr[i].f0;
    if (ignore_case ? ascii_eq_ignore_case(k, key) : wsgate_str_eq(k, key)) return &pairs->ptr[i].f1;
  }
  return NULL;
}

const wsgate_string_t *wsgate_query_param(const wsgate_request_t *req, const char *key) {
  return lookup(&req->query, key, false);
}

const wsgate_string_t *wsgate_param(const wsgate_request_t *req, const char *key) {
  return lookup(&req->params, key, false);
}

const wsgate_string_t *wsgate_header(const wsgate_request_t *req, const char *name) {
  return lookup(&req->headers, name, true);
}

const wsgate_string_t *wsgate_cookie(const wsgate_request_t *req, const char *name) {
  return lookup(&req->cookies, name, false);
}

void wsgate_accept(wsgate_open_decision_t *ret) { ret->tag = WSGATE_PLUGIN_TYPES_OPEN_DECISION_ACCEPT; }

void wsgate_greet(wsgate_open_decision_t *ret, const char *greeting) {
  ret->tag = WSGATE_PLUGIN_TYPES_OPEN_DECISION_GREET;
  wsgate_text_dup(&ret->val.greet, greeting, strlen(greeting));
}

void wsgate_reject(wsgate_open_decision_t *ret, uint16_t status, const char *reason) {
  ret->tag = WSGATE_PLUGIN_TYPES_OPEN_DECISION_REJECT;
  ret->val.reject.status = status;
  plugin_string_dup(&ret->val.reject.reason, reason);
}

void wsgate_text_dup(wsgate_message_t *ret, const char *s, size_t len) {
  ret->tag = WSGATE_PLUGIN_TYPES_MESSAGE_TEXT;
  plugin_string_dup_n(&ret->val.text, s, len);
}

const char *wsgate_error_name(wsgate_error_t err) {
  switch (err) {
  case WSGATE_PLUGIN_TYPES_ERROR_UNKNOWN_CONNECTION: return "unknown-connection";
  case WSGATE_PLUGIN_TYPES_ERROR_CLOSED: return "closed";
  case WSGATE_PLUGIN_TYPES_ERROR_QUEUE_FULL: return "queue-full";
  case WSGATE_PLUGIN_TYPES_ERROR_INVALID_ARGUMENT: return "invalid-argument";
  case WSGATE_PLUGIN_TYPES_ERROR_LIMIT_REACHED: return "limit-reached";
  default: return "unknown error";
  }
}

const char *wsgate_state_error_name(wsgate_state_error_t err) {
  switch (err) {
  case WSGATE_PLUGIN_TYPES_STATE_ERROR_LIMIT_REACHED: return "limit-reached";
  case WSGATE_PLUGIN_TYPES_STATE_ERROR_INVALID_ARGUMENT: return "invalid-argument";
  case WSGATE_PLUGIN_TYPES_STATE_ERROR_NOT_A_NUMBER: return "not-a-number";
  case WSGATE_PLUGIN_TYPES_STATE_ERROR_UNAVAILABLE: return "unavailable";
  default: return "unknown error";
  }
}

const char *wsgate_upstream_error_name(wsgate_upstream_error_t err) {
  switch (err) {
  case WSGATE_PLUGIN_TYPES_UPSTREAM_ERROR_INVALID_URL: return "invalid-url";
  case WSGATE_PLUGIN_TYPES_UPSTREAM_ERROR_DENIED: return "denied";
  case WSGATE_PLUGIN_TYPES_UPSTREAM_ERROR_LIMIT_REACHED: return "limit-reached";
  case WSGATE_PLUGIN_TYPES_UPSTREAM_ERROR_UNKNOWN_UPSTREAM: return "unknown-upstream";
  case WSGATE_PLUGIN_TYPES_UPSTREAM_ERROR_CLOSED: return "closed";
  case WSGATE_PLUGIN_TYPES_UPSTREAM_ERROR_QUEUE_FULL: return "queue-full";
  case WSGATE_PLUGIN_TYPES_UPSTREAM_ERROR_INVALID_ARGUMENT: return "invalid-argument";
  default: return "unknown error";
  }
}

bool wsgate_upstream_connect(const char *url, wsgate_upstream_t *ret, wsgate_upstream_error_t *err) {
  wsgate_string_t u = wsgate_str(url);
  plugin_list_string_t protocols = {NULL, 0};
  plugin_list_tuple2_string_string_t headers = {NULL, 0};
  return wsgate_plugin_host_upstream_connect(&u, &protocols, &headers, ret, err);
}

void wsgate_log(wsgate_log_level_t level, const char *msg) {
  wsgate_string_t s = wsgate_str(msg);
  wsgate_plugin_host_log(level, &s);
}

uint64_t wsgate_now_ms(void) {
  wasi_clocks_wall_clock_datetime_t now;
  wasi_clocks_wall_clock_now(&now);
  return now.seconds * 1000 + now.nanoseconds / 1000000;
}

static void reserve(wsgate_buf_t *b, size_t more) {
  if (more <= b->cap - b->len) return;
  if (more > SIZE_MAX - b->len) abort();
  size_t cap = b->cap ? b->cap : 64;
  while (cap - b->len < more) cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
  b->ptr = must_alloc(b->ptr, cap);
  b->cap = cap;
}

void wsgate_buf_append(wsgate_buf_t *b, const void *data, size_t len) {
  if (len == 0) return;
  reserve(b, len);
  memcpy(b->ptr + b->len, data, len);
  b->len += len;
}

void wsgate_buf_puts(wsgate_buf_t *b, const char *s) { wsgate_buf_append(b, s, strlen(s)); }

void wsgate_buf_putc(wsgate_buf_t *b, char c) { wsgate_buf_append(b, &c, 1); }

void wsgate_buf_put_str(wsgate_buf_t *b, const wsgate_string_t *s) { wsgate_buf_append(b, s->ptr, s->len); }

void wsgate_buf_put_u64(wsgate_buf_t *b, uint64_t n) {
  char digits[20];
  size_t i = sizeof digits;
  do {
    digits[--i] = (char)('0' + n % 10);
    n /= 10;
  } while (n > 0);
  wsgate_buf_append(b, digits + i, sizeof digits - i);
}

wsgate_string_t wsgate_buf_str(const wsgate_buf_t *b) { return wsgate_str_n(b->ptr, b->len); }

void wsgate_buf_free(wsgate_buf_t *b) {
  free(b->ptr);
  *b = (wsgate_buf_t){0};
}

// Host calls that deliver to connections or close one. The generated
// bindings define them under other names (wsgate_bindings.c renames them),
// so that every call, from a listener or from the SDK, passes here and is
// noted for the default on-messages below. The declarations take the
// generated functions' types, so they cannot drift from the bindings.

extern __typeof__(wsgate_plugin_host_send) wsgate_generated_host_send;
extern __typeof__(wsgate_plugin_host_broadcast) wsgate_generated_host_broadcast;
extern __typeof__(wsgate_plugin_host_close) wsgate_generated_host_close;
extern __typeof__(wsgate_plugin_host_publish) wsgate_generated_host_publish;
extern __typeof__(wsgate_plugin_host_publish_recorded) wsgate_generated_host_publish_recorded;
extern __typeof__(wsgate_plugin_host_send_to_tag) wsgate_generated_host_send_to_tag;

// Whether the message on-messages is handling made one of those calls.
// Set on every call, whatever its outcome: stopping early is always
// correct, only less batched. (An instance runs one hook at a time.)
static bool delivered;

bool wsgate_plugin_host_send(wsgate_plugin_host_connection_id_t conn, wsgate_plugin_host_message_t *msg,
                             wsgate_plugin_host_error_t *err) {
  delivered = true;
  return wsgate_generated_host_send(conn, msg, err);
}

uint32_t wsgate_plugin_host_broadcast(wsgate_plugin_host_message_t *msg,
                                      wsgate_plugin_host_connection_id_t *maybe_except) {
  delivered = true;
  return wsgate_generated_host_broadcast(msg, maybe_except);
}

bool wsgate_plugin_host_close(wsgate_plugin_host_connection_id_t conn, uint16_t code, plugin_string_t *reason,
                              wsgate_plugin_host_error_t *err) {
  delivered = true;
  return wsgate_generated_host_close(conn, code, reason, err);
}

bool wsgate_plugin_host_publish(plugin_string_t *channel, wsgate_plugin_host_message_t *msg,
                                wsgate_plugin_host_connection_id_t *maybe_except, uint32_t *ret,
                                wsgate_plugin_host_error_t *err) {
  delivered = true;
  return wsgate_generated_host_publish(channel, msg, maybe_except, ret, err);
}

bool wsgate_plugin_host_publish_recorded(plugin_string_t *channel, wsgate_plugin_host_publication_t *msg,
                                         wsgate_plugin_host_connection_id_t *maybe_except,
                                         wsgate_plugin_host_published_t *ret, wsgate_plugin_host_history_error_t *err) {
  delivered = true;
  return wsgate_generated_host_publish_recorded(channel, msg, maybe_except, ret, err);
}

bool wsgate_plugin_host_send_to_tag(plugin_string_t *tag, wsgate_plugin_host_message_t *msg,
                                    wsgate_plugin_host_connection_id_t *maybe_except, uint32_t *ret,
                                    wsgate_plugin_host_error_t *err) {
  delivered = true;
  return wsgate_generated_host_send_to_tag(tag, msg, maybe_except, ret, err);
}

// Defaults for every hook, as in the other SDKs: accept every connection,
// ignore every event. Weak, so a listener's own definition replaces them.
// Each frees the arguments it owns.

__attribute__((weak)) void exports_wsgate_plugin_listener_on_open(wsgate_conn_t conn, wsgate_request_t *req,
                                                                   wsgate_open_decision_t *ret) {
  (void)conn;
  wsgate_plugin_types_request_free(req);
  wsgate_accept(ret);
}

__attribute__((weak)) bool exports_wsgate_plugin_listener_on_message(wsgate_conn_t conn, wsgate_message_t *msg,
                                                                     wsgate_message_t *ret) {
  (void)conn;
  (void)ret;
  wsgate_plugin_types_message_free(msg);
  return false;
}

__attribute__((weak)) void exports_wsgate_plugin_listener_on_close(wsgate_conn_t conn, uint16_t code,
                                                                    wsgate_string_t *reason) {
  (void)conn;
  (void)code;
  plugin_string_free(reason);
}

__attribute__((weak)) void exports_wsgate_plugin_listener_on_first_open(wsgate_string_t *route) {
  plugin_string_free(route);
}

__attribute__((weak)) void exports_wsgate_plugin_listener_on_last_close(wsgate_string_t *route) {
  plugin_string_free(route);
}

__attribute__((weak)) void exports_wsgate_plugin_listener_on_push(wsgate_message_t *payload) {
  wsgate_plugin_types_message_free(payload);
}

__attribute__((weak)) void exports_wsgate_plugin_listener_on_timer(uint64_t id) { (void)id; }

__attribute__((weak)) void exports_wsgate_plugin_error_listener_on_error(wsgate_conn_t conn, wsgate_string_t *detail) {
  (void)conn;
  plugin_string_free(detail);
}

__attribute__((weak)) void exports_wsgate_plugin_upstream_listener_on_upstream_open(wsgate_upstream_t id) { (void)id; }

__attribute__((weak)) void exports_wsgate_plugin_upstream_listener_on_upstream_message(wsgate_upstream_t id,
                                                                                       wsgate_message_t *msg) {
  (void)id;
  wsgate_plugin_types_message_free(msg);
}

__attribute__((weak)) void exports_wsgate_plugin_upstream_listener_on_upstream_close(wsgate_upstream_t id,
                                                                                     uint16_t code,
                                                                                     wsgate_string_t *reason) {
  (void)id;
  (void)code;
  plugin_string_free(reason);
}

// A burst of messages, each handed to on-message (the listener's or the
// default) as if it had come alone. It stops after a message whose
// handling delivered or closed, as the contract requires: the host then
// writes the replies so far, what was queued, and hands the rest to the
// next call. Owns `msgs`: the handled messages went to on-message, the
// rest and the list are freed here. The replies go to the generated
// post-return code, which frees them with the list.
__attribute__((weak)) void exports_wsgate_plugin_batch_listener_on_messages(wsgate_conn_t conn,
                                                                            wsgate_message_list_t *msgs,
                                                                            wsgate_reply_list_t *ret) {
  *ret = (wsgate_reply_list_t){NULL, 0};
  // The host sends at least one; an empty answer would be a failed call.
  if (msgs->len == 0) return;
  if (msgs->len > SIZE_MAX / sizeof *ret->ptr) abort();
  ret->ptr = must_alloc(NULL, msgs->len * sizeof *ret->ptr);
  size_t handled = 0;
  while (handled < msgs->len) {
    wsgate_reply_t *reply = &ret->ptr[handled];
    delivered = false;
    reply->is_some = exports_wsgate_plugin_listener_on_message(conn, &msgs->ptr[handled], &reply->val);
    handled++;
    if (delivered) break;
  }
  ret->len = handled;
  for (size_t i = handled; i < msgs->len; i++) wsgate_plugin_types_message_free(&msgs->ptr[i]);
  free(msgs->ptr);
}
