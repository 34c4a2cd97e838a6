// End-to-end test of the chat demo in headless Chromium, against the real wsgate.
//
//   tests/browser/run.sh            # installs what it needs, then runs this file
//   node --test chat.test.mjs       # from tests/browser/, once set up
//
// Environment:
//   WSGATE_BIN           the wsgate binary (default: target/debug/wsgate, built if missing)
//   WSGATE_TEST_PLUGINS  a plugin directory to serve (default: built into
//                        target/browser-plugins with scripts/build-plugins.sh)
//   WSGATE_TEST_URL      test an already running server instead of starting one
//                        (the server-restart tests are then skipped)
//   WSGATE_REDIS_SERVER  the redis-server binary for the resume test (default:
//                        redis-server; tests/browser/setup.sh installs it)
//   CHROMIUM             the browser (default: /usr/bin/chromium)
//   WSGATE_DOCS_SCREENSHOT=1   also write docs/demo.png
//
// Screenshots land in target/browser-screenshots/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, copyFileSync } from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, '../..');
const SHOTS = path.join(ROOT, 'target', 'browser-screenshots');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = 15_000;

let server; // { base, port, stop(), restart() }
let context; // the browser context (one fresh profile)
let userDataDir;
const pageErrors = [];
const tempDirs = []; // removed after the tests // uncaught exceptions and console errors of the demo page

