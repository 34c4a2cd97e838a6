// The wsgate chat demo: talks to the `chat` plugin at /ws/chat/{channel}?username=NAME.
//
// The plugin publishes every channel event as
//   {"from": NAME, "message": TEXT, "channel": CH, "timestamp": MS}
// with joins and leaves coming from "<server>" as "NAME connected" / "NAME disconnected".
// Clients send plain text. A missing username is refused with HTTP 403 before the
// upgrade, which a browser only sees as a failed connection (close code 1006).
//
// Deep links: /?channel=lobby pre-fills the channel; /?channel=lobby&username=ann&join
// joins straight away (the server, not the page, then decides whether the name is fine).
//
// Resuming: with channel history on (the chat examples' sidecars turn it on), each
// channel event also carries "pos":"EPOCH:OFFSET". wsgate-client.js reconnects with
// since=EPOCH:OFFSET and hands this page every event once, in order, the missed ones
// included; when the server no longer has them all it says `reset`, and the page
// rebuilds its log from what the server replays (or, when the server's history
// restarted, keeps it and notes that some events may be missing).

import { WsgateClient } from './wsgate-client.js';

const SERVER = '<server>';
const STORAGE_KEY = 'wsgate-demo';

const $ = (id) => document.getElementById(id);
const els = {
  joinView: $('join-view'),
  joinForm: $('join-form'),
  username: $('username'),
  usernameError: $('username-error'),
  channel: $('channel'),
  channelError: $('channel-error'),
  endpoint: $('endpoint-preview'),
  chatView: $('chat-view'),
  chatChannel: $('chat-channel'),
  chatUsername: $('chat-username'),
  roomLabel: $('room-label'),
  leave: $('leave-button'),
  messages: $('messages'),
  emptyHint: $('empty-hint'),
  composer: $('composer'),
  input: $('composer-input'),
  send: $('send-button'),
  people: $('people'),
  peopleCount: $('people-count'),
  status: $('status'),
  statusText: $('status-text'),
  banner: $('banner'),
  bannerTitle: $('banner-title'),
  bannerText: $('banner-text'),
  bannerRetry: $('banner-retry'),
  bannerDismiss: $('banner-dismiss'),
};

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short' });

/**
 * Current session: { client, username, channel, everOpened, countdown, quietOpen,
 * saidReconnected } or null. `quietOpen`: the client left a connection to fetch a gap
 * (a close with reason 'gap'), so the next open is no news to the reader.
 * `saidReconnected`: this connection's open was announced in the log.
 */
let session = null;
/** name -> { online: boolean } for the people list, in first-seen order. */
const people = new Map();

// ---------------------------------------------------------------- join form

function loadPrefs() {
  try {
    return JSON.parse(localStorage.getItem(STORAGE_KEY)) ?? {};
  } catch {
    return {};
  }
}

function savePrefs(username, channel) {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify({ username, channel }));
  } catch {
    // Private mode or storage disabled: remembering is only a convenience.
  }
}

function normalizeChannel(raw) {
  return raw.trim().replace(/^#+/, '').trim();
}

function chatPath(channel, username) {
  return `/ws/chat/${encodeURIComponent(channel)}?username=${encodeURIComponent(username)}`;
}

function updateEndpointPreview() {
  const channel = normalizeChannel(els.channel.value) || 'lobby';
  const username = els.username.value.trim();
  els.endpoint.textContent = username ? chatPath(channel, username) : `${chatPath(channel, '')}…`;
}

function fieldError(input, errorEl, text) {
  errorEl.textContent = text;
  input.setAttribute('aria-invalid', text ? 'true' : 'false');
}

function validate() {
  const username = els.username.value.trim();
  const channel = normalizeChannel(els.channel.value) || 'lobby';
  let ok = true;
  if (!username) {
    fieldError(els.username, els.usernameError, 'Pick a username — the chat plugin refuses connections without one.');
    ok = false;
  } else if (username === SERVER) {
    fieldError(els.username, els.usernameError, `“${SERVER}” is reserved for server announcements.`);
    ok = false;
  } else {
    fieldError(els.username, els.usernameError, '');
  }
  if (/[\/?#]/.test(channel)) {
    fieldError(els.channel, els.channelError, 'A channel name cannot contain “/”, “?” or “#”.');
    ok = false;
  } else {
    fieldError(els.channel, els.channelError, '');
  }
  if (!ok) (els.username.getAttribute('aria-invalid') === 'true' ? els.username : els.channel).focus();
  return ok ? { username, channel } : null;
}

els.joinForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const v = validate();
  if (v) join(v.username, v.channel);
});
els.username.addEventListener('input', () => {
  if (els.usernameError.textContent) fieldError(els.username, els.usernameError, '');
  updateEndpointPreview();
});
els.channel.addEventListener('input', () => {
  if (els.channelError.textContent) fieldError(els.channel, els.channelError, '');
  updateEndpointPreview();
});

