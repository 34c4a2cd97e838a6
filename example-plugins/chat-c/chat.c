// Multi-channel chat, the C twin of example-plugins/chat.
//
// Connect to /ws/chat-c/{channel}?username=NAME. The host subscribes the
// connection to {channel}; every text message is published to the channel as
// {"from":NAME,"message":TEXT,"channel":CH,"timestamp":MS}, and joins and
// leaves are announced by <server>.
//
// A whisper is a text message {"to":USER,"message":TEXT}: it reaches every
// connection of USER in the same channel and every connection of the sender
// there, and nobody else, with "to":USER,"private":true added.
//
// C has no JSON library in wasi-libc, so this file writes and reads the
// little JSON it needs, accepting and refusing what serde_json does in the
// Rust twin.
#include <string.h>

#include "wsgate.h"

#define SERVER "<server>"

// ---- Writing JSON ----

// Appends `s` as a JSON string, escaped as serde_json escapes it.
static void put_json_string(wsgate_buf_t *b, const wsgate_string_t *s) {
  static const char hex[] = "0123456789abcdef";
  wsgate_buf_putc(b, '"');
  size_t run = 0; // start of the bytes not yet appended
  for (size_t i = 0; i < s->len; i++) {
    uint8_t c = s->ptr[i];
    const char *esc = NULL;
    char uesc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], '\0'};
    switch (c) {
    case '"': esc = "\\\""; break;
    case '\\': esc = "\\\\"; break;
    case '\b': esc = "\\b"; break;
    case '\f': esc = "\\f"; break;
    case '\n': esc = "\\n"; break;
    case '\r': esc = "\\r"; break;
    case '\t': esc = "\\t"; break;
    default:
      if (c < 0x20) esc = uesc;
    }
    if (esc == NULL) continue;
    wsgate_buf_append(b, s->ptr + run, i - run);
    wsgate_buf_puts(b, esc);
    run = i + 1;
  }
  wsgate_buf_append(b, s->ptr + run, s->len - run);
  wsgate_buf_putc(b, '"');
}

// Writes a chat message into `b`; `to` is NULL unless it is a whisper.
static void render(wsgate_buf_t *b, const wsgate_string_t *from, const wsgate_string_t *message,
                   const wsgate_string_t *channel, const wsgate_string_t *to) {
  wsgate_buf_puts(b, "{\"from\":");
  put_json_string(b, from);
  wsgate_buf_puts(b, ",\"message\":");
  put_json_string(b, message);
  wsgate_buf_puts(b, ",\"channel\":");
  put_json_string(b, channel);
  wsgate_buf_puts(b, ",\"timestamp\":");
  wsgate_buf_put_u64(b, wsgate_now_ms());
  if (to != NULL) {
    wsgate_buf_puts(b, ",\"to\":");
    put_json_string(b, to);
    wsgate_buf_puts(b, ",\"private\":true");
  }
  wsgate_buf_putc(b, '}');
}

// ---- Reading a whisper ----

// A parse position.
typedef struct {
  const uint8_t *p, *end;
} json_t;

typedef struct {
  wsgate_buf_t to, message;
  bool has_to, has_message;
} whisper_t;

static int peek(const json_t *j) { return j->p < j->end ? *j->p : -1; }

