// The chat for signed-in users, with its last lines kept: the JavaScript
// twin of example-plugins/auth-chat (its lib.rs says the whole protocol).
//
// Connect to /ws/auth-chat-js/{channel} with a token (an `Authorization:
// Bearer` header, a `session` cookie or `?token=`). onOpen asks the
// application who that is, a GET of $AUTH_CHAT_URL with the token: 200 with
// {"user":NAME} opens the connection as NAME, 401 or 403 refuses it with
// 401, anything else with 503. Every line is published as
// {"from","message","channel","seq"} and kept in durable state; a new member
// first gets the channel's last 20 lines.

import { env, host, hostError, log, Message, OpenDecision } from 'wsgate';

export const KEPT = 20;
const MAX_USER = 64;

const seqKey = (channel) => `seq:${channel}`;
// Line `seq` lives in one of KEPT slots; it says which seq it is, so a slot
// overwritten meanwhile is never shown as an older line.
const lineKey = (channel, seq) => `line:${seq % KEPT}:${channel}`;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The token, from the first place that has one. */
export function token(req) {
  const bearer = req.header('authorization')?.match(/^Bearer (.*)$/)?.[1];
  const found = [bearer, req.cookie('session'), req.queryParam('token')].find((t) => t?.trim());
  return found?.trim();
}

class Unavailable extends Error {}

/** The user the application says `tok` belongs to; undefined if it does not know it. */
async function who(tok) {
  const url = env('AUTH_CHAT_URL');
  if (!url) throw new Unavailable('AUTH_CHAT_URL is not granted');
  let res;
  try {
    res = await fetch(url, { headers: { authorization: `Bearer ${tok}` } });
  } catch (e) {
    throw new Unavailable(`GET ${url}: ${e.message}`);
  }
  if (res.status === 401 || res.status === 403) return undefined;
  if (res.status !== 200) throw new Unavailable(`GET ${url}: status ${res.status}`);
  let answer;
  try {
    answer = await res.json();
  } catch (e) {
    throw new Unavailable(`GET ${url}: not JSON: ${e.message}`);
  }
  const user = typeof answer?.user === 'string' ? answer.user.trim() : '';
  if (!user || encoder.encode(user).length > MAX_USER) throw new Unavailable(`GET ${url}: no usable user`);
  return user;
}

function replay(conn, channel) {
  const bytes = host.stateGet(seqKey(channel));
  const last = bytes ? Number(decoder.decode(bytes)) || 0 : 0;
  for (let seq = Math.max(1, last - KEPT + 1); seq <= last; seq++) {
    const kept = host.stateGet(lineKey(channel, seq));
    if (!kept) continue;
    try {
      const line = JSON.parse(decoder.decode(kept));
      if (line.seq === seq) host.send(conn, Message.text(JSON.stringify(line)));
    } catch {}
  }
}

function say(user, channel, message) {
  let seq;
  try {
    seq = Number(host.stateIncrement(seqKey(channel), 1n));
  } catch (e) {
    log('error', `cannot number a line in ${channel}: ${hostError(e) ?? e}`);
    return;
  }
  const line = JSON.stringify({ from: user, message, channel, seq });
  try {
    host.stateSet(lineKey(channel, seq), encoder.encode(line));
  } catch (e) {
    log('warn', `line ${seq} of ${channel} not kept: ${hostError(e) ?? e}`);
  }
  try {
    host.publish(channel, Message.text(line), undefined);
  } catch (e) {
    log('warn', `publish to ${channel} failed: ${hostError(e) ?? e}`);
  }
}

export async function onOpen(conn, req) {
  const channel = req.param('channel');
  if (channel === undefined) return OpenDecision.reject(404, 'no channel in the path');
  const tok = token(req);
  if (!tok) return OpenDecision.reject(401, 'sign in first');
  let user;
  try {
    user = await who(tok);
  } catch (e) {
    log('warn', `auth service unavailable: ${e.message}`);
    return OpenDecision.reject(503, 'try again later');
  }
  if (user === undefined) return OpenDecision.reject(401, 'sign in first');
  try {
    host.setAttribute(conn, 'user', user);
    host.setAttribute(conn, 'channel', channel);
  } catch {
    return OpenDecision.reject(400, 'channel name too long');
  }
  replay(conn, channel);
  return OpenDecision.accept();
}

export function onMessage(conn, msg) {
  const text = Message.asText(msg);
  if (text === undefined) return undefined;
  let user, channel;
  try {
    user = host.getAttribute(conn, 'user');
    channel = host.getAttribute(conn, 'channel');
  } catch {
    return undefined;
  }
  if (user !== undefined && channel !== undefined) say(user, channel, text);
  return undefined;
}
