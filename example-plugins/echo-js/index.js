// Echoes every message, text or binary, back to its sender.

export function onMessage(conn, msg) {
  return msg;
}