static void skip_ws(json_t *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static bool is_digit(int c) { return c >= '0' && c <= '9'; }

static void put_utf8(wsgate_buf_t *b, uint32_t cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) {
    u[0] = (char)cp, n = 1;
  } else if (cp < 0x800) {
    u[0] = (char)(0xc0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
  } else if (cp < 0x10000) {
    u[0] = (char)(0xe0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 0x3f)), u[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
  } else {
    u[0] = (char)(0xf0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 0x3f)), u[2] = (char)(0x80 | (cp >> 6 & 0x3f)),
    u[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
  }
  wsgate_buf_append(b, u, n);
}

// Four hex digits after `\u`.
static bool parse_hex4(json_t *j, uint32_t *cp) {
  if (j->end - j->p < 4) return false;
  *cp = 0;
  for (int i = 0; i < 4; i++) {
    uint8_t c = *j->p++;
    uint32_t d = is_digit(c) ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : 16;
    if (d == 16) return false;
    *cp = *cp << 4 | d;
  }
  return true;
}

// A string at `"`, decoded into `out`; or only checked if `out` is NULL.
// Like serde_json, a string that is kept must not hold a lone surrogate
// escape, one that is skipped may. (The host already checked that the
// text is UTF-8.)
static bool parse_string(json_t *j, wsgate_buf_t *out) {
  j->p++;
  for (;;) {
    if (j->p == j->end) return false;
    uint8_t c = *j->p++;
    if (c == '"') return true;
    if (c < 0x20) return false;
    if (c != '\\') {
      if (out) wsgate_buf_putc(out, (char)c);
      continue;
    }
    if (j->p == j->end) return false;
    c = *j->p++;
    char simple;
    switch (c) {
    case '"': simple = '"'; break;
    case '\\': simple = '\\'; break;
    case '/': simple = '/'; break;
    case 'b': simple = '\b'; break;
    case 'f': simple = '\f'; break;
    case 'n': simple = '\n'; break;
    case 'r': simple = '\r'; break;
    case 't': simple = '\t'; break;
    case 'u': {
      uint32_t cp, low;
      if (!parse_hex4(j, &cp)) return false;
      if (out == NULL) continue;
      if (cp >= 0xdc00 && cp <= 0xdfff) return false;
      if (cp >= 0xd800 && cp <= 0xdbff) {
        if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u') return false;
        j->p += 2;
        if (!parse_hex4(j, &low) || low < 0xdc00 || low > 0xdfff) return false;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
      }
      put_utf8(out, cp);
      continue;
    }
    default: return false;
    }
    if (out) wsgate_buf_putc(out, simple);
  }
}

static bool parse_number(json_t *j) {
  if (peek(j) == '-') j->p++;
  if (peek(j) == '0') {
    j->p++;
  } else {
    if (!is_digit(peek(j))) return false;
    while (is_digit(peek(j))) j->p++;
  }
  if (peek(j) == '.') {
    j->p++;
    if (!is_digit(peek(j))) return false;
    while (is_digit(peek(j))) j->p++;
  }
  if (peek(j) == 'e' || peek(j) == 'E') {
    j->p++;
    if (peek(j) == '+' || peek(j) == '-') j->p++;
    if (!is_digit(peek(j))) return false;
    while (is_digit(peek(j))) j->p++;
  }
  return true;
}

static bool parse_literal(json_t *j, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0) return false;
  j->p += n;
  return true;
}

// `true`, `false`, `null`, a number or a string, checked and skipped.
static bool skip_scalar(json_t *j) {
  switch (peek(j)) {
  case '"': return parse_string(j, NULL);
  case 't': return parse_literal(j, "true");
  case 'f': return parse_literal(j, "false");
  case 'n': return parse_literal(j, "null");
  default: return parse_number(j);
  }
}

// A member's `"key":`, checked and skipped.
static bool skip_key(json_t *j) {
  skip_ws(j);
  if (peek(j) != '"' || !parse_string(j, NULL)) return false;
  skip_ws(j);
  if (peek(j) != ':') return false;
  j->p++;
  return true;
}

