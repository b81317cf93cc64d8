// Browser tests of realtime.js: a real Chromium (Debian's, driven by
// playwright-core) loads a page from a real Caddy built with the module
// (REALTIME_CADDY_BIN) and receives what Node publishes.
//
// Run with client/test/run.sh, or: REALTIME_CADDY_BIN=/tmp/caddy-rt node --test client/test/
//
// Every wait is bounded; every process started here is stopped here.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { once } from 'node:events';
import { createHmac, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const clientDir = path.resolve(here, '..');
const fixtures = path.join(here, 'fixtures');
const CADDY = process.env.REALTIME_CADDY_BIN || '';
const CHROMIUM = process.env.REALTIME_CHROMIUM || '/usr/bin/chromium';
const PUBLISH_KEY = 'k';
const WAIT = 15000; // ms: the bound of every wait for something to happen
const execFileP = promisify(execFile);

const skip = !CADDY
  ? 'REALTIME_CADDY_BIN is not set: build Caddy with `go build -o /tmp/caddy-rt ./cmd/caddy` and set it (client/test/run.sh does)'
  : !fs.existsSync(CHROMIUM)
    ? `no Chromium at ${CHROMIUM}: apt-get install chromium (client/test/run.sh does)`
    : false;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'realtime-client-test-'));

// ---- processes

async function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