// ---------------------------------------------------------------- connection

function join(username, channel) {
  leave({ silent: true });
  hideBanner();
  savePrefs(username, channel);
  const url = new URL(location.href);
  url.search = new URLSearchParams({ channel }).toString();
  history.replaceState(null, '', url);

  clearMessages();
  people.clear();
  renderPeople();
  els.chatChannel.textContent = channel;
  els.chatUsername.textContent = username || '(none)';
  els.roomLabel.textContent = `#${channel}`;
  els.roomLabel.hidden = false;
  els.joinView.hidden = true;
  els.chatView.hidden = false;
  document.title = `#${channel} · wsgate chat`;

  const client = new WsgateClient(chatPath(channel, username), {
    minDelay: 1000,
    maxDelay: 30_000,
    // A handshake that fails while the HTTP server answers was refused by the plugin
    // (403 for a missing username): retrying cannot help. Anything else — a dropped
    // connection, a server restart, an unreachable server — is worth retrying.
    // After the first successful open, always retry: a restarting server may answer
    // HTTP before its plugins are loaded.
    shouldReconnect: async ({ opened }) =>
      opened || session?.everOpened || !(await client.probe('/healthz')),
  });
  session = {
    client, username, channel, everOpened: false, countdown: null, quietOpen: false, saidReconnected: false,
  };

  client.on('state', (state) => onState(state));
  client.on('open', () => {
    session.saidReconnected = session.everOpened && !session.quietOpen;
    if (session.saidReconnected) addSystemNote('Reconnected.', 'ok');
    session.everOpened = true;
    session.quietOpen = false;
    hideBanner();
    setComposerEnabled(true);
    els.input.focus();
  });
  client.on('message', (data) => onMessage(data));
  client.on('reset', (info) => onReset(info));
  client.on('recovered', (info) => onRecovered(info));
  client.on('close', (info) => onClose(info));
  client.on('reconnecting', (info) => onReconnecting(info));
  client.connect();
}

function leave({ silent = false } = {}) {
  if (!session) return;
  stopCountdown();
  session.client.close(1000, 'left');
  session = null;
  setComposerEnabled(false);
  els.roomLabel.hidden = true;
  if (!silent) {
    els.chatView.hidden = true;
    els.joinView.hidden = false;
    document.title = 'wsgate chat demo';
    setStatus('idle', 'Not connected');
    els.username.focus();
  }
}

els.leave.addEventListener('click', () => {
  leave();
  hideBanner();
});

function onState(state) {
  const labels = {
    connecting: 'Connecting…',
    open: 'Connected',
    reconnecting: 'Reconnecting…',
    closed: 'Disconnected',
    idle: 'Not connected',
  };
  if (state !== 'reconnecting') stopCountdown();
  if (state !== 'open') setComposerEnabled(false);
  // A final close is described by onClose (rejected / disconnected) or leave().
  if (state === 'closed') return;
  setStatus(state, labels[state] ?? state);
}

function onClose({ code, reason, opened, willReconnect, byClient }) {
  if (!session) return;
  if (byClient) {
    session.quietOpen = willReconnect && reason === 'gap';
    return;
  }
  if (willReconnect) return; // onReconnecting shows the banner
  if (!opened && !session.everOpened) {
    // Refused before the upgrade (the server answered /healthz, so it is up).
    const who = session.username ? `as “${session.username}”` : 'without a username';
    showBanner(
      'Could not join.',
      `The server refused to open #${session.channel} ${who}. The chat plugin rejects a handshake ` +
        'without a username (HTTP 403); browsers cannot show the exact status. Choose a username and join again.',
      { retry: false },
    );
    const username = session.username;
    session = null;
    setStatus('error', 'Rejected');
    els.chatView.hidden = true;
    els.joinView.hidden = false;
    els.roomLabel.hidden = true;
    els.username.value = username;
    if (!username) fieldError(els.username, els.usernameError, 'Pick a username — the chat plugin refuses connections without one.');
    els.username.focus();
    return;
  }
  const why = reason ? `: ${reason}` : '';
  showBanner('Disconnected.', `The connection closed (code ${code}${why}).`, { retry: false });
  addSystemNote(`Disconnected (code ${code}${why}).`, 'error');
  setStatus('error', 'Disconnected');
}