// A value nobody reads, checked and skipped at any depth. serde_json skips
// ignored members without its recursion limit, so this does too: it keeps
// its own stack of the arrays and objects it is in (one byte each, on the
// heap) instead of recursing, and deep nesting cannot overflow the stack.
static bool skip_value(json_t *j) {
  wsgate_buf_t open = {0};
  bool ok = false;
  for (;;) {
    skip_ws(j);
    int c = peek(j);
    if (c == '[' || c == '{') {
      j->p++;
      skip_ws(j);
      if (peek(j) != (c == '[' ? ']' : '}')) {
        wsgate_buf_putc(&open, (char)c);
        if (c == '{' && !skip_key(j)) break;
        continue;
      }
      j->p++;
    } else if (!skip_scalar(j)) {
      break;
    }
    // A value is complete: close what ends with it, or go on after a comma.
    bool next = false;
    while (open.len > 0 && !next) {
      skip_ws(j);
      bool in_object = open.ptr[open.len - 1] == '{';
      if (peek(j) == ',') {
        j->p++;
        if (in_object && !skip_key(j)) goto done;
        next = true;
      } else if (peek(j) == (in_object ? '}' : ']')) {
        j->p++;
        open.len--;
      } else {
        goto done;
      }
    }
    if (!next) {
      ok = true;
      break;
    }
  }
done:
  wsgate_buf_free(&open);
  return ok;
}

// An object at `{`. With `w`, its "to" and "message" members are kept, and
// must be strings that appear once (serde_json refuses duplicate fields).
static bool parse_object(json_t *j, whisper_t *w) {
  j->p++;
  skip_ws(j);
  if (peek(j) != '}') {
    for (;;) {
      skip_ws(j);
      if (peek(j) != '"') return false;
      wsgate_buf_t key = {0};
      bool ok = parse_string(j, w ? &key : NULL);
      wsgate_buf_t *field = NULL;
      bool *seen = NULL;
      if (ok && w) {
        wsgate_string_t k = wsgate_buf_str(&key);
        if (wsgate_str_eq(&k, "to")) field = &w->to, seen = &w->has_to;
        if (wsgate_str_eq(&k, "message")) field = &w->message, seen = &w->has_message;
      }
      wsgate_buf_free(&key);
      if (!ok) return false;
      skip_ws(j);
      if (peek(j) != ':') return false;
      j->p++;
      if (field) {
        skip_ws(j);
        if (*seen || peek(j) != '"' || !parse_string(j, field)) return false;
        *seen = true;
      } else if (!skip_value(j)) {
        return false;
      }
      skip_ws(j);
      if (peek(j) != ',') break;
      j->p++;
    }
  }
  if (peek(j) != '}') return false;
  j->p++;
  return true;
}

// Whether `text` is a whisper: a JSON object with string members "to" and
// "message" (others are ignored), and nothing after it.
static bool parse_whisper(const wsgate_string_t *text, whisper_t *w) {
  json_t j = {text->ptr, text->ptr + text->len};
  skip_ws(&j);
  if (peek(&j) != '{' || !parse_object(&j, w)) return false;
  skip_ws(&j);
  return j.p == j.end && w->has_to && w->has_message;
}

// ---- Usernames ----

