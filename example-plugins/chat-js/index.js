// Multi-channel chat, the JavaScript twin of example-plugins/chat.
//
// Connect to /ws/chat-js/{channel}?username=NAME. The host subscribes the
// connection to {channel}; every text message is published to the channel as
// {"from":NAME,"message":TEXT,"channel":CH,"timestamp":MS,"pos":POS}, and
// joins and leaves are announced by <server> the same way.
//
// The channel's history is recorded ([history] in chat-js.toml) and every
// channel message carries its position POS (EPOCH:OFFSET). A client that
// comes back with ?since=POS (the last pos it saw) gets what it missed, in
// order, before anything live, then
// {"type":"recovery","recovered":true,"latest":POS}. When part of the gap
// is gone (too old, or history was lost: recovered false), the notice comes
// first and the messages after it are the ones still kept, from the oldest:
// the client should start over from them; so it should when the channel is
// not recorded at all (the notice says "latest":null). When the history is
// unavailable (its Redis is restarting), the open is refused with 503: the
// gap may well still be kept, so the client comes back with the same since
// rather than start over. A since that is not a position is refused with
// 400. Without since there is no replay.
//
// A whisper is a text message {"to":USER,"message":TEXT}: it reaches every
// connection of USER in the same channel and every connection of the sender
// there, and nobody else, with "to":USER,"private":true added. Whispers are
// not channel messages: no pos, not recorded.

import { historyPages, host, hostError, log, Message, OpenDecision, Position, publishPositioned } from 'wsgate';

const SERVER = '<server>';
/** Entries asked for per history call while replaying. */
const REPLAY_PAGE = 100;

function bodyOf(from, message, channel, to) {
  const body = { from, message, channel, timestamp: Date.now() };
  if (to !== undefined) Object.assign(body, { to, private: true });
  return body;
}

const render = (from, message, channel, to) => Message.text(JSON.stringify(bodyOf(from, message, channel, to)));

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

/**
 * Publishes a channel message, recorded, with its position as "pos";
 * returns whether it was published.
 */
function announce(channel, from, message) {
  const body = bodyOf(from, message, channel);
  try {
    publishPositioned(channel, (pos) => JSON.stringify({ ...body, pos }));
    return true;
  } catch (e) {
    log('warn', `publish to ${channel} failed: ${hostError(e) ?? e}`);
    return false;
  }
}

/** What a sender is told when its line could not be published (the history is unavailable). */
const NOT_DELIVERED = Message.text(JSON.stringify({ type: 'error', error: 'not delivered; try again' }));

const recovery = (recovered, latest) => Message.text(JSON.stringify({
  type: 'recovery', recovered, latest: latest === undefined ? null : Position.format(latest),
}));

/**
 * Sends `conn` what `channel` recorded after `since`, and the recovery
 * notice: after the messages when the whole gap was kept, before them when
 * it was not (they are then a fresh start). Sends nothing and returns false
 * when the history is unavailable: the caller refuses the connection.
 */
function replay(conn, channel, since) {
  let pages;
  try {
    pages = [...historyPages(channel, since, REPLAY_PAGE)];
  } catch (e) {
    log('warn', `history of ${channel} failed: ${hostError(e) ?? e}`);
    if (hostError(e) === 'unavailable') return false;
    // This history cannot serve `since` at all: a fresh start.
    host.send(conn, recovery(false, undefined));
    return true;
  }
  const { recovered } = pages[0];
  const { latest } = pages.at(-1);
  if (!recovered) host.send(conn, recovery(false, latest));
  for (const page of pages) for (const entry of page.entries) host.send(conn, entry.msg);
  if (recovered) host.send(conn, recovery(true, latest));
  return true;
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
  let since = req.queryParam('since');
  if (since !== undefined) {
    try {
      since = Position.parse(since);
    } catch {
      return OpenDecision.reject(400, 'since must be a position, EPOCH:OFFSET');
    }
  }
  try {
    host.setAttribute(conn, 'username', name);
    host.setAttribute(conn, 'channel', channel);
    host.tag(conn, userTag(name, channel));
  } catch {
    return OpenDecision.reject(400, 'username or channel name too long');
  }
  if (since !== undefined) {
    try {
      if (!replay(conn, channel, since)) {
        return OpenDecision.reject(503, 'history unavailable; try again with the same since');
      }
    } catch (e) {
      // The connection is already closing.
      log('warn', `replay to ${conn} stopped: ${hostError(e) ?? e}`);
    }
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
  else if (!announce(who.channel, who.name, text)) {
    try {
      host.send(conn, NOT_DELIVERED);
    } catch {}
  }
}

export function onClose(conn, code, reason) {
  const who = identity(conn);
  if (who) announce(who.channel, SERVER, `${who.name} disconnected`);
}