function onReconnecting({ attempt, delay, at }) {
  if (!session) return;
  const lost = session.everOpened ? 'Connection lost.' : 'Cannot reach the server.';
  if (attempt === 1 && session.everOpened) addSystemNote('Connection lost — reconnecting…', 'error');
  stopCountdown();
  const tick = () => {
    const secs = Math.max(0, Math.ceil((at - Date.now()) / 1000));
    showBanner(lost, `Reconnecting in ${secs} s (attempt ${attempt}).`, { retry: true });
    setStatus('reconnecting', `Reconnecting in ${secs} s`);
  };
  tick();
  session.countdown = setInterval(tick, 500);
  void delay;
}

function stopCountdown() {
  if (session?.countdown) {
    clearInterval(session.countdown);
    session.countdown = null;
  }
}

// ---------------------------------------------------------------- resuming

/**
 * The events since the last one shown cannot all be replayed. When the server still
 * has this history (`latest` in the epoch of `previous`: away longer than it keeps), it
 * replays what it keeps from the oldest, which may repeat lines shown already: the log
 * is rebuilt from that. Otherwise (the server's history restarted, or is unavailable)
 * everything that follows is new: the log stays, with a note that some events of the
 * meantime may be missing.
 */
function onReset({ latest, previous }) {
  if (!session) return;
  const epochOf = (pos) => pos?.slice(0, pos.lastIndexOf(':'));
  if (latest && previous && epochOf(latest) === epochOf(previous)) {
    // The notice comes first thing on a resumed connection: keep saying so.
    clearMessages();
    if (session.saidReconnected) addSystemNote('Reconnected.', 'ok');
    addSystemNote(
      'History reloaded: you were away longer than the server keeps this channel’s messages, ' +
        'so the log starts again at the oldest one it still has.',
      'warn',
    );
  } else {
    addSystemNote('The server’s history of this channel restarted: messages sent meanwhile may be missing.', 'warn');
  }
}

/** Reconnected and the whole gap was replayed (already shown, in order). */
function onRecovered({ replayed }) {
  if (!session) return;
  const what = replayed === 1 ? '1 missed event' : `${replayed} missed events`;
  addSystemNote(replayed ? `Resumed: caught up on ${what}.` : 'Resumed: nothing missed.', 'info resumed');
}

// ---------------------------------------------------------------- messages

function onMessage(data) {
  if (typeof data !== 'object' || data === null || typeof data.message !== 'string') {
    // Not a chat event (another plugin's format?): show it raw rather than drop it.
    addSystemNote(String(typeof data === 'string' ? data : '[binary message]'));
    return;
  }
  const when = Number.isFinite(data.timestamp) ? new Date(data.timestamp) : new Date();
  if (data.from === SERVER) {
    const m = /^(.*) (connected|disconnected)$/.exec(data.message);
    if (m) {
      const [, name, what] = m;
      const joined = what === 'connected';
      markPerson(name, joined);
      addPresence(name, joined, when);
    } else {
      addSystemNote(data.message, 'info', when);
    }
    return;
  }
  markPerson(data.from, true);
  addChatMessage(data.from, data.message, when, data.from === session?.username);
}

function timeElement(when) {
  const t = document.createElement('time');
  t.dateTime = when.toISOString();
  const today = new Date().toDateString() === when.toDateString();
  t.textContent = today ? timeFormat.format(when) : `${dayFormat.format(when)} ${timeFormat.format(when)}`;
  t.title = dateTimeFormat.format(when);
  return t;
}

function append(li) {
  const log = els.messages;
  const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  log.append(li);
  els.emptyHint.hidden = true;
  if (nearBottom || li.classList.contains('mine')) li.scrollIntoView({ block: 'end' });
}

