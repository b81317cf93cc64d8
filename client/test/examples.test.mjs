// Every page under examples/ in a real Chromium (Debian's, driven by
// playwright-core), served the way each example's README runs it: Caddy
// (REALTIME_CADDY_BIN) with the example's own Caddyfile from the
// repository root, its ports moved to free ones with the Caddyfile's
// environment variables, the example's Go app and a redis-server of this
// test's own where the example needs them.
//
// Each page must load and go live (it shows a message published while it
// is open) with nothing going wrong on the way: no console error, no
// uncaught exception, no failed request, no HTTP answer >= 400.
//
// Run with client/test/run.sh, or:
//   REALTIME_CADDY_BIN=$PWD/bin/caddy node --test client/test/examples.test.mjs
//
// Every wait is bounded; every process started here is stopped here.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFile } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const CADDY = process.env.REALTIME_CADDY_BIN ? path.resolve(process.env.REALTIME_CADDY_BIN) : '';
const CHROMIUM = process.env.REALTIME_CHROMIUM || '/usr/bin/chromium';
const WAIT = 15000; // ms: the bound of every wait for something to happen
const BUILD_WAIT = 180000; // ms: the bound of building the examples' apps
const execFileP = promisify(execFile);

function have(cmd, ...args) {
  try {
    return spawnSync(cmd, args, { stdio: 'ignore', timeout: 10000 }).status === 0;
  } catch {
    return false;
  }
}

const skip = !CADDY
  ? 'REALTIME_CADDY_BIN is not set: build Caddy with `go build -o bin/caddy ./cmd/caddy` and set it (client/test/run.sh does)'
  : !fs.existsSync(CHROMIUM)
    ? `no Chromium at ${CHROMIUM}: apt-get install chromium (client/test/run.sh does)`
    : false;
const noGo = have('go', 'version') ? false : 'no `go` to build the example\'s app';
const noRedis = have('redis-server', '--version') && have('redis-cli', '--version')
  ? false : 'no redis-server/redis-cli: apt-get install redis-server redis-tools';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'realtime-examples-test-'));

// ---- processes

const running = new Set(); // every child process started here