static bool is_white_space(uint32_t c) {
  // Unicode White_Space, which Rust's str::trim removes.
  return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

// The code point of the UTF-8 sequence at `s` (at most `len` bytes) and
// its length in `*n`. The host hands over valid UTF-8; a truncated
// sequence reads as U+FFFD.
static uint32_t utf8_decode(const uint8_t *s, size_t len, size_t *n) {
  uint8_t c = s[0];
  size_t want = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
  if (want > len) {
    *n = len;
    return 0xfffd;
  }
  *n = want;
  if (want == 1) return c;
  uint32_t cp = c & (0x7f >> want);
  for (size_t i = 1; i < want; i++) cp = cp << 6 | (s[i] & 0x3f);
  return cp;
}

// `s` without leading and trailing white space; a view into `s`.
static wsgate_string_t trim(wsgate_string_t s) {
  size_t n;
  while (s.len > 0 && is_white_space(utf8_decode(s.ptr, s.len, &n))) s.ptr += n, s.len -= n;
  while (s.len > 0) {
    size_t start = s.len - 1;
    while (start > 0 && (s.ptr[start] & 0xc0) == 0x80) start--;
    if (!is_white_space(utf8_decode(s.ptr + start, s.len - start, &n))) break;
    s.len = start;
  }
  return s;
}

static void put_tag_part(wsgate_buf_t *b, const wsgate_string_t *s) {
  for (size_t i = 0; i < s->len; i++) {
    if (s->ptr[i] == '%') wsgate_buf_puts(b, "%25");
    else if (s->ptr[i] == '@') wsgate_buf_puts(b, "%40");
    else wsgate_buf_putc(b, (char)s->ptr[i]);
  }
}

// The tag for one user's connections in one channel: user:NAME@CHANNEL,
// with % and @ escaped in both, so no other name and channel can make the
// same tag (user a in b@c and user a@b in c would).
static void user_tag(wsgate_buf_t *b, const wsgate_string_t *name, const wsgate_string_t *channel) {
  wsgate_buf_puts(b, "user:");
  put_tag_part(b, name);
  wsgate_buf_putc(b, '@');
  put_tag_part(b, channel);
}

// ---- Chat ----

// Publishes a chat message to the channel, logging (not sending) a failure.
static void announce(const wsgate_string_t *channel, const wsgate_string_t *from, const wsgate_string_t *message) {
  wsgate_buf_t body = {0};
  render(&body, from, message, channel, NULL);
  wsgate_message_t msg = wsgate_text_str(wsgate_buf_str(&body));
  wsgate_string_t ch = *channel;
  uint32_t reached;
  wsgate_error_t err;
  if (!wsgate_plugin_host_publish(&ch, &msg, NULL, &reached, &err)) {
    wsgate_buf_t line = {0};
    wsgate_buf_puts(&line, "publish to ");
    wsgate_buf_put_str(&line, channel);
    wsgate_buf_puts(&line, " failed: ");
    wsgate_buf_puts(&line, wsgate_error_name(err));
    wsgate_string_t text = wsgate_buf_str(&line);
    wsgate_plugin_host_log(WSGATE_PLUGIN_TYPES_LOG_LEVEL_WARN, &text);
    wsgate_buf_free(&line);
  }
  wsgate_buf_free(&body);
}

// Announces "NAME <event>" from <server>.
static void announce_user(const wsgate_string_t *channel, const wsgate_string_t *name, const char *event) {
  wsgate_buf_t text = {0};
  wsgate_buf_put_str(&text, name);
  wsgate_buf_putc(&text, ' ');
  wsgate_buf_puts(&text, event);
  wsgate_string_t server = wsgate_str(SERVER), message = wsgate_buf_str(&text);
  announce(channel, &server, &message);
  wsgate_buf_free(&text);
}

static bool get_attribute(wsgate_conn_t conn, const char *key, wsgate_string_t *value) {
  wsgate_string_t k = wsgate_str(key);
  plugin_option_string_t got;
  wsgate_error_t err;
  if (!wsgate_plugin_host_get_attribute(conn, &k, &got, &err) || !got.is_some) return false;
  *value = got.val;
  return true;
}

// The username and channel remembered for a connection at open time; the
// caller frees both.
static bool identity(wsgate_conn_t conn, wsgate_string_t *name, wsgate_string_t *channel) {
  if (!get_attribute(conn, "username", name)) return false;
  if (get_attribute(conn, "channel", channel)) return true;
  plugin_string_free(name);
  return false;
}

static uint32_t send_to_tag(wsgate_buf_t *tag, wsgate_message_t *msg) {
  wsgate_string_t t = wsgate_buf_str(tag);
  uint32_t reached;
  wsgate_error_t err;
  return wsgate_plugin_host_send_to_tag(&t, msg, NULL, &reached, &err) ? reached : 0;
}

static void whisper(wsgate_conn_t conn, const wsgate_string_t *name, const wsgate_string_t *channel,
                    const whisper_t *w) {
  wsgate_string_t to = wsgate_buf_str(&w->to), text = wsgate_buf_str(&w->message);
  wsgate_buf_t body = {0}, tag = {0};
  render(&body, name, &text, channel, &to);
  wsgate_message_t msg = wsgate_text_str(wsgate_buf_str(&body));
  user_tag(&tag, &to, channel);
  if (send_to_tag(&tag, &msg) == 0) {
    wsgate_buf_t notice = {0}, reply = {0};
    wsgate_buf_put_str(&notice, &to);
    wsgate_buf_puts(&notice, " is not in ");
    wsgate_buf_put_str(&notice, channel);
    wsgate_string_t server = wsgate_str(SERVER), notice_str = wsgate_buf_str(&notice);
    render(&reply, &server, &notice_str, channel, NULL);
    wsgate_message_t reply_msg = wsgate_text_str(wsgate_buf_str(&reply));
    wsgate_error_t err;
    (void)wsgate_plugin_host_send(conn, &reply_msg, &err);
    wsgate_buf_free(&notice);
    wsgate_buf_free(&reply);
  } else if (!(to.len == name->len && memcmp(to.ptr, name->ptr, to.len) == 0)) {
    tag.len = 0;
    user_tag(&tag, name, channel);
    send_to_tag(&tag, &msg);
  }
  wsgate_buf_free(&body);
  wsgate_buf_free(&tag);
}

// on_open's decision; `req` stays owned by the hook.
static void open_decision(wsgate_conn_t conn, const wsgate_request_t *req, wsgate_open_decision_t *ret) {
  const wsgate_string_t *username = wsgate_query_param(req, "username");
  wsgate_string_t name = username ? trim(*username) : wsgate_str("");
  if (name.len == 0) {
    wsgate_reject(ret, 403, "a username query parameter is required");
    return;
  }
  const wsgate_string_t *channel = wsgate_param(req, "channel");
  if (channel == NULL) {
    wsgate_reject(ret, 404, "no channel in the path");
    return;
  }
  if (wsgate_str_eq(&name, SERVER)) {
    wsgate_reject(ret, 403, "that username is reserved");
    return;
  }

  wsgate_string_t username_key = wsgate_str("username"), channel_key = wsgate_str("channel"), ch = *channel;
  wsgate_buf_t tag = {0};
  user_tag(&tag, &name, channel);
  wsgate_string_t t = wsgate_buf_str(&tag);
  wsgate_error_t err;
  bool remembered = wsgate_plugin_host_set_attribute(conn, &username_key, &name, &err) &&
                    wsgate_plugin_host_set_attribute(conn, &channel_key, &ch, &err) &&
                    wsgate_plugin_host_tag(conn, &t, &err);
  wsgate_buf_free(&tag);
  if (!remembered) {
    wsgate_reject(ret, 400, "username or channel name too long");
    return;
  }
  announce_user(channel, &name, "connected");
  wsgate_accept(ret);
}

void exports_wsgate_plugin_listener_on_open(wsgate_conn_t conn, wsgate_request_t *req, wsgate_open_decision_t *ret) {
  open_decision(conn, req, ret);
  wsgate_plugin_types_request_free(req);
}

bool exports_wsgate_plugin_listener_on_message(wsgate_conn_t conn, wsgate_message_t *msg, wsgate_message_t *ret) {
  (void)ret; // never replies: everything goes out through the channel
  const wsgate_string_t *text = wsgate_message_text(msg);
  wsgate_string_t name, channel;
  if (text != NULL && identity(conn, &name, &channel)) {
    whisper_t w = {0};
    if (parse_whisper(text, &w)) whisper(conn, &name, &channel, &w);
    else announce(&channel, &name, text);
    wsgate_buf_free(&w.to);
    wsgate_buf_free(&w.message);
    plugin_string_free(&name);
    plugin_string_free(&channel);
  }
  wsgate_plugin_types_message_free(msg);
  return false;
}

void exports_wsgate_plugin_listener_on_close(wsgate_conn_t conn, uint16_t code, wsgate_string_t *reason) {
  (void)code;
  wsgate_string_t name, channel;
  if (identity(conn, &name, &channel)) {
    announce_user(&channel, &name, "disconnected");
    plugin_string_free(&name);
    plugin_string_free(&channel);
  }
  plugin_string_free(reason);
}