// ------------------------------------------------------------------ helpers

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves with the HTTP status of GET url, or null if the connection fails. */
function httpStatus(url) {
  return new Promise((resolve) => {
    const req = http.get(url, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', () => resolve(null));
    req.setTimeout(2000, () => {
      req.destroy();
      resolve(null);
    });
  });
}

/** Resolves with the status of a WebSocket upgrade request (101 when accepted). */
function upgradeStatus(base, pathAndQuery) {
  return new Promise((resolve) => {
    const req = http.request(new URL(pathAndQuery, base), {
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', () => resolve(null));
    req.setTimeout(3000, () => {
      req.destroy();
      resolve(null);
    });
    req.end();
  });
}

/**
 * A fresh plugin directory holding just the chat plugin (wasm + sidecar), taken from
 * WSGATE_TEST_PLUGINS or from a build with scripts/build-plugins.sh. Only chat is
 * needed, and the JS/Python plugins take tens of seconds each to compile in a debug build.
 */
function pluginDir() {
  let from = process.env.WSGATE_TEST_PLUGINS && path.resolve(process.env.WSGATE_TEST_PLUGINS);
  if (!from) {
    from = path.join(ROOT, 'target', 'browser-plugins');
    execFileSync(path.join(ROOT, 'scripts', 'build-plugins.sh'), [from], { stdio: ['ignore', 'inherit', 'inherit'] });
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'wsgate-plugins-'));
  for (const f of ['chat.wasm', 'chat.toml']) {
    if (!existsSync(path.join(from, f))) throw new Error(`${f} not found in ${from}`);
    copyFileSync(path.join(from, f), path.join(dir, f));
  }
  tempDirs.push(dir);
  return dir;
}

function wsgateBin() {
  if (process.env.WSGATE_BIN) return path.resolve(process.env.WSGATE_BIN);
  const bin = path.join(ROOT, 'target', 'debug', 'wsgate');
  if (!existsSync(bin)) {
    execFileSync('cargo', ['build', '-p', 'wsgate'], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  }
  return bin;
}

/**
 * The server's environment: ours, minus this harness's own WSGATE_* variables (wsgate
 * reads WSGATE_* as configuration and refuses keys it does not know).
 */
function serverEnv() {
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' };
  for (const k of ['WSGATE_BIN', 'WSGATE_TEST_PLUGINS', 'WSGATE_TEST_URL', 'WSGATE_DOCS_SCREENSHOT', 'WSGATE_REDIS_SERVER']) {
    delete env[k];
  }
  return env;
}

/**
 * Starts wsgate on a free port and waits until /healthz is 200 and the chat route upgrades.
 * `args` are added to the command line and `env` to the environment (the admin listener
 * is off unless `args` turn it on: its default port would be shared by every server).
 */
async function startWsgate({ args = ['--no-admin'], env = {} } = {}) {
  const bin = wsgateBin();
  const plugins = pluginDir();
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let child;
  let log = '';

  const launch = async () => {
    log = '';
    child = spawn(bin, ['--listen', `127.0.0.1:${port}`, '--plugins', plugins, ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...serverEnv(), ...env },
    });
    const keep = (chunk) => {
      log = (log + chunk).slice(-20_000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.exited = new Promise((resolve) => child.once('exit', resolve));
    // Ready when /healthz is 200 and the chat route upgrades (the plugin directory is
    // loaded and compiled in the background, after the listener is up).
    const ready = async () =>
      (await httpStatus(`${base}/healthz`)) === 200 &&
      (await upgradeStatus(base, '/ws/chat/probe?username=probe')) === 101;
    const deadline = Date.now() + 180_000;
    try {
      for (;;) {
        if (child.exitCode !== null || child.signalCode !== null) {
          throw new Error(`wsgate exited (${child.exitCode ?? child.signalCode})`);
        }
        if (await ready()) break;
        if (Date.now() > deadline) throw new Error('timed out after 180 s waiting for /healthz and the chat route');
        await sleep(200);
      }
    } catch (e) {
      child.kill('SIGKILL');
      throw new Error(`${e.message}\n--- wsgate log ---\n${log}`);
    }
  };

  const stop = async () => {
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await child.exited;
    clearTimeout(t);
  };

  await launch();
  return { base, port, stop, restart: launch, log: () => log };
}

/**
 * A private redis-server on a free port, persisting to an append-only file in a temp
 * directory (what a deployment whose history must survive restarts would run).
 */
async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'wsgate-redis-'));
  tempDirs.push(dir);
  const bin = process.env.WSGATE_REDIS_SERVER || 'redis-server';
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes'];
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (c) => { log = (log + c).slice(-10_000); });
  child.stderr.on('data', (c) => { log = (log + c).slice(-10_000); });
  const failed = new Promise((_, reject) => {
    child.once('error', (e) => reject(new Error(`cannot run ${bin} (${e.message}): run tests/browser/setup.sh`)));
    child.once('exit', (code) => reject(new Error(`redis-server exited (${code})\n${log}`)));
  });
  failed.catch(() => {});
  const pong = () => new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1', () => sock.write('PING\r\n'));
    sock.setTimeout(1000, () => { sock.destroy(); resolve(false); });
    sock.on('data', (d) => { sock.destroy(); resolve(d.toString().startsWith('+PONG')); });
    sock.on('error', () => resolve(false));
  });
  const deadline = Date.now() + 20_000;
  while (!(await Promise.race([pong(), failed]))) {
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server did not answer PING within 20 s\n${log}`);
    }
    await sleep(100);
  }
  const exited = new Promise((r) => child.once('exit', r));
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/**
 * POSTs `body` to the admin publish API until the server accepts it (200): through a
 * restart the connection is refused, and the plugin is not loaded yet (404) for a moment.
 * Anything else (400: the channel is not recorded, or no placeholder; 401) fails.
 * @returns {Promise<object>} the answer, {"delivered", "position", "duplicate"?}
 */
async function publishUntilAccepted(admin, token, pathname, body, headers) {
  const deadline = Date.now() + 90_000;
  for (;;) {
    const res = await new Promise((resolve) => {
      const req = http.request(new URL(pathname, admin), {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain; charset=utf-8', ...headers },
      }, (r) => {
        let text = '';
        r.setEncoding('utf8');
        r.on('data', (c) => { text += c; });
        r.on('end', () => resolve({ status: r.statusCode, text }));
        r.on('error', () => resolve({ status: null, text: '' }));
      });
      req.on('error', () => resolve({ status: null, text: '' }));
      req.setTimeout(5000, () => req.destroy());
      req.end(body);
    });
    if (res.status === 200) return JSON.parse(res.text);
    if (res.status !== null && res.status !== 404 && res.status < 500) {
      throw new Error(`publish ${pathname} answered ${res.status}: ${res.text}`);
    }
    if (Date.now() > deadline) throw new Error(`publish ${pathname} not accepted within 90 s (last: ${res.status} ${res.text})`);
    await sleep(100);
  }
}

async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

async function openPage() {
  const page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(`${page.url()}: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !/WebSocket connection to .* failed|Failed to load resource/.test(msg.text())) {
      pageErrors.push(`${page.url()}: console: ${msg.text()}`);
    }
  });
  return page;
}