// start runs cmd from the repository root with env added to a cleaned
// environment, and keeps the tail of its output for error messages.
function start(name, cmd, args, env = {}) {
  const base = { ...process.env };
  // the examples read these; only what a test sets may reach them
  for (const k of ['REDIS_URL', 'DEMO_ROOT', 'REALTIME_PUBLISH_KEY', 'NOTIFY_PUBLISH_KEY', 'CHAT_TICKET_SECRET',
    'EXAMPLE_PORT', 'EXAMPLE_APP_PORT', 'EXAMPLE_ADMIN_PORT']) delete base[k];
  const proc = spawn(cmd, args, { cwd: repo, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  proc.name = name;
  proc.out = '';
  const keep = (c) => { proc.out = (proc.out + c).slice(-32768); };
  proc.stdout.setEncoding('utf8').on('data', keep);
  proc.stderr.setEncoding('utf8').on('data', keep);
  running.add(proc);
  proc.on('exit', () => running.delete(proc));
  return proc;
}

// stop ends a child this file started, by its PID: SIGTERM, then SIGKILL.
async function stop(proc) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = once(proc, 'exit');
  proc.kill('SIGTERM');
  try {
    await withTimeout(exited, 10000, `${proc.name} to exit`);
  } catch {
    proc.kill('SIGKILL');
    await withTimeout(exited, 5000, `${proc.name} to die`);
  }
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

const handedOut = new Set();
async function freePort() {
  for (;;) {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const { port } = srv.address();
    srv.close();
    await once(srv, 'close');
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

// waitListening waits until 127.0.0.1:port accepts connections, failing
// early if proc exits first.
async function waitListening(proc, port) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`${proc.name} exited (${proc.exitCode ?? proc.signalCode}) before listening on ${port}:\n${proc.out}`);
    }
    const ok = await new Promise((resolve) => {
      const c = net.connect({ host: '127.0.0.1', port });
      c.setTimeout(1000);
      c.once('connect', () => { c.destroy(); resolve(true); });
      c.once('error', () => resolve(false));
      c.once('timeout', () => { c.destroy(); resolve(false); });
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${proc.name} not listening on ${port} within ${WAIT}ms:\n${proc.out}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

// startRedis runs a redis-server of this test on a free loopback port.
async function startRedis() {
  const port = await freePort();
  const proc = start('redis-server', 'redis-server', ['--port', String(port), '--bind', '127.0.0.1',
    '--save', '', '--appendonly', 'no']);
  await waitListening(proc, port);
  return { proc, url: `redis://127.0.0.1:${port}` };
}

// buildApps builds the Go apps of the examples into tmp, once per run:
// what `go run ./examples/<name>` would run.
const apps = {};
async function buildApps(names) {
  await Promise.all(names.map(async (name) => {
    const bin = path.join(tmp, 'app-' + name);
    await execFileP('go', ['build', '-o', bin, './examples/' + name], { cwd: repo, timeout: BUILD_WAIT });
    apps[name] = bin;
  }));
}

// startApp runs an example's app on a free port.
async function startApp(name) {
  const port = await freePort();
  const proc = start(name + ' app', apps[name], ['-addr', `127.0.0.1:${port}`]);
  await waitListening(proc, port);
  return { proc, port };
}

// startExample runs `caddy run --config examples/<name>/Caddyfile
// --adapter caddyfile` from the repository root, on free ports.
async function startExample(name, env = {}) {
  const port = await freePort();
  const admin = await freePort();
  const home = fs.mkdtempSync(path.join(tmp, name + '-home-'));
  const proc = start(name + ' caddy', CADDY,
    ['run', '--config', path.join('examples', name, 'Caddyfile'), '--adapter', 'caddyfile'], {
      HOME: home,
      XDG_DATA_HOME: path.join(home, 'data'),
      XDG_CONFIG_HOME: path.join(home, 'config'),
      EXAMPLE_PORT: String(port),
      EXAMPLE_ADMIN_PORT: String(admin),
      ...env,
    });
  await waitListening(proc, port);
  return { proc, base: `http://127.0.0.1:${port}` };
}

// startChat runs the chat example's app and its Caddy, stopped by defer.
async function startChat(defer) {
  const app = await startApp('chat');
  defer(() => stop(app.proc));
  const caddy = await startExample('chat', {
    EXAMPLE_APP_PORT: String(app.port),
    CHAT_TICKET_SECRET: randomBytes(32).toString('hex'),
  });
  defer(() => stop(caddy.proc));
  return caddy;
}

// ---- the browser

let browser;

// openPage opens base + pathname in a fresh context (its own cookies) and
// records everything that goes wrong on the page from then on.
async function openPage(base, pathname = '/') {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const problems = [];
  const requests = [];
  let watching = true;
  const note = (s) => { if (watching) problems.push(s); };
  page.on('console', (m) => {
    if (m.type() === 'error') note(`console error: ${m.text()} (at ${m.location().url || '?'})`);
  });
  page.on('pageerror', (err) => note(`uncaught: ${err.stack || err}`));
  page.on('request', (r) => requests.push({ method: r.method(), url: r.url(), body: r.postData() }));
  page.on('requestfailed', (r) => note(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.status() >= 400) note(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
  });
  page.on('websocket', (ws) => {
    ws.on('socketerror', (err) => note(`WebSocket ${ws.url()}: ${err}`));
  });
  await page.goto(base + pathname);
  return {
    page,
    problems,
    requests,
    // done stops recording (closing a page aborts its streams, which is
    // no fault of the page) and closes it
    async done() {
      watching = false;
      await context.close();
    },
  };
}

// waitPage waits until fn(arg) holds in the page; on a timeout the error
// has the page's text and the problems seen so far.
async function waitPage(p, what, fn, arg) {
  try {
    await p.page.waitForFunction(fn, arg, { timeout: WAIT });
  } catch (err) {
    let text = '?';
    try { text = await p.page.evaluate(() => document.body.innerText); } catch { /* closed */ }
    throw new Error(`waiting for ${what}: ${err.message}\npage:\n${text}\nproblems: ${JSON.stringify(p.problems, null, 1)}`);
  }
}

// logIn logs in through the page's own form, as a person does (the app
// sets its cookie and redirects to the page).
async function logIn(p, name) {
  await waitPage(p, 'the login form', () => !document.getElementById('login').hidden);
  await p.page.fill('#login input[name=name]', name);
  await Promise.all([
    p.page.waitForEvent('load', { timeout: WAIT }), // of the page the app redirects to
    p.page.click('#login button'),
  ]);
}

// stack returns a function that registers a cleanup of test t; they run
// when t ends, the last registered first (the page, then Caddy, then the
// app).
function stack(t) {
  const fns = [];
  t.after(async () => {
    for (const fn of fns.reverse()) await fn();
  });
  return (fn) => fns.push(fn);
}

// assertClean fails on anything that went wrong on the page. The browser
// asks for /favicon.ico on its own, some time after the page loaded,
// unless the page names an icon: so that a page without one fails even
// before that request is done, it must name one or the site must serve it.
async function assertClean(p) {
  const icon = await p.page.evaluate(() => document.querySelector('link[rel~="icon"]')?.href);
  if (!icon) {
    const res = await fetch(new URL('/favicon.ico', p.page.url()), { signal: AbortSignal.timeout(WAIT) });
    await res.arrayBuffer();
    if (res.status >= 400) p.problems.push(`no <link rel="icon"> and GET /favicon.ico answers ${res.status}`);
  }
  assert.deepEqual(p.problems, [], 'the page had errors');
}

// ---- the tests

const stopAll = () => Promise.all([...running].map(stop));
let redis;

before(async () => {
  if (skip) return;
  const { chromium } = await import('playwright-core');
  const building = noGo ? Promise.resolve() : buildApps(['chat', 'notifications', 'passthrough']);
  building.catch(() => {}); // awaited below, after the browser and Redis
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: WAIT * 2,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  if (!noRedis) redis = await startRedis();
  await withTimeout(building, BUILD_WAIT, 'go build of the examples\' apps');
});

after(async () => {
  if (browser) await browser.close();
  await stopAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('example pages in Chromium', { skip }, () => {
  test('demo: goes live, publishes from its form, refuses an empty message', { timeout: 60000 }, async (t) => {
    const defer = stack(t);
    const caddy = await startExample('demo');
    defer(() => stop(caddy.proc));
    const p = await openPage(caddy.base);
    defer(() => p.done());
    await waitPage(p, 'state open', () => document.getElementById('state').textContent.startsWith('open'));

    const posts = () => p.requests.filter((r) => r.method === 'POST' && new URL(r.url).pathname === '/hub');
    // empty: a note, no request
    await p.page.click('#publish button');
    await waitPage(p, 'the note on an empty message', () => !document.getElementById('note').hidden &&
      /empty/.test(document.getElementById('note').textContent));
    assert.deepEqual(posts(), [], 'an empty message was POSTed');

    // a message: published, and the page's own subscription shows it
    await p.page.fill('#publish input[name=data]', 'hello from the page');
    await p.page.click('#publish button');
    // text first, then its id (faint, in a span of its own)
    await waitPage(p, 'the message in the log', () => [...document.querySelectorAll('#log li')].some((li) =>
      li.firstElementChild?.classList.contains('text') && li.firstElementChild.textContent === 'hello from the page' &&
      li.lastElementChild?.classList.contains('id') && li.lastElementChild.textContent !== ''));
    await waitPage(p, 'the note gone and the input cleared', () => document.getElementById('note').hidden &&
      document.querySelector('#publish input[name=data]').value === '');
    assert.deepEqual(posts().map((r) => r.body), ['hello from the page'], 'one POST, of the typed message');
    // the shell command the page shows is for this page's address
    assert.match(await p.page.textContent('#curl'), new RegExp(`'${caddy.base}/hub\\?channel=news'`));
    await assertClean(p);
  });

  test('demo: two tabs see each other online, a join notice, then a leave', { timeout: 60000 }, async (t) => {
    const defer = stack(t);
    const caddy = await startExample('demo');
    defer(() => stop(caddy.proc));
    const a = await openPage(caddy.base);
    defer(() => a.done());
    await waitPage(a, 'state open', () => document.getElementById('state').textContent.startsWith('open'));
    const nameA = await a.page.inputValue('#name');
    assert.match(nameA, /^[a-z]+-\d\d$/, 'a tab gets a name of its own');
    await waitPage(a, 'itself online, as you', (n) => [...document.querySelectorAll('#online li')]
      .some((li) => li.dataset.sub === n && /you/.test(li.textContent)), nameA);

    const b = await openPage(caddy.base);
    defer(() => b.done());
    await waitPage(b, 'state open', () => document.getElementById('state').textContent.startsWith('open'));
    let nameB = await b.page.inputValue('#name');
    if (nameB === nameA) {
      // the same random name by chance: rename the second tab
      nameB = nameA + 'b';
      await b.page.fill('#name', nameB);
      await b.page.click('#rename button');
    }
    const both = (p) => waitPage(p, 'both names online', (names) => {
      const shown = [...document.querySelectorAll('#online li')].map((li) => li.dataset.sub).sort();
      return JSON.stringify(shown) === JSON.stringify(names);
    }, [nameA, nameB].sort());
    await both(a);
    await both(b);
    // the first tab saw the second one join, as a notice with its id
    await waitPage(a, 'a join notice for the second tab', (n) => [...document.querySelectorAll('#log li.join')]
      .some((li) => li.querySelector('.text').textContent === n + ' joined' && li.querySelector('.id')?.textContent), nameB);
    assert.match(await a.page.textContent('#count'), /\(2\)/);

    // the second tab closes: after the hub's 5 s grace, the first sees it leave
    await b.done();
    try {
      await a.page.waitForFunction((n) => [...document.querySelectorAll('#log li.leave')]
        .some((li) => li.querySelector('.text').textContent === n + ' left') &&
        ![...document.querySelectorAll('#online li')].some((li) => li.dataset.sub === n), nameB, { timeout: 15000 });
    } catch (err) {
      throw new Error(`no leave within 15 s: ${err.message}\n${await a.page.evaluate(() => document.body.innerText)}`);
    }
    await assertClean(a);
  });

  test('dashboard: shows what publish.sh PUBLISHes to Redis', { timeout: 60000, skip: noRedis }, async (t) => {
    const defer = stack(t);
    const caddy = await startExample('dashboard', { REDIS_URL: redis.url });
    defer(() => stop(caddy.proc));
    const p = await openPage(caddy.base);
    defer(() => p.done());
    await waitPage(p, 'state open', () => document.getElementById('state').textContent === 'open');

    // the page is subscribed, so its node is a Redis subscriber now
    const { stdout } = await execFileP('/bin/sh', ['examples/dashboard/publish.sh'], {
      cwd: repo, timeout: WAIT, env: { ...process.env, REDIS_URL: redis.url, COUNT: '1', INTERVAL: '0' },
    });
    assert.match(stdout, /published #1 to 1 node\(s\)/);
    await waitPage(p, 'update #1 on the page', () => document.getElementById('seq').textContent === '1' &&
      document.getElementById('load1').textContent !== '-');
    assert.equal(await p.page.textContent('#transport'), 'SSE');
    await assertClean(p);
  });

  test('chat: log in, go live over WebSocket, send a message', { timeout: 60000, skip: noGo }, async (t) => {
    const defer = stack(t);
    const caddy = await startChat(defer);
    const p = await openPage(caddy.base);
    defer(() => p.done());
    await logIn(p, 'alice');
    await waitPage(p, 'state open over WebSocket', () => document.getElementById('state').textContent === 'open' &&
      document.getElementById('transport').textContent === '(websocket)');

    await p.page.fill('#send input[name=text]', 'hi from alice');
    await p.page.click('#send button');
    await waitPage(p, 'the message in the log', () => [...document.querySelectorAll('#log li')]
      .some((li) => li.querySelector('b')?.textContent === 'alice' && li.textContent.endsWith('hi from alice')));
    await assertClean(p);
  });

  test('chat: two users see who is in the room, and a join notice', { timeout: 60000, skip: noGo }, async (t) => {
    const defer = stack(t);
    const caddy = await startChat(defer);
    const people = (p, names) => waitPage(p, `${names.join(' and ')} in the room`, (want) => {
      const shown = [...document.querySelectorAll('#people li')].map((li) => li.dataset.sub).sort();
      return JSON.stringify(shown) === JSON.stringify(want);
    }, [...names].sort());

    const alice = await openPage(caddy.base);
    defer(() => alice.done());
    await logIn(alice, 'alice');
    await waitPage(alice, 'state open', () => document.getElementById('state').textContent === 'open');
    await people(alice, ['alice']);

    const bob = await openPage(caddy.base); // a context of its own: bob's cookie
    defer(() => bob.done());
    await logIn(bob, 'bob');
    await waitPage(bob, 'state open', () => document.getElementById('state').textContent === 'open');
    await people(bob, ['alice', 'bob']);
    await people(alice, ['alice', 'bob']);
    await waitPage(alice, 'bob\'s join notice', () => [...document.querySelectorAll('#log li.join')]
      .some((li) => li.textContent === 'bob joined'));
    assert.equal(await alice.page.textContent('#count'), '(2)');
    assert.match(await alice.page.textContent('#people li[data-sub="alice"]'), /you/);

    // a message still shows as a message, with its sender
    await bob.page.fill('#send input[name=text]', 'hi alice');
    await bob.page.click('#send button');
    await waitPage(alice, 'bob\'s message', () => [...document.querySelectorAll('#log li')]
      .some((li) => li.querySelector('b')?.textContent === 'bob' && li.textContent.endsWith('hi alice')));
    await assertClean(alice);
    await assertClean(bob);
  });

  test('notifications: log in, go live, receive a notification', { timeout: 60000, skip: noGo || noRedis }, async (t) => {
    const defer = stack(t);
    const app = await startApp('notifications');
    defer(() => stop(app.proc));
    const key = randomBytes(16).toString('hex');
    const caddy = await startExample('notifications', {
      REDIS_URL: redis.url,
      EXAMPLE_APP_PORT: String(app.port),
      NOTIFY_PUBLISH_KEY: key,
    });
    defer(() => stop(caddy.proc));
    const p = await openPage(caddy.base);
    defer(() => p.done());
    await logIn(p, 'alice');
    await waitPage(p, 'state open', () => document.getElementById('state').textContent.startsWith('open') &&
      document.getElementById('channel').textContent === 'user:alice');

    // a backend notifies alice over HTTP, as the README's curl does
    const res = await fetch(`${caddy.base}/hub?channel=user:alice&event=invoice`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key}` },
      body: 'Invoice #42 is ready',
      signal: AbortSignal.timeout(WAIT),
    });
    assert.equal(res.status, 200, await res.text());
    await waitPage(p, 'the notification in the log', () => [...document.querySelectorAll('#log li')]
      .some((li) => li.firstChild.textContent === 'Invoice #42 is ready' &&
        li.querySelector('small').textContent === 'invoice'));
    await assertClean(p);
  });

  test('passthrough: the app\'s own EventSource shows its ticks', { timeout: 60000, skip: noGo }, async (t) => {
    const defer = stack(t);
    const app = await startApp('passthrough');
    defer(() => stop(app.proc));
    const caddy = await startExample('passthrough', { EXAMPLE_APP_PORT: String(app.port) });
    defer(() => stop(caddy.proc));
    const p = await openPage(caddy.base);
    defer(() => p.done());
    await waitPage(p, 'state open', () => document.getElementById('state').textContent === 'open');
    await waitPage(p, 'two ticks in the log', () => document.querySelectorAll('#log li').length >= 2);
    assert.match(await p.page.textContent('#log li:last-child'), /^1 {2}tick 1 at /);
    await assertClean(p);
  });
});
