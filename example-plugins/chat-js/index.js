// Multi-channel chat, the JavaScript twin of example-plugins/chat.
//
// Connect to /ws/chat-js/{channel}?username=NAME. The host subscribes the
// connection to {channel}; every text message is published to the channel as
// {"from":NAME,"message":TEXT,"channel":CH,"timestamp":MS}, and joins and
// leaves are announced by <server>.
//
// A whisper is a text message {"to":USER,"message":TEXT}: it reaches every
// connection of USER in the same channel and every connection of the sender
// there, and nobody else, with "to":USER,"private":true added.

import { host, hostError, log, Message, OpenDecision } from 'wsgate';

const SERVER = '<server>';

function render(from, message, channel, to) {
  const body = { from, message, channel, timestamp: Date.now() };
  if (to !== undefined) Object.assign(body, { to, private: true });
  return Message.text(JSON.stringify(body));
}

// The tag for one user's connections in one channel: user:NAME@CHANNEL, with
// % and @ escaped in both, so no other name and channel can make the same tag
// (user a in b@c and user a@b in c would).
const escapeTag = (s) => s.replaceAll('%', '%25').replaceAll('@', '%40');
const userTag = (name, channel) => `user:${escapeTag(name)}@${escapeTag(channel)}`;

function parseWhisper(text) {
  try {
    const w = JSON.parse(text);
    if (w && typeof w.to === 'string' && typeof w.message === 'string') return w;
  } catch {}
  return undefined;
}

function whisper(conn, name, channel, w) {
  const msg = render(name, w.message, channel, w.to);
  let reached = 0;
  try {
    reached = host.sendToTag(userTag(w.to, channel), msg, undefined);
  } catch {}
  if (reached === 0) {
    try {
      host.send(conn, render(SERVER, `${w.to} is not in ${channel}`, channel));
    } catch {}
    return;
  }
  if (w.to !== name) {
    try {
      host.sendToTag(userTag(name, channel), msg, undefined);
    } catch {}
  }
}

function announce(channel, from, message) {
  try {
    host.publish(channel, render(from, message, channel), undefined);
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
  if (name === SERVER) return OpenDecision.reject(403, 'that username is reserved');
  const channel = req.param('channel');
  if (channel === undefined) return OpenDecision.reject(404, 'no channel in the path');
  try {
    host.setAttribute(conn, 'username', name);
    host.setAttribute(conn, 'channel', channel);
    host.tag(conn, userTag(name, channel));
  } catch {
    return OpenDecision.reject(400, 'username or channel name too long');
  }
  announce(channel, SERVER, `${name} connected`);
  return OpenDecision.accept();
}

export function onMessage(conn, msg) {
  const text = Message.asText(msg);
  const who = identity(conn);
  if (text === undefined || !who) return;
  const w = parseWhisper(text);
  if (w) whisper(conn, who.name, who.channel, w);
  else announce(who.channel, who.name, text);
}

export function onClose(conn, code, reason) {
  const who = identity(conn);
  if (who) announce(who.channel, SERVER, `${who.name} disconnected`);
}