async function joinAs(page, username, channel, base = server.base) {
  await page.goto(`${base}/`);
  await page.fill('#username', username);
  await page.fill('#channel', channel);
  await page.click('#join-button');
  await page.locator('#status[data-state="open"]').waitFor({ timeout: TIMEOUT });
  await page.locator('#composer-input:enabled').waitFor({ timeout: TIMEOUT });
}

async function say(page, text) {
  await page.fill('#composer-input', text);
  await page.press('#composer-input', 'Enter');
}

/** Waits until a chat message with `text` by `from` is shown. */
async function seesMessage(page, from, text) {
  const msg = page.locator('#messages li.msg').filter({ hasText: text }).filter({ hasText: from });
  await msg.first().waitFor({ timeout: TIMEOUT });
  return msg.first();
}

async function seesPresence(page, name, verb /* 'joined' | 'left' */) {
  await page
    .locator(`#messages li.presence.${verb === 'joined' ? 'joined' : 'left'}`)
    .filter({ hasText: `${name} ${verb} the channel` })
    .first()
    .waitFor({ timeout: TIMEOUT });
}

const logText = (page) => page.locator('#messages').innerText();

// ------------------------------------------------------------------ setup

before(async () => {
  if (process.env.WSGATE_TEST_URL) {
    server = { base: process.env.WSGATE_TEST_URL.replace(/\/$/, ''), external: true, stop: async () => {}, log: () => '' };
  } else {
    server = await startWsgate();
  }
  userDataDir = mkdtempSync(path.join(os.tmpdir(), 'wsgate-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-quic',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1100, height: 720 },
    deviceScaleFactor: 1,
    locale: 'en-GB',
  });
});

after(async () => {
  await context?.close().catch(() => {});
  assert.deepEqual(pageErrors, [], 'the demo page logged errors');
  await server?.stop();
  for (const dir of [userDataDir, ...tempDirs]) if (dir) rmSync(dir, { recursive: true, force: true });
});

// ------------------------------------------------------------------ tests

test('the demo page is served with its assets', async () => {
  const page = await openPage();
  const failed = [];
  page.on('response', (res) => {
    if (res.status() >= 400 && !res.url().endsWith('/favicon.ico')) failed.push(`${res.status()} ${res.url()}`);
  });
  const res = await page.goto(`${server.base}/`);
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-type'], /^text\/html/);
  await page.locator('#join-form').waitFor();
  assert.equal(await page.title(), 'wsgate chat demo');
  // The stylesheet applied (the chat view is hidden, the join card has a border radius).
  const radius = await page.locator('.join-card').evaluate((el) => getComputedStyle(el).borderTopLeftRadius);
  assert.equal(radius, '12px');
  assert.deepEqual(failed, []);
  await shot(page, '01-join-form');
  await page.close();
});