// withTimeout rejects if p has not settled within ms.
function withTimeout(p, ms, what) {
  let timer;
  return Promise.race([
    p,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// waitForOutput resolves when proc prints a line matching re (on stdout
// or stderr), rejects if it exits first or the wait runs out.
function waitForOutput(proc, re, what, log) {
  return withTimeout(new Promise((resolve, reject) => {
    let buf = '';
    const onData = (chunk) => {
      buf += chunk;
      if (re.test(buf)) {
        done();
        resolve();
      }
      if (buf.length > 1 << 16) buf = buf.slice(-4096);
    };
    const onExit = (code, signal) => {
      done();
      reject(new Error(`${what} exited (${code ?? signal}) before it was ready:\n${log()}`));
    };
    const done = () => {
      proc.stdout.off('data', onData);
      proc.stderr.off('data', onData);
      proc.off('exit', onExit);
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.on('exit', onExit);
  }), WAIT, what);
}

// stopProcess ends a child this file started: SIGTERM, then SIGKILL.
async function stopProcess(proc) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = once(proc, 'exit');
  proc.kill('SIGTERM');
  try {
    await withTimeout(exited, 10000, 'process exit');
  } catch {
    proc.kill('SIGKILL');
    await withTimeout(exited, 5000, 'process kill');
  }
}

class Redis {
  async start() {
    this.port = await freePort();
    this.proc = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1',
      '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    this.proc.stdout.setEncoding('utf8').on('data', (c) => { out = (out + c).slice(-8192); });
    this.proc.stderr.setEncoding('utf8').on('data', (c) => { out = (out + c).slice(-8192); });
    await waitForOutput(this.proc, /Ready to accept connections/, 'redis-server', () => out);
    this.url = `redis://127.0.0.1:${this.port}`;
  }

  async cmd(...args) {
    const { stdout } = await execFileP('redis-cli', ['-p', String(this.port), ...args], { timeout: 5000 });
    return stdout.trim();
  }

  stop() { return stopProcess(this.proc); }
}

// Caddy runs REALTIME_CADDY_BIN with a Caddyfile of the given sites
// (and, with adminPort, its admin API on 127.0.0.1:adminPort).
class Caddy {
  constructor(name, sites, { adminPort } = {}) {
    this.name = name;
    this.sites = sites; // [{port, extra, hub, clientFile}]
    this.adminPort = adminPort;
    this.dir = fs.mkdtempSync(path.join(tmp, name + '-'));
    this.file = path.join(this.dir, 'Caddyfile');
    this.out = '';
  }

  caddyfile() {
    const q = JSON.stringify;
    const admin = this.adminPort ? `admin 127.0.0.1:${this.adminPort}` : 'admin off';
    let s = `{\n\t${admin}\n\tauto_https off\n\tpersist_config off\n}\n`;
    for (const site of this.sites) {
      const extra = site.extra ? site.extra.split('\n') : [];
      s += `http://127.0.0.1:${site.port} {\n`;
      for (const l of extra.filter((l) => l.startsWith('@'))) s += `\t${l}\n`; // matchers
      s += '\troute {\n';
      for (const l of extra.filter((l) => !l.startsWith('@'))) s += `\t\t${l}\n`;
      if (site.clientFile) {
        // until the hub serves its client itself: the same paths from disk
        s += `\t\t@client path /hub/realtime.js /hub/realtime.mjs\n\t\thandle @client {\n` +
          `\t\t\troot * ${q(path.join(this.dir, 'client'))}\n\t\t\turi strip_prefix /hub\n\t\t\tfile_server\n\t\t}\n`;
      }
      s += `\t\trealtime /hub* {\n\t\t\thub\n\t\t\tpublish_key ${PUBLISH_KEY}\n\t\t\tlongpoll_timeout 2s\n`;
      if (site.hub) s += site.hub.split('\n').map((l) => '\t\t\t' + l).join('\n') + '\n';
      s += `\t\t}\n\t\troot * ${q(fixtures)}\n\t\tfile_server\n\t}\n}\n`;
    }
    return s;
  }

  async start() {
    if (this.sites.some((s) => s.clientFile)) {
      const dir = path.join(this.dir, 'client');
      fs.mkdirSync(dir, { recursive: true });
      const js = fs.readFileSync(path.join(clientDir, 'realtime.js'), 'utf8');
      fs.writeFileSync(path.join(dir, 'realtime.js'), js);
      fs.writeFileSync(path.join(dir, 'realtime.mjs'), toModule(js));
    }
    fs.writeFileSync(this.file, this.caddyfile());
    this.proc = spawn(CADDY, ['run', '--config', this.file, '--adapter', 'caddyfile'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, HOME: this.dir, XDG_DATA_HOME: this.dir, XDG_CONFIG_HOME: this.dir },
    });
    const keep = (c) => { this.out = (this.out + c).slice(-32768); };
    this.proc.stdout.setEncoding('utf8').on('data', keep);
    this.proc.stderr.setEncoding('utf8').on('data', keep);
    await waitForOutput(this.proc, /serving initial configuration/, `caddy (${this.name})`,
      () => this.out + '\nCaddyfile:\n' + this.caddyfile());
  }

  stop() { return stopProcess(this.proc); }

  base(i = 0) { return `http://127.0.0.1:${this.sites[i].port}`; }

  admin() { return `http://127.0.0.1:${this.adminPort}`; }
}

// toModule is what client.go does: realtime.mjs is realtime.js with its
// last line (the window assignment) replaced by an export.
const SCRIPT_EXPORT = "if (typeof window !== 'undefined') window.Realtime = Realtime;\n";
function toModule(js) {
  assert.ok(js.endsWith(SCRIPT_EXPORT), 'realtime.js must end with the window assignment');
  return js.slice(0, -SCRIPT_EXPORT.length) + 'export { Realtime };\n';
}

// ---- HTTP helpers

async function publish(base, channel, data, event) {
  const u = new URL('/hub', base);
  u.searchParams.set('channel', channel);
  if (event) u.searchParams.set('event', event);
  const res = await fetch(u, {
    method: 'POST',
    headers: { Authorization: `Bearer ${PUBLISH_KEY}` },
    body: data,
    signal: AbortSignal.timeout(WAIT),
  });
  const text = await res.text();
  assert.equal(res.status, 200, `publish to ${channel}: ${res.status} ${text}`);
  return JSON.parse(text).id;
}

// adminPost POSTs body as JSON to Caddy's admin API, as curl would: with
// node:http, since fetch adds Sec-Fetch-Mode, which makes the admin API
// ask for an allowed Origin.
function adminPost(url, body) {
  return withTimeout(new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'Content-Type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c) => { text += c; }).on('end', () => resolve({ status: res.statusCode, body: text }));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  }), WAIT, `POST ${url}`);
}

// hubServesClient reports whether GET <base>/hub/realtime.js answers the
// client itself (the server-side glue calling client.Serve).
async function hubServesClient(base) {
  const res = await fetch(base + '/hub/realtime.js', { signal: AbortSignal.timeout(WAIT) });
  const body = await res.text();
  return res.status === 200 && body === fs.readFileSync(path.join(clientDir, 'realtime.js'), 'utf8');
}

// ---- browser

let browser; // a persistent context on a fresh profile

async function newPage(base, file = 'index.html') {
  const page = await browser.newPage();
  page.setDefaultTimeout(WAIT);
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(String(err)));
  await page.goto(`${base}/${file}`);
  return page;
}

function start(page, options) {
  return page.evaluate((o) => window.rtStart(o), { minRetryDelay: 100, maxRetryDelay: 1000, ...options });
}

async function waitOpen(page, transport) {
  let err = null;
  try {
    // a client that gave up (closed) fails at once
    await page.waitForFunction((t) => window.rt &&
      ((window.rt.state === 'open' && window.rt.transport === t) || window.rt.state === 'closed'),
    transport, { timeout: WAIT });
  } catch (e) {
    err = e;
  }
  if (err || (await page.evaluate(() => window.rt.state)) !== 'open') {
    const log = await page.evaluate(() => window.rtLog);
    throw new Error(`not open over ${transport}: ${err ? err.message : 'the client closed'}\n` +
      `states: ${JSON.stringify(log.states)}\nerrors: ${JSON.stringify(log.errors)}`);
  }
}

// waitLog waits until pred(window.rtLog) holds, with the log in the error.
async function waitLog(page, pred, what) {
  try {
    await page.waitForFunction(pred, undefined, { timeout: WAIT });
  } catch (err) {
    const log = await page.evaluate(() => window.rtLog);
    throw new Error(`waiting for ${what}: ${err.message}\n${JSON.stringify(log)}`);
  }
}

// waitMessages waits until the page has at least n messages and returns them.
async function waitMessages(page, n) {
  try {
    await page.waitForFunction((k) => window.rtLog.messages.length >= k, n, { timeout: WAIT });
  } catch (err) {
    const log = await page.evaluate(() => window.rtLog);
    throw new Error(`waiting for ${n} messages: ${err.message}\nmessages: ${JSON.stringify(log.messages)}\n` +
      `resets: ${JSON.stringify(log.resets)}\nstates: ${JSON.stringify(log.states)}\nerrors: ${JSON.stringify(log.errors)}`);
  }
  return page.evaluate(() => window.rtLog.messages);
}

function strip(messages) {
  return messages.map(({ channel, event, data }) => ({ channel, event, data }));
}

// ---- the tests

let caddy; // site 0: plain hub; 1: WebSocket upgrades refused; 2: WebSocket and SSE refused
let clientServedBy = 'hub';

before(async () => {
  if (skip) return;
  const { chromium } = await import('playwright-core');
  const profile = fs.mkdtempSync(path.join(tmp, 'profile-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: WAIT * 2,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const sites = [
    { port: await freePort() },
    { port: await freePort(), extra: '@ws header Upgrade websocket\nrespond @ws 403' },
    {
      port: await freePort(),
      extra: '@ws header Upgrade websocket\nrespond @ws 403\n@sse header Accept *text/event-stream*\nrespond @sse 403',
    },
  ];
  caddy = new Caddy('main', sites);
  await caddy.start();
  if (!(await hubServesClient(caddy.base()))) {
    // the glue is not there yet: serve client/realtime.js at the same paths
    clientServedBy = 'file_server';
    await caddy.stop();
    caddy = new Caddy('main', sites.map((s) => ({ ...s, clientFile: true })));
    await caddy.start();
  }
});

after(async () => {
  if (browser) await browser.close();
  if (caddy) await caddy.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('realtime.js in Chromium', { skip }, () => {
  test('the hub serves realtime.js, realtime.mjs and realtime.d.ts', async () => {
    assert.equal(clientServedBy, 'hub',
      'GET /hub/realtime.js is not answered by the hub (the server must call client.Serve); the other tests serve the file with file_server');
    const js = fs.readFileSync(path.join(clientDir, 'realtime.js'), 'utf8');
    const dts = fs.readFileSync(path.join(clientDir, 'realtime.d.ts'), 'utf8');
    for (const [file, body, type] of [
      ['realtime.js', js, /^text\/javascript; charset=utf-8$/],
      ['realtime.mjs', toModule(js), /^text\/javascript; charset=utf-8$/],
      ['realtime.d.ts', dts, /^application\/typescript; charset=utf-8$/],
    ]) {
      const res = await fetch(`${caddy.base()}/hub/${file}`, { signal: AbortSignal.timeout(WAIT) });
      assert.equal(res.status, 200, file);
      assert.match(res.headers.get('content-type'), type, file);
      assert.equal(res.headers.get('cache-control'), 'no-cache', file);
      assert.equal(await res.text(), body, file);
      const etag = res.headers.get('etag');
      assert.ok(etag, `${file} has no ETag`);
      const again = await fetch(`${caddy.base()}/hub/${file}`, {
        headers: { 'If-None-Match': etag }, signal: AbortSignal.timeout(WAIT),
      });
      assert.equal(again.status, 304, `${file} with If-None-Match`);
      const head = await fetch(`${caddy.base()}/hub/${file}`, { method: 'HEAD', signal: AbortSignal.timeout(WAIT) });
      assert.equal(head.status, 200, `HEAD ${file}`);
      assert.equal(head.headers.get('etag'), etag, `HEAD ${file}`);
      assert.equal(head.headers.get('content-length'), String(Buffer.byteLength(body)), `HEAD ${file}`);
      assert.equal(await head.text(), '', `HEAD ${file}`);
    }
  });

  test('realtime.mjs is an ES module exporting Realtime', async () => {
    const page = await newPage(caddy.base(), 'module.html');
    await page.waitForFunction(() => typeof window.ModuleRealtime === 'function');
    assert.equal(await page.evaluate(() => window.globalAfterModule), 'undefined', 'the module must not define window.Realtime');
    await page.close();
  });

  // Each transport gets text, a custom event name on a second channel, a
  // multi-line Unicode payload, and bytes that are not UTF-8.
  const cases = [
    { name: 'WebSocket', transports: undefined, want: 'websocket' },
    { name: 'SSE', transports: ['sse'], want: 'sse' },
    { name: 'long-poll', transports: ['longpoll'], want: 'longpoll' },
  ];
  for (const tc of cases) {
    test(`receives every message over ${tc.name}`, { timeout: 60000 }, async () => {
      const page = await newPage(caddy.base());
      const opts = { channels: ['news', 'chat'] };
      if (tc.transports) opts.transports = tc.transports;
      await start(page, opts);
      await waitOpen(page, tc.want);
      await publish(caddy.base(), 'news', 'hello');
      await publish(caddy.base(), 'chat', 'héllo ✓\nsecond line\r\nthird', 'chat.text');
      await publish(caddy.base(), 'news', Buffer.from([0xff, 0x00, 0x80, 0x41]));
      await publish(caddy.base(), 'chat', '{"json":true}');
      const got = await waitMessages(page, 4);
      assert.deepEqual(strip(got), [
        { channel: 'news', event: 'message', data: 'hello' },
        { channel: 'chat', event: 'chat.text', data: 'héllo ✓\nsecond line\r\nthird' },
        { channel: 'news', event: 'message', data: { bytes: [0xff, 0x00, 0x80, 0x41] } },
        { channel: 'chat', event: 'message', data: '{"json":true}' },
      ]);
      assert.ok(got.every((m) => m.id), 'every message has an id');
      assert.equal(new Set(got.map((m) => m.id)).size, got.length, 'ids are distinct');
      assert.equal(await page.evaluate(() => window.rt.transport), tc.want, 'stayed on its transport');
      assert.deepEqual(page.errors, []);
      await page.evaluate(() => window.rt.close());
      assert.deepEqual(await page.evaluate(() => window.rtLog.states.at(-1)), { state: 'closed', transport: tc.want });
      await page.close();
    });
  }

  test('falls back to SSE when WebSocket upgrades are refused', { timeout: 60000 }, async () => {
    const page = await newPage(caddy.base(1));
    await start(page, { channels: ['news'] });
    await waitOpen(page, 'sse');
    const states = await page.evaluate(() => window.rtLog.states);
    assert.deepEqual(states[0], { state: 'connecting', transport: 'websocket' });
    await publish(caddy.base(1), 'news', 'after fallback');
    assert.deepEqual(strip(await waitMessages(page, 1)), [{ channel: 'news', event: 'message', data: 'after fallback' }]);
    await page.close();
  });

  test('falls back to long-poll when WebSocket and SSE are refused', { timeout: 60000 }, async () => {
    const page = await newPage(caddy.base(2));
    await start(page, { channels: ['news'] });
    await waitOpen(page, 'longpoll');
    await publish(caddy.base(2), 'news', 'one');
    await publish(caddy.base(2), 'news', 'two');
    assert.deepEqual((await waitMessages(page, 2)).map((m) => m.data), ['one', 'two']);
    await page.close();
  });

  test('gives up with an error when every transport is refused', { timeout: 60000 }, async () => {
    const page = await newPage(caddy.base());
    await page.evaluate(() => {
      window.rt = new Realtime('/nohub', { channels: ['news'], minRetryDelay: 100, maxRetryDelay: 1000 });
      window.rt.on('state', (s) => window.rtLog.states.push({ state: s.state, transport: s.transport, error: s.error && s.error.message }));
    });
    await page.waitForFunction(() => window.rt.state === 'closed');
    const last = await page.evaluate(() => window.rtLog.states.at(-1));
    assert.equal(last.state, 'closed');
    assert.match(last.error, /404/);
    await page.close();
  });

  test('subscribe and unsubscribe reconnect with the new channels', { timeout: 60000 }, async () => {
    const page = await newPage(caddy.base());
    await start(page, { channels: ['news'] });
    await waitOpen(page, 'websocket');
    await publish(caddy.base(), 'news', 'n1');
    await waitMessages(page, 1);
    const reopened = async (fn) => {
      const n = await page.evaluate(() => window.rtLog.states.length);
      await page.evaluate(fn);
      await page.waitForFunction((k) => window.rtLog.states.slice(k).some((s) => s.state === 'connecting') &&
        window.rt.state === 'open', n);
    };
    await reopened(() => window.rt.subscribe('chat'));
    assert.deepEqual(await page.evaluate(() => window.rt.channels), ['news', 'chat']);
    await publish(caddy.base(), 'chat', 'c1');
    await publish(caddy.base(), 'news', 'n2');
    assert.deepEqual((await waitMessages(page, 3)).map((m) => m.data), ['n1', 'c1', 'n2']);
    await reopened(() => window.rt.unsubscribe('news'));
    await publish(caddy.base(), 'news', 'n3 (not subscribed)');
    await publish(caddy.base(), 'chat', 'c2');
    const got = await waitMessages(page, 4);
    assert.deepEqual(got.map((m) => m.data), ['n1', 'c1', 'n2', 'c2']);
    assert.deepEqual(await page.evaluate(() => window.rtLog.resets), []);
    await page.close();
  });

  test('an id the hub cannot place gives a reset, then live messages', { timeout: 60000 }, async () => {
    const page = await newPage(caddy.base());
    await start(page, { channels: ['fresh'], lastEventId: 'no-such-id' });
    await waitLog(page, () => window.rtLog.resets.length > 0 || window.rt.state === 'closed', 'a reset');
    const resets = await page.evaluate(() => window.rtLog.resets);
    assert.equal(resets[0].channel, 'fresh');
    assert.ok(['unknown-id', 'expired', 'gap'].includes(resets[0].reason), resets[0].reason);
    await waitOpen(page, 'websocket');
    await publish(caddy.base(), 'fresh', 'live');
    assert.deepEqual((await waitMessages(page, 1)).map((m) => m.data), ['live']);
    await page.close();
  });
});

describe('resume across a Caddy restart (Redis streams)', { skip }, () => {
  let redis;
  let rc;
  before(async () => {
    if (skip) return;
    redis = new Redis();
    await redis.start();
    rc = new Caddy('redis', [{ port: await freePort(), hub: `redis ${redis.url}`, clientFile: clientServedBy !== 'hub' }]);
    await rc.start();
  });
  after(async () => {
    if (rc) await rc.stop();
    if (redis) await redis.stop();
  });

  test('the page sees every message once, in order', { timeout: 90000 }, async () => {
    const page = await newPage(rc.base());
    await start(page, { channels: ['news'] });
    await waitOpen(page, 'websocket');
    const xadd = (data) => redis.cmd('XADD', 'realtime:news', '*', 'data', data);
    // one at a time: stream entries and HTTP publishes reach the node by
    // different paths, so only their order of arrival is promised
    await xadd('m1');
    await waitMessages(page, 1);
    await publish(rc.base(), 'news', 'm2');
    await waitMessages(page, 2);
    await xadd('m3');
    await waitMessages(page, 3);

    await rc.stop();
    await waitLog(page, () => window.rt.state !== 'open', 'the client to notice Caddy is gone');
    await xadd('m4'); // while Caddy is down
    await xadd('m5');
    await rc.start(); // same port
    await xadd('m6');
    await waitMessages(page, 6);
    await waitLog(page, () => window.rt.state === 'open', 'the client to reconnect');
    await publish(rc.base(), 'news', 'm7');
    const got = await waitMessages(page, 7);
    assert.deepEqual(got.map((m) => m.data), ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7']);
    assert.deepEqual(await page.evaluate(() => window.rtLog.resets), []);
    assert.equal(new Set(got.map((m) => m.id)).size, 7, 'ids are distinct');
    assert.deepEqual(page.errors, []);
    await page.close();
  });
});

describe('tickets', { skip }, () => {
  let app; // the app's authorize endpoint
  let tc;
  before(async () => {
    if (skip) return;
    app = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => {
        const { channels = [] } = JSON.parse(body || '{}');
        if (!channels.every((c) => c === 'news' || c === 'chat')) {
          res.writeHead(403).end('forbidden channel');
          return;
        }
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ sub: 'user-42', channels: ['news', 'chat'], publish: ['chat'] }));
      });
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    tc = new Caddy('tickets', [{
      port: await freePort(),
      clientFile: clientServedBy !== 'hub',
      hub: `ticket {\n\tsecret test-secret-that-is-long-enough-0123456789\n\tissue /hub/ticket\n` +
        `\tauthorize http://127.0.0.1:${app.address().port}/authorize\n}`,
    }]);
    await tc.start();
  });
  after(async () => {
    if (tc) await tc.stop();
    if (app) {
      app.closeAllConnections();
      app.close();
    }
  });

  for (const transports of [['websocket'], ['sse'], ['longpoll']]) {
    test(`subscribes and publishes with tickets over ${transports[0]}`, { timeout: 60000 }, async () => {
      const page = await newPage(tc.base());
      await start(page, { channels: ['news', 'chat'], transports, ticketURL: '/hub/ticket' });
      await waitOpen(page, transports[0]);
      const id = await page.evaluate(() => window.rt.publish('chat', 'from the page'));
      assert.ok(id, 'publish resolves with the id');
      await publish(tc.base(), 'news', 'from the backend');
      const got = await waitMessages(page, 2);
      assert.deepEqual(strip(got), [
        { channel: 'chat', event: 'message', data: 'from the page' },
        { channel: 'news', event: 'message', data: 'from the backend' },
      ]);
      const refused = await page.evaluate(() => window.rt.publish('news', 'no right').then(() => 'ok', (e) => e.message));
      assert.match(refused, /refused/);
      await page.close();
    });
  }
});

// Rewind: a page with rewind: n and no cursor first gets the last n
// retained messages of its channel, then live ones, over each transport.
describe('rewind', { skip }, () => {
  let rw;
  before(async () => {
    if (skip) return;
    rw = new Caddy('rewind', [{
      port: await freePort(),
      clientFile: clientServedBy !== 'hub',
      hub: 'channels ticker:* {\n\trewind 1\n}',
    }]);
    await rw.start();
  });
  after(async () => {
    if (rw) await rw.stop();
  });

  for (const transport of ['websocket', 'sse', 'longpoll']) {
    test(`rewind: 2 gets the last 2 messages, then live ones, over ${transport}`, { timeout: 60000 }, async () => {
      const channel = `rw-${transport}`;
      const ids = [];
      for (const data of ['r1', 'r2', 'r3']) ids.push(await publish(rw.base(), channel, data));
      const page = await newPage(rw.base());
      const urls = [];
      page.on('request', (r) => urls.push(r.url()));
      page.on('websocket', (ws) => urls.push(ws.url()));
      await start(page, { channels: [channel], transports: [transport], rewind: 2 });
      await waitOpen(page, transport);
      const rewound = await waitMessages(page, 2);
      assert.deepEqual(rewound.map((m) => m.data), ['r2', 'r3'], 'the last two, in order');
      await publish(rw.base(), channel, 'live');
      const got = await waitMessages(page, 3);
      assert.deepEqual(got.map((m) => m.data), ['r2', 'r3', 'live']);
      assert.equal(got[1].id, ids[2], 'a rewound message has its id');
      assert.equal(new Set(got.map((m) => m.id)).size, 3, 'ids are distinct');
      assert.deepEqual(await page.evaluate(() => window.rtLog.resets), []);
      const hub = urls.filter((u) => new URL(u).pathname === '/hub');
      assert.equal(new URL(hub[0]).searchParams.get('rewind'), '2', hub[0]);
      assert.ok(hub.slice(1).every((u) => !new URL(u).searchParams.has('rewind')),
        `only the connect without a cursor asks for a rewind: ${JSON.stringify(hub)}`);
      assert.deepEqual(page.errors, []);
      await page.close();
    });
  }

  test('a channels rule rewinds by default; rewind: 0 asks for none', { timeout: 60000 }, async () => {
    await publish(rw.base(), 'ticker:x', 'old');
    await publish(rw.base(), 'ticker:x', 'last');
    const ruled = await newPage(rw.base());
    await start(ruled, { channels: ['ticker:x'], transports: ['sse'] });
    await waitOpen(ruled, 'sse');
    assert.deepEqual((await waitMessages(ruled, 1)).map((m) => m.data), ['last']);
    const none = await newPage(rw.base());
    await start(none, { channels: ['ticker:x'], transports: ['sse'], rewind: 0 });
    await waitOpen(none, 'sse');
    await publish(rw.base(), 'ticker:x', 'live');
    assert.deepEqual((await waitMessages(ruled, 2)).map((m) => m.data), ['last', 'live']);
    assert.deepEqual((await waitMessages(none, 1)).map((m) => m.data), ['live'], 'rewind: 0 got no old message');
    await ruled.close();
    await none.close();
  });
});

// realtime.closed: Caddy's admin API disconnects a channel's subscribers;
// the page's client closes for good (state closed, reason disconnected)
// and does not reconnect.
describe('realtime.closed (admin disconnect)', { skip }, () => {
  let ac;
  before(async () => {
    if (skip) return;
    ac = new Caddy('admin', [{ port: await freePort(), clientFile: clientServedBy !== 'hub' }],
      { adminPort: await freePort() });
    await ac.start();
  });
  after(async () => {
    if (ac) await ac.stop();
  });

  for (const transport of ['websocket', 'sse', 'longpoll']) {
    test(`the page closes for good over ${transport}`, { timeout: 60000 }, async () => {
      const channel = `bye-${transport}`;
      const page = await newPage(ac.base());
      await start(page, { channels: [channel], transports: [transport] });
      await waitOpen(page, transport);
      await publish(ac.base(), channel, 'before');
      await waitMessages(page, 1);
      const hubRequests = [];
      const onRequest = (u) => { if (new URL(u).pathname === '/hub') hubRequests.push(u); };
      page.on('request', (r) => onRequest(r.url()));
      page.on('websocket', (ws) => onRequest(ws.url()));
      await new Promise((r) => setTimeout(r, 300)); // a long-poll's next poll is sent by now
      hubRequests.length = 0;

      const res = await adminPost(`${ac.admin()}/realtime/disconnect`, { channel });
      assert.equal(res.status, 200, `POST /realtime/disconnect on the admin API: ${res.status} ${res.body}`);
      await waitLog(page, () => window.rt.state === 'closed', 'the client to close');
      const log = await page.evaluate(() => window.rtLog);
      assert.deepEqual(log.states.at(-1), { state: 'closed', transport, reason: 'disconnected' });

      // no reconnect for 3s (the client's backoff here is at most 1s): no
      // request to the hub, no state change, nothing published arrives
      await new Promise((r) => setTimeout(r, 1500));
      await publish(ac.base(), channel, 'after');
      await new Promise((r) => setTimeout(r, 1500));
      const after = await page.evaluate(() => window.rtLog);
      assert.deepEqual(hubRequests, [], 'no request to the hub after realtime.closed');
      assert.deepEqual(after.states, log.states, 'no state change after closed');
      assert.deepEqual(after.messages.map((m) => m.data), ['before'], 'realtime.closed is no message, and nothing after it');
      assert.equal(await page.evaluate(() => window.rt.state), 'closed');
      assert.deepEqual(page.errors, []);
      await page.close();
    });
  }
});

// Presence: two pages with tickets of different subs on a channel whose
// rule has `presence events`, two nodes on one Redis. The tickets are HS256 JWTs that a small app
// of this test signs per name (/tickets/<name>, proxied by Caddy, so each
// page's ticketURL names who it is).
describe('presence', { skip }, () => {
  const SECRET = 'presence-test-secret-that-is-long-enough-0123';
  let app;
  let pc;
  let pc2;
  let redis;
  const b64 = (o) => Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)).toString('base64url');
  const jwt = (claims) => {
    const body = b64({ alg: 'HS256', typ: 'JWT' }) + '.' + b64(claims);
    return body + '.' + createHmac('sha256', SECRET).update(body).digest('base64url');
  };
  before(async () => {
    if (skip) return;
    app = http.createServer((req, res) => {
      const m = /^\/tickets\/([a-z0-9-]+)$/.exec(req.url);
      if (req.method !== 'POST' || !m) {
        res.writeHead(404).end('not found');
        return;
      }
      req.resume();
      const now = Math.floor(Date.now() / 1000);
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({
        ticket: jwt({ sub: m[1], channels: ['room:*', 'plain'], exp: now + 60, iat: now, jti: randomUUID() }),
        expires_in: 60,
      }));
    });
    app.listen(0, '127.0.0.1');
    await once(app, 'listening');
    // two Caddy nodes on one Redis: the pages are on different nodes
    redis = new Redis();
    await redis.start();
    const node = async (name) => new Caddy(name, [{
      port: await freePort(),
      clientFile: clientServedBy !== 'hub',
      extra: `reverse_proxy /tickets/* 127.0.0.1:${app.address().port}`,
      hub: `redis ${redis.url}\nticket {\n\tsecret ${SECRET}\n}\nchannels room:* {\n\tpresence events\n\trewind 10\n}\n` +
        'channels vip:* {\n\tpresence\n}',
    }]);
    pc = await node('presence');
    pc2 = await node('presence-2');
    await pc.start();
    await pc2.start();
  });
  after(async () => {
    if (pc) await pc.stop();
    if (pc2) await pc2.stop();
    if (redis) await redis.stop();
    if (app) {
      app.closeAllConnections();
      app.close();
    }
  });

  const members = (p) => p.members.map((m) => `${m.sub}:${m.connections}`).sort();

  test('two pages see each other join, presence() lists both, a closed page leaves', { timeout: 90000 }, async () => {
    try {
      await twoPages();
    } catch (err) {
      err.message += `\nCaddy's output (end):\n${pc.out.slice(-3000)}\nthe other node's:\n${pc2.out.slice(-3000)}`;
      throw err;
    }
  });

  async function twoPages() {
    const channel = 'room:one';
    const alice = await newPage(pc.base());
    await start(alice, { channels: [channel], transports: ['websocket'], ticketURL: '/tickets/alice' });
    await waitOpen(alice, 'websocket');
    await waitLog(alice, () => window.rtLog.joins.some((j) => j.sub === 'alice'), 'alice\'s own join');

    // bob over SSE on the other node, with a rewind: he also gets
    // alice's earlier join
    const bob = await newPage(pc2.base());
    await start(bob, { channels: [channel], transports: ['sse'], ticketURL: '/tickets/bob', rewind: 10 });
    await waitOpen(bob, 'sse');
    await waitLog(alice, () => window.rtLog.joins.some((j) => j.sub === 'bob'), 'bob\'s join on alice\'s page');
    await waitLog(bob, () => window.rtLog.joins.some((j) => j.sub === 'alice') &&
      window.rtLog.joins.some((j) => j.sub === 'bob'), 'alice\'s (rewound) and bob\'s joins on bob\'s page');
    const aliceLog = await alice.evaluate(() => window.rtLog);
    const bobJoin = aliceLog.joins.find((j) => j.sub === 'bob');
    assert.equal(bobJoin.channel, channel);
    assert.ok(bobJoin.id, 'a join has an id');
    assert.deepEqual(aliceLog.messages, [], 'joins are not messages');

    // presence() from either page (either node) lists both, each with
    // its one connection
    for (const page of [alice, bob]) {
      const p = await page.evaluate((c) => window.rt.presence(c), channel);
      assert.equal(p.channel, channel);
      assert.equal(p.connections, 2);
      assert.deepEqual(members(p), ['alice:1', 'bob:1']);
    }

    // a message between them still arrives as a message
    await publish(pc.base(), channel, 'hello room');
    await waitLog(alice, () => window.rtLog.messages.some((m) => m.data === 'hello room'), 'the message');

    // bob closes his page: after the hub's 5 s grace, alice gets his leave
    const closedAt = Date.now();
    await bob.close();
    try {
      await alice.waitForFunction(() => window.rtLog.leaves.some((l) => l.sub === 'bob'), undefined, { timeout: 15000 });
    } catch (err) {
      throw new Error(`no leave for bob within 15 s of closing his page: ${err.message}\n` +
        JSON.stringify(await alice.evaluate(() => window.rtLog)));
    }
    const waited = Date.now() - closedAt;
    assert.ok(waited >= 4000, `the leave came after ${waited} ms: before the hub's 5 s grace`);
    const leave = (await alice.evaluate(() => window.rtLog.leaves)).find((l) => l.sub === 'bob');
    assert.equal(leave.channel, channel);
    assert.ok(leave.id);
    const after = await alice.evaluate((c) => window.rt.presence(c), channel);
    assert.deepEqual(members(after), ['alice:1']);
    assert.equal(after.connections, 1);
    assert.deepEqual(alice.errors, []);
    await alice.close();
  }

  test('presence() refusals: a channel without presence (404), one the ticket does not cover (403)', { timeout: 60000 }, async () => {
    const page = await newPage(pc.base());
    await start(page, { channels: ['room:two'], transports: ['longpoll'], ticketURL: '/tickets/carol' });
    await waitOpen(page, 'longpoll');
    const refusal = (c) => page.evaluate((ch) => window.rt.presence(ch).then(
      (p) => ({ resolved: p }),
      (e) => ({ name: e.name, status: e.status, reason: e.reason, message: e.message })), c);
    const none = await refusal('plain');
    assert.equal(none.name, 'RealtimeError');
    assert.equal(none.status, 404, JSON.stringify(none));
    assert.match(none.reason, /presence/);
    const other = await refusal('vip:lounge'); // presence, but not in the ticket's channels
    assert.equal(other.status, 403, JSON.stringify(other));
    assert.ok(other.reason, 'a reason');
    const ok = await refusal('room:two');
    assert.deepEqual(members(ok.resolved), ['carol:1']);
    assert.deepEqual(page.errors, []);
    await page.close();
  });
});
