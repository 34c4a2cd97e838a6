// {{name}}: a wsgate listener. It greets each new connection and answers
// every text message; binary messages come back unchanged.
//
// The host calls these hooks; `host` from 'wsgate' is how the listener acts
// (send, broadcast, channels, tags, state, timers). The server runs several
// instances, so keep data in host.setAttribute (per connection) or
// host.stateSet (shared), never in module variables.
import { Message, OpenDecision } from 'wsgate';

export function onOpen(conn, req) {
  return OpenDecision.greet('welcome to {{name}}');
}

export function onMessage(conn, msg) {
  const text = Message.asText(msg);
  return text === undefined ? msg : Message.text(`echo: ${text}`);
}