test('two users chat in one channel; another channel sees none of it', async () => {
  const ann = await openPage();
  const bob = await openPage();
  const cat = await openPage();

  await joinAs(ann, 'ann', 'lobby');
  await joinAs(cat, 'cat', 'garden');
  await joinAs(bob, 'bob', 'lobby');

  // Join notices: each page sees its own arrival; ann, there first, also sees bob's.
  await seesPresence(ann, 'ann', 'joined');
  await seesPresence(ann, 'bob', 'joined');
  await seesPresence(bob, 'bob', 'joined');
  await seesPresence(cat, 'cat', 'joined');
  assert.match(await ann.locator('#people').innerText(), /bob/);

  await say(ann, 'Hello from ann!');
  await say(bob, 'Hi ann, bob here. This page talks to a Wasm plugin.');
  await say(ann, 'Messages go through the chat plugin to everyone in #lobby.');

  for (const page of [ann, bob]) {
    await seesMessage(page, 'ann', 'Hello from ann!');
    await seesMessage(page, 'bob', 'Hi ann, bob here.');
    await seesMessage(page, 'ann', 'Messages go through the chat plugin');
  }
  // Each side marks its own messages.
  assert.equal(await ann.locator('#messages li.msg.mine').count(), 2);
  assert.equal(await bob.locator('#messages li.msg.mine').count(), 1);

  // Timestamps are shown as local time, with the exact instant in the datetime attribute.
  const time = bob.locator('#messages li.msg time').first();
  assert.match(await time.innerText(), /^\d{1,2}:\d{2}(:\d{2})?/);
  const iso = await time.getAttribute('datetime');
  assert.ok(Math.abs(Date.parse(iso) - Date.now()) < 60_000, `timestamp ${iso} is recent`);

  // cat in #garden: its own join only, nothing from #lobby.
  await sleep(500);
  const garden = await logText(cat);
  for (const leak of ['Hello from ann', 'bob here', 'chat plugin', 'ann joined', 'bob joined']) {
    assert.ok(!garden.includes(leak), `#garden saw "${leak}":\n${garden}`);
  }
  await say(cat, 'Anyone in the garden?');
  await seesMessage(cat, 'cat', 'Anyone in the garden?');
  await sleep(300);
  assert.ok(!(await logText(ann)).includes('garden?'), '#lobby saw a #garden message');

  await shot(ann, '02-ann-lobby');
  await shot(bob, '03-bob-lobby');
  await shot(cat, '04-cat-garden');
  if (process.env.WSGATE_DOCS_SCREENSHOT) {
    mkdirSync(path.join(ROOT, 'docs'), { recursive: true });
    copyFileSync(path.join(SHOTS, '02-ann-lobby.png'), path.join(ROOT, 'docs', 'demo.png'));
  }

  // Leaving is announced, and a clean close returns to the join form.
  await bob.click('#leave-button');
  await bob.locator('#join-form').waitFor();
  await seesPresence(ann, 'bob', 'left');
  assert.match(await ann.locator('#people li.offline').innerText(), /bob/);

  await Promise.all([ann.close(), bob.close(), cat.close()]);
});

test('an empty username is refused with a visible error', async () => {
  // In the form: the page explains before trying.
  const form = await openPage();
  await form.goto(`${server.base}/`);
  await form.fill('#username', '   ');
  await form.click('#join-button');
  const err = form.locator('#username-error');
  await err.waitFor({ state: 'visible', timeout: TIMEOUT });
  assert.match(await err.innerText(), /Pick a username/);
  assert.equal(await form.locator('#chat-view').isVisible(), false);
  await shot(form, '05-empty-username-form');
  await form.close();

  // Through a join link: the page connects and the plugin refuses the handshake
  // (403 before the upgrade); the page says so instead of retrying forever.
  const link = await openPage();
  await link.goto(`${server.base}/?channel=lobby&username=&join`);
  const banner = link.locator('#banner');
  await banner.waitFor({ state: 'visible', timeout: TIMEOUT });
  assert.match(await banner.innerText(), /Could not join/);
  assert.match(await banner.innerText(), /refused/);
  assert.equal(await link.locator('#status').getAttribute('data-state'), 'error');
  assert.match(await link.locator('#status-text').innerText(), /Rejected/);
  assert.equal(await link.locator('#join-form').isVisible(), true);
  await shot(link, '06-empty-username-rejected');
  await link.close();
});

