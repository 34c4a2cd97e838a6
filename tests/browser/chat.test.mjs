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
//                        (the server-restart test is then skipped)
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
  for (const k of ['WSGATE_BIN', 'WSGATE_TEST_PLUGINS', 'WSGATE_TEST_URL', 'WSGATE_DOCS_SCREENSHOT']) delete env[k];
  return env;
}

/** Starts wsgate on a free port and waits until /healthz is 200 and the chat route upgrades. */
async function startWsgate() {
  const bin = wsgateBin();
  const plugins = pluginDir();
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let child;
  let log = '';

  const launch = async () => {
    log = '';
    child = spawn(bin, ['--listen', `127.0.0.1:${port}`, '--plugins', plugins], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: serverEnv(),
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

async function joinAs(page, username, channel) {
  await page.goto(`${server.base}/`);
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