function addChatMessage(from, text, when, mine) {
  const li = document.createElement('li');
  li.className = `msg${mine ? ' mine' : ''}`;
  const avatar = document.createElement('span');
  avatar.className = 'avatar';
  avatar.setAttribute('aria-hidden', 'true');
  avatar.textContent = initial(from);
  avatar.style.setProperty('--hue', hue(from));
  const bubble = document.createElement('div');
  bubble.className = 'bubble';
  const meta = document.createElement('div');
  meta.className = 'meta';
  const name = document.createElement('span');
  name.className = 'author';
  name.textContent = mine ? `${from} (you)` : from;
  name.style.setProperty('--hue', hue(from));
  meta.append(name, timeElement(when));
  const body = document.createElement('p');
  body.className = 'text';
  body.textContent = text; // never innerHTML: messages are untrusted
  bubble.append(meta, body);
  li.append(avatar, bubble);
  append(li);
}

function addPresence(name, joined, when) {
  const li = document.createElement('li');
  li.className = `presence ${joined ? 'joined' : 'left'}`;
  const text = document.createElement('span');
  const strong = document.createElement('strong');
  strong.textContent = name;
  text.append(strong, joined ? ' joined the channel' : ' left the channel');
  li.append(text, ' · ', timeElement(when));
  append(li);
}

function addSystemNote(message, kind = 'info', when = new Date()) {
  const li = document.createElement('li');
  li.className = `note ${kind}`;
  li.append(message, ' · ', timeElement(when));
  append(li);
}

function clearMessages() {
  els.messages.replaceChildren();
  els.emptyHint.hidden = false;
}

function initial(name) {
  return ([...name.trim()][0] ?? '?').toUpperCase();
}

function hue(name) {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.codePointAt(0)) % 360;
  return String(h);
}

// ---------------------------------------------------------------- people

function markPerson(name, online) {
  people.set(name, { online });
  renderPeople();
}

function renderPeople() {
  const items = [...people].sort(([a, pa], [b, pb]) => Number(pb.online) - Number(pa.online) || a.localeCompare(b));
  els.people.replaceChildren(
    ...items.map(([name, p]) => {
      const li = document.createElement('li');
      li.className = p.online ? 'online' : 'offline';
      const avatar = document.createElement('span');
      avatar.className = 'avatar small';
      avatar.setAttribute('aria-hidden', 'true');
      avatar.textContent = initial(name);
      avatar.style.setProperty('--hue', hue(name));
      const label = document.createElement('span');
      label.className = 'person-name';
      label.textContent = name === session?.username ? `${name} (you)` : name;
      const state = document.createElement('span');
      state.className = 'person-state';
      state.textContent = p.online ? 'online' : 'left';
      li.append(avatar, label, state);
      return li;
    }),
  );
  els.peopleCount.textContent = String([...people.values()].filter((p) => p.online).length);
}

// ---------------------------------------------------------------- composer

function setComposerEnabled(on) {
  els.input.disabled = !on;
  els.send.disabled = !on;
}

els.composer.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = els.input.value;
  if (!text.trim() || !session) return;
  if (session.client.send(text)) {
    els.input.value = '';
  } else {
    showBanner('Not sent.', 'You are not connected right now; your message is still in the box.', { retry: false });
  }
});

// ---------------------------------------------------------------- status & banner

function setStatus(state, text) {
  els.status.dataset.state = state;
  els.statusText.textContent = text;
}

function showBanner(title, text, { retry }) {
  els.bannerTitle.textContent = title;
  els.bannerText.textContent = ` ${text}`;
  els.bannerRetry.hidden = !retry;
  els.banner.hidden = false;
}

function hideBanner() {
  els.banner.hidden = true;
}

els.bannerRetry.addEventListener('click', () => session?.client.reconnectNow());
els.bannerDismiss.addEventListener('click', hideBanner);

// ---------------------------------------------------------------- start

{
  const prefs = loadPrefs();
  const params = new URLSearchParams(location.search);
  els.username.value = params.get('username') ?? prefs.username ?? '';
  els.channel.value = params.get('channel') ?? prefs.channel ?? 'lobby';
  updateEndpointPreview();
  if (params.has('join')) {
    // A join link: connect as given and let the server judge the username.
    join((params.get('username') ?? '').trim(), normalizeChannel(els.channel.value) || 'lobby');
  } else {
    (els.username.value ? els.channel : els.username).focus();
  }
}