test('a page reconnects with backoff after the server restarts', { skip: !!process.env.WSGATE_TEST_URL && 'needs a server the test controls' }, async () => {
  const ann = await openPage();
  const bob = await openPage();
  await joinAs(ann, 'ann', 'restart');
  await joinAs(bob, 'bob', 'restart');
  await seesPresence(ann, 'bob', 'joined');

  await server.stop();
  const banner = ann.locator('#banner');
  await banner.waitFor({ state: 'visible', timeout: TIMEOUT });
  assert.match(await banner.innerText(), /Connection lost|Cannot reach/);
  assert.match(await banner.innerText(), /Reconnecting in \d+ s \(attempt \d+\)/);
  assert.equal(await ann.locator('#composer-input').isDisabled(), true);
  await shot(ann, '07-disconnected-reconnecting');

  await server.restart();
  for (const page of [ann, bob]) {
    await page.locator('#status[data-state="open"]').waitFor({ timeout: 45_000 });
    await page.locator('#messages li.note.ok').filter({ hasText: 'Reconnected' }).first().waitFor({ timeout: TIMEOUT });
  }
  assert.equal(await banner.isVisible(), false);
  await say(bob, 'back again');
  await seesMessage(ann, 'bob', 'back again');
  await shot(ann, '08-reconnected');
  await Promise.all([ann.close(), bob.close()]);
});

