// Multi-channel chat, the JavaScript twin of example-plugins/chat.
//
// Connect to /ws/chat-js/{channel}?username=NAME. The host subscribes the
// connection to {channel}; every text message is published to the channel as
// {"from":NAME,"message":TEXT,"channel":CH,"timestamp":MS}, and joins and
// leaves are announced by <server>.

import { host, hostError, log, Message, OpenDecision } from 'wsgate';

const SERVER = '<server>';

function announce(channel, from, message) {
  const body = JSON.stringify({ from, message, channel, timestamp: Date.now() });
  try {
    host.publish(channel, Message.text(body), undefined);
  } catch (e) {
    log('warn', `publish to ${channel} failed: ${hostError(e) ?? e}`);
  }
}

/** The username and channel remembered for a connection at open time. */
function identity(conn) {
  try {
    const name = host.getAttribute(conn, 'username');
    const channel = host.getAttribute(conn, 'channel');
    return name !== undefined && channel !== undefined ? { name, channel } : undefined;
  } catch {
    return undefined;
  }
}

export function onOpen(conn, req) {
  const name = (req.queryParam('username') ?? '').trim();
  if (!name) return OpenDecision.reject(403, 'a username query parameter is required');
  const channel = req.param('channel');
  if (channel === undefined) return OpenDecision.reject(404, 'no channel in the path');
  try {
    // Both only fail for a connection that is already gone.
    host.setAttribute(conn, 'username', name);
    host.setAttribute(conn, 'channel', channel);
  } catch {}
  announce(channel, SERVER, `${name} connected`);
  return OpenDecision.accept();
}

export function onMessage(conn, msg) {
  const text = Message.asText(msg);
  const who = identity(conn);
  if (text !== undefined && who) announce(who.channel, who.name, text);
}

export function onClose(conn, code, reason) {
  const who = identity(conn);
  if (who) announce(who.channel, SERVER, `${who.name} disconnected`);
}
