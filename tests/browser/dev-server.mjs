// DEV AID ONLY — not what the tests run against (they start the real `wsgate`).
//
// A tiny stand-in for `wsgate` + the chat plugin, for working on the demo page
// without building the Rust server: serves server/assets/demo/, answers /healthz,
// and speaks the chat plugin's protocol at /ws/chat/{channel}?username=NAME
// (403 before the upgrade without a username; events as
// {"from","message","channel","timestamp","pos"}; joins/leaves from "<server>"),
// with channel history as the chat examples keep it: the last HISTORY (100) events per
// channel, and on a connect with since=EPOCH:OFFSET the replay and then
// {"type":"recovery","recovered":BOOL,"latest":POS}. The epoch is new at every start,
// unless DEV_EPOCH sets it.
//
//   node dev-server.mjs [PORT]     # then open http://127.0.0.1:PORT/
//   kill -USR2 PID                 # drops every connection (history stays): pages resume
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../server/assets/demo');
const port = Number(process.argv[2] ?? process.env.PORT ?? 8099);
const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/healthz') return res.end('ok');
  const name = url.pathname === '/' ? 'index.html' : url.pathname.slice(1);
  if (name.includes('..') || !types[path.extname(name)]) return res.writeHead(404).end('Not Found');
  try {
    const body = await readFile(path.join(root, name));
    res.writeHead(200, { 'content-type': types[path.extname(name)] }).end(body);
  } catch {
    res.writeHead(404).end('Not Found');
  }
});

const channels = new Map(); // channel -> Set<ws>
const HISTORY = 100;
const epoch = process.env.DEV_EPOCH ?? Math.random().toString(16).slice(2, 10).padEnd(8, '0');
const histories = new Map(); // channel -> { next, entries: [{ offset, json }] }
const wss = new WebSocketServer({ noServer: true });
const historyOf = (channel) => {
  if (!histories.has(channel)) histories.set(channel, { next: 1, entries: [] });
  return histories.get(channel);
};
const publish = (channel, from, message) => {
  const h = historyOf(channel);
  const offset = h.next++;
  const json = JSON.stringify({ from, message, channel, timestamp: Date.now(), pos: `${epoch}:${offset}` });
  h.entries.push({ offset, json });
  if (h.entries.length > HISTORY) h.entries.shift();
  for (const c of channels.get(channel) ?? []) c.send(json);
};
/** Sends what `ws` missed since `since` ("EPOCH:OFFSET"), then the recovery notice. */
const replay = (ws, channel, since) => {
  const h = historyOf(channel);
  const at = since.lastIndexOf(':');
  const offset = Number(since.slice(at + 1));
  const latest = `${epoch}:${h.next - 1}`;
  const first = h.entries[0]?.offset ?? h.next;
  const recovered = since.slice(0, at) === epoch && offset < h.next && offset + 1 >= first;
  if (!recovered) ws.send(JSON.stringify({ type: 'recovery', recovered, latest }));
  for (const e of h.entries) if (!recovered || e.offset > offset) ws.send(e.json);
  if (recovered) ws.send(JSON.stringify({ type: 'recovery', recovered, latest }));
};

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  const m = /^\/ws\/chat\/([^/]+)$/.exec(url.pathname);
  const username = (url.searchParams.get('username') ?? '').trim();
  if (!m) return socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
  if (!username) return socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n');
  const since = url.searchParams.get('since');
  if (since !== null && !/^[^:]+:[0-9]+$/.test(since)) return socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n');
  const channel = decodeURIComponent(m[1]);
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (!channels.has(channel)) channels.set(channel, new Set());
    if (since !== null) replay(ws, channel, since);
    channels.get(channel).add(ws);
    publish(channel, '<server>', `${username} connected`);
    ws.on('message', (data, isBinary) => { if (!isBinary) publish(channel, username, data.toString()); });
    ws.on('close', () => {
      channels.get(channel).delete(ws);
      publish(channel, '<server>', `${username} disconnected`);
    });
  });
});

process.on('SIGUSR2', () => {
  for (const ws of wss.clients) ws.terminate();
});

server.listen(port, '127.0.0.1', () => console.log(`stand-in chat server on http://127.0.0.1:${port}/`));