test('the demo resumes after the server restarts, with no line lost', { skip: !!process.env.WSGATE_TEST_URL && 'needs a server the test controls' }, async (t) => {
  // History in Redis (the chat sidecar records every channel), so positions survive the
  // restart: the pages reconnect with since= and are replayed what they missed.
  const redis = await startRedis();
  const token = `browser-test-${process.pid}`;
  const admin = `http://127.0.0.1:${await freePort()}`;
  const node = await startWsgate({
    args: ['--cluster', redis.url, '--admin-listen', new URL(admin).host],
    env: { WSGATE_ADMIN__TOKEN: token },
  });
  const pages = [];
  let publisher;
  try {
    const ann = await openPage();
    const bob = await openPage();
    pages.push(ann, bob);
    await joinAs(ann, 'ann', 'resume', node.base);
    await joinAs(bob, 'bob', 'resume', node.base);
    await seesPresence(ann, 'bob', 'joined');

    // A feed publishes "feed N" through the publish API, one line every 100 ms, each
    // retried until accepted through the restart. The plugin's JSON carries its
    // position thanks to the placeholder; the key makes a retry deliver once.
    const placeholder = '@@POS@@';
    const run = `${process.pid}-${Date.now()}`;
    const answers = [];
    const publishLine = (n) => publishUntilAccepted(
      admin, token, '/publish/chat/channel/resume',
      JSON.stringify({ from: 'feed', message: `feed ${n}`, channel: 'resume', timestamp: Date.now(), pos: placeholder }),
      { 'Position-Placeholder': placeholder, 'Idempotency-Key': `${run}-${n}` },
    );
    publisher = { stopped: false, failure: null };
    publisher.done = (async () => {
      for (let n = 1; !publisher.stopped; n++) {
        answers.push(await publishLine(n));
        if (n === 3) {
          // A retry of an accepted publish: answered as the first, delivered once.
          const again = await publishLine(n);
          assert.equal(again.duplicate, true, `a retried publish is a duplicate: ${JSON.stringify(again)}`);
          assert.deepEqual(again.position, answers[2].position);
        }
        await sleep(100);
      }
    })().catch((e) => { publisher.failure = e; });
    const published = () => answers.length;
    const waitPublished = async (n) => {
      while (published() < n && !publisher.failure) await sleep(50);
      if (publisher.failure) throw publisher.failure;
    };

    await waitPublished(8);
    await say(ann, 'ann before the restart');
    await say(bob, 'bob before the restart');
    for (const page of pages) await seesMessage(page, 'bob', 'bob before the restart');
    await waitPublished(12);

    // Restart in mid-conversation. The pages back off (1 s, 2 s, ...) while the feed
    // keeps retrying, so lines are recorded while the pages are away.
    await node.stop();
    await sleep(3000);
    await node.restart();
    for (const page of pages) {
      await page.locator('#status[data-state="open"]').waitFor({ timeout: 45_000 });
      await page.locator('#messages li.note.resumed').first().waitFor({ timeout: TIMEOUT });
    }
    await say(ann, 'ann after the restart');
    await say(bob, 'bob after the restart');
    await waitPublished(published() + 10);
    publisher.stopped = true;
    await publisher.done;
    if (publisher.failure) throw publisher.failure;
    const last = `feed ${answers.length}`;

    const typed = ['ann before the restart', 'bob before the restart', 'ann after the restart', 'bob after the restart'];
    const feed = answers.map((_, i) => `feed ${i + 1}`);
    const shown = [];
    for (const page of pages) {
      await seesMessage(page, 'feed', last);
      await seesMessage(page, 'bob', 'bob after the restart');
      await sleep(300); // anything shown twice would arrive by now
      shown.push(await page.locator('#messages li.msg .text').allInnerTexts());
    }
    const [annSaw, bobSaw] = shown;
    // Every line exactly once, the feed in order, and both pages in the same order.
    assert.deepEqual(annSaw.filter((l) => l.startsWith('feed ')), feed, 'ann: the feed, every line once, in order');
    assert.deepEqual(annSaw.filter((l) => !l.startsWith('feed ')).sort(), [...typed].sort(), 'ann: each typed line once');
    assert.deepEqual(bobSaw, annSaw, 'bob sees the same lines in the same order');
    for (const saw of shown) {
      assert.ok(saw.indexOf('ann before the restart') < saw.indexOf('ann after the restart'));
      assert.ok(saw.indexOf('bob before the restart') < saw.indexOf('bob after the restart'));
    }

    // Positions: one epoch (kept in Redis across the restart), offsets rising.
    const epochs = new Set(answers.map((a) => a.position.epoch));
    assert.equal(epochs.size, 1, `one epoch across the restart: ${[...epochs]}`);
    for (let i = 1; i < answers.length; i++) {
      assert.ok(answers[i].position.offset > answers[i - 1].position.offset, `offsets rise: ${JSON.stringify(answers.slice(i - 1, i + 1))}`);
    }
    // The pages resumed (recovered, no reload) and were replayed what they missed.
    let replayed = 0;
    for (const page of pages) {
      assert.equal(await page.locator('#messages li.note.warn').count(), 0, 'no history reload');
      const note = await page.locator('#messages li.note.resumed').first().innerText();
      replayed += Number(/caught up on (\d+)/.exec(note)?.[1] ?? 0);
      t.diagnostic(`${page === ann ? 'ann' : 'bob'}: ${note.split(' · ')[0]}`);
    }
    assert.ok(replayed > 0, 'the pages were replayed the events published while they were away');
    t.diagnostic(`${answers.length} feed lines, ${replayed} events replayed to the two pages`);
    await ann.locator('#messages li.note.resumed').first().scrollIntoViewIfNeeded();
    await shot(ann, '09-resumed-after-restart');
  } catch (e) {
    throw new Error(`${e.stack ?? e}\n--- wsgate log ---\n${node.log()}`);
  } finally {
    if (publisher) publisher.stopped = true;
    await publisher?.done;
    await Promise.all(pages.map((p) => p.close()));
    await node.stop();
    await redis.stop();
  }
});
