// Unit tests of realtime.js in Node, no server and no browser: the file
// runs in a vm context whose fetch is a scripted fake, so the SSE parser
// (chunks split anywhere), long-poll cursors, fallback, refusals and
// tickets are checked exactly. The browser tests check the real thing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const source = fs.readFileSync(path.join(here, '..', 'realtime.js'), 'utf8');
const WAIT = 5000;

// load runs realtime.js in a fresh context with the given fetch (and,
// in extra, more globals: e.g. a fake WebSocket).
function load(fetch, extra = {}) {
  const ctx = {
    URL, TextDecoder, TextEncoder, ReadableStream, AbortController, Response, Blob,
    setTimeout, clearTimeout, Promise, atob, Uint8Array, ArrayBuffer, JSON, Math, console,
    fetch: (...args) => {
      const p = fetch(...args);
      setTimeout(() => { for (const c of checks) c(); }, 0);
      return p;
    },
    location: { href: 'http://example.test/page' },
    ...extra,
  };
  ctx.window = ctx;
  vm.createContext(ctx);
  vm.runInContext(source, ctx, { filename: 'realtime.js' });
  assert.equal(typeof ctx.Realtime, 'function', 'realtime.js defines window.Realtime');
  return ctx.Realtime;
}

const enc = new TextEncoder();
const checks = new Set(); // re-run waits' predicates after every fake fetch
const plain = (x) => JSON.parse(JSON.stringify(x)); // objects of the vm's realm, as plain data

// sseResponse streams chunks (strings or byte arrays), then ends or stays open.
function sseResponse(chunks, { end = true, signal } = {}) {
  const stream = new ReadableStream({
    start(c) {
      for (const ch of chunks) c.enqueue(typeof ch === 'string' ? enc.encode(ch) : ch);
      if (end) c.close();
      else signal?.addEventListener('abort', () => c.error(new Error('aborted')));
    },
  });
  return new Response(stream, { headers: { 'Content-Type': 'text/event-stream' } });
}

function json(obj, status = 200) {
  return new Response(JSON.stringify(obj), { status, headers: { 'Content-Type': 'application/json' } });
}

// collect records a client's events; until(pred) waits for pred(log).
function collect(rt) {
  const log = { messages: [], resets: [], states: [], errors: [] };
  const waiters = [];
  const check = () => {
    for (const w of waiters.slice()) {
      if (w.pred(log)) {
        waiters.splice(waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve();
      }
    }
  };
  checks.add(check);
  rt.on('message', (m) => { log.messages.push(m); check(); });
  rt.on('reset', (r) => { log.resets.push(r); check(); });
  rt.on('state', (s) => { log.states.push(s); check(); });
  rt.on('error', (e) => { log.errors.push(e); check(); });
  log.until = (pred, what) => new Promise((resolve, reject) => {
    if (pred(log)) return resolve();
    const w = { pred, resolve };
    w.timer = setTimeout(() => {
      waiters.splice(waiters.indexOf(w), 1);
      reject(new Error(`timed out waiting for ${what}: ${JSON.stringify({ ...log, errors: log.errors.map(String) })}`));
    }, WAIT);
    waiters.push(w);
  });
  return log;
}

// split cuts s into chunks at every position in cuts (byte offsets).
function split(bytes, cuts) {
  const out = [];
  let at = 0;
  for (const c of cuts) {
    out.push(bytes.slice(at, c));
    at = c;
  }
  out.push(bytes.slice(at));
  return out;
}

const streamText =
  '\ufeff: hello\r\n' +
  'retry: 2000\r\n\r\n' +
  'id: 1-0\r\ndata: {"channel":"news","id":"1-0","event":"message","data":"héllo ✓"}\r\n\r\n' +
  'id: 2-0\nevent: chat.text\ndata: {"channel":"chat","id":"2-0","event":"chat.text","data":"a\\nb"}\n\n' +
  ': heartbeat\r' +
  'id: 2-0\rdata: {"channel":"chat","id":"2-0","event":"chat.text","data":"duplicate"}\r\r' +
  'id: 3-0\ndata: {"channel":"news","id":"3-0","event":"message","data":"/wCAQQ==","encoding":"base64"}\n\n' +
  'id: 4-0\nevent: realtime.reset\ndata: {"channel":"news","id":"4-0","event":"realtime.reset","data":"{\\"channel\\":\\"news\\",\\"reason\\":\\"gap\\"}"}\n\n' +
  'id: 5-0\n\n' +
  'id: 6-0\nevent: other\ndata: {"channel":"news","id":"6-0","event":"other",\ndata: "data":"x"}\n\n';

test('SSE: every event, whatever the chunking', async () => {
  const bytes = enc.encode(streamText);
  const cutsList = [
    [],
    Array.from({ length: bytes.length - 1 }, (_, i) => i + 1), // one byte at a time
    [bytes.indexOf(0x0d) + 1, 40, 41, 97, 150, 151, 152, 300],
  ];
  // also cut inside the multi-byte characters and between every CR and LF
  const inside = [];
  for (let i = 1; i < bytes.length; i++) {
    if ((bytes[i] & 0xc0) === 0x80 || (bytes[i - 1] === 0x0d && bytes[i] === 0x0a)) inside.push(i);
  }
  cutsList.push(inside);
  for (const cuts of cutsList) {
    const urls = [];
    const Realtime = load(async (url, init) => {
      urls.push(String(url));
      assert.equal(init.headers.Accept, 'text/event-stream');
      return sseResponse(split(bytes, cuts), { end: false, signal: init.signal });
    });
    const rt = new Realtime('/hub', { channels: ['news', 'chat'], transports: ['sse'] });
    const log = collect(rt);
    await log.until((l) => rt.lastEventId === '6-0' && l.messages.length === 4, 'the last event');
    rt.close();
    assert.deepEqual(log.messages.map((m) => ({ ...m, data: typeof m.data === 'string' ? m.data : Array.from(m.data) })), [
      { channel: 'news', id: '1-0', event: 'message', data: 'héllo ✓' },
      { channel: 'chat', id: '2-0', event: 'chat.text', data: 'a\nb' },
      { channel: 'news', id: '3-0', event: 'message', data: [0xff, 0x00, 0x80, 0x41] },
      { channel: 'news', id: '6-0', event: 'other', data: 'x' },
    ], `cuts ${cuts.length}`);
    assert.deepEqual(plain(log.resets), [{ channel: 'news', reason: 'gap' }]);
    assert.deepEqual(log.states.map((s) => s.state), ['connecting', 'open', 'closed']);
    const u = new URL(urls[0]);
    assert.equal(u.pathname, '/hub');
    assert.deepEqual(u.searchParams.getAll('channel'), ['news', 'chat']);
    assert.equal(u.searchParams.get('format'), 'json');
    assert.equal(u.searchParams.get('last_event_id'), null);
  }
});

test('SSE: a dropped stream resumes from the last id', async () => {
  const urls = [];
  const Realtime = load(async (url, init) => {
    urls.push(new URL(url));
    if (urls.length === 1) {
      return sseResponse(['retry: 1000\n\nid: 7-0\ndata: {"channel":"news","id":"7-0","event":"message","data":"a"}\n\n']);
    }
    return sseResponse(['retry: 1000\n\nid: 8-0\ndata: {"channel":"news","id":"8-0","event":"message","data":"b"}\n\n'],
      { end: false, signal: init.signal });
  });
  const rt = new Realtime('/hub', { channels: ['news'], transports: ['sse'], minRetryDelay: 10 });
  const log = collect(rt);
  await log.until((l) => l.messages.length === 2, 'two messages');
  rt.close();
  assert.deepEqual(log.messages.map((m) => m.data), ['a', 'b']);
  assert.equal(urls[1].searchParams.get('last_event_id'), '7-0');
  assert.deepEqual(log.states.map((s) => s.state), ['connecting', 'open', 'connecting', 'open', 'closed']);
});

test('long-poll: polls from each answer\'s last_event_id, drops a repeated id', async () => {
  const seen = [];
  const answers = [
    { messages: [], last_event_id: '10-0' },
    { messages: [{ channel: 'news', id: '11-0', event: 'message', data: 'a' }], last_event_id: '11-0' },
    { messages: [{ channel: 'news', id: '11-0', event: 'message', data: 'a again' },
      { channel: 'news', id: '12-0', event: 'message', data: 'b' }], last_event_id: '12-0' },
  ];
  const Realtime = load(async (url, init) => {
    seen.push(new URL(url).searchParams.get('last_event_id'));
    assert.equal(init.headers.Accept, 'application/json');
    const a = answers.shift();
    if (a) return json(a);
    return new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(new Error('aborted'))));
  });
  const rt = new Realtime('/hub', { channels: ['news'], transports: ['longpoll'] });
  const log = collect(rt);
  await log.until((l) => l.messages.length === 2 && seen.length === 4, 'two messages and a fourth poll');
  rt.close();
  assert.deepEqual(log.messages.map((m) => m.data), ['a', 'b']);
  assert.deepEqual(seen, [null, '10-0', '11-0', '12-0']);
  assert.equal(rt.lastEventId, '12-0');
});

test('refused everywhere: closes with the error instead of retrying', async () => {
  let calls = 0;
  const Realtime = load(async () => {
    calls++;
    return new Response('ticket does not cover the channel', { status: 403 });
  });
  const rt = new Realtime('/hub', { channels: ['news'], transports: ['sse', 'longpoll'], minRetryDelay: 1 });
  const log = collect(rt);
  await log.until((l) => l.states.some((s) => s.state === 'closed'), 'closed');
  const last = log.states.at(-1);
  assert.equal(last.state, 'closed');
  assert.match(last.error.message, /403/);
  assert.equal(calls, 2);
  assert.deepEqual(log.states.slice(0, 2).map((s) => s.transport), ['sse', 'longpoll']);
});

test('a blocked transport falls back; network errors back off and retry', async () => {
  let polls = 0;
  const Realtime = load(async (url, init) => {
    if (init.headers.Accept === 'text/event-stream') {
      return new Response('<html>proxy</html>', { status: 200, headers: { 'Content-Type': 'text/html' } });
    }
    polls++;
    if (polls <= 2) throw new TypeError('Failed to fetch');
    if (polls === 3) return json({ messages: [{ channel: 'news', id: '1', event: 'message', data: 'ok' }], last_event_id: '1' });
    return new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(new Error('aborted'))));
  });
  const rt = new Realtime('/hub', { channels: ['news'], transports: ['sse', 'longpoll'], minRetryDelay: 5, maxRetryDelay: 20 });
  const log = collect(rt);
  await log.until((l) => l.messages.length === 1, 'a message');
  assert.equal(rt.state, 'open');
  assert.equal(rt.transport, 'longpoll');
  rt.close();
  assert.ok(log.errors.length >= 3, 'each failure is reported');
});

test('an unreadable cursor (400) gives a reset per channel and a fresh start', async () => {
  const seen = [];
  const Realtime = load(async (url, init) => {
    const id = new URL(url).searchParams.get('last_event_id');
    seen.push(id);
    if (id) return new Response('invalid last event id', { status: 400 });
    if (seen.length === 2) return json({ messages: [], last_event_id: '3' });
    return new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(new Error('aborted'))));
  });
  const rt = new Realtime('/hub', { channels: ['a', 'b'], transports: ['longpoll'], lastEventId: 'garbage' });
  const log = collect(rt);
  await log.until((l) => l.states.some((s) => s.state === 'open') && seen.length === 3, 'open');
  rt.close();
  assert.deepEqual(plain(log.resets), [{ channel: 'a', reason: 'unknown-id' }, { channel: 'b', reason: 'unknown-id' }]);
  assert.deepEqual(seen, ['garbage', null, '3']);
});

test('tickets: one per connect and per HTTP publish', async () => {
  let n = 0;
  const requests = [];
  const Realtime = load(async (url, init) => {
    const u = new URL(url);
    requests.push({ method: init.method || 'GET', path: u.pathname, search: u.searchParams, init });
    if (u.pathname === '/hub/ticket') {
      assert.equal(init.method, 'POST');
      assert.equal(init.credentials, 'same-origin');
      return json({ ticket: 't' + ++n, expires_in: 30 });
    }
    if (init.method === 'POST') return json({ id: '99-0' });
    if (u.searchParams.get('ticket') === 't1') return json({ messages: [], last_event_id: '5' });
    return new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(new Error('aborted'))));
  });
  const rt = new Realtime('/hub', { channels: ['chat'], transports: ['longpoll'], ticketURL: '/hub/ticket' });
  const log = collect(rt);
  await log.until(() => requests.length >= 4, 'two tickets, two polls');
  const id = await rt.publish('chat', 'hi', { event: 'say' });
  rt.close();
  assert.equal(id, '99-0');
  const tickets = requests.filter((r) => r.path === '/hub/ticket');
  assert.deepEqual(JSON.parse(tickets[0].init.body), { channels: ['chat'] });
  const polls = requests.filter((r) => r.path === '/hub' && r.method === 'GET');
  assert.deepEqual(polls.map((r) => r.search.get('ticket')), ['t1', 't2']);
  const pub = requests.find((r) => r.method === 'POST' && r.path === '/hub');
  assert.equal(pub.init.headers.Authorization, 'Bearer t3');
  assert.equal(pub.search.get('channel'), 'chat');
  assert.equal(pub.search.get('event'), 'say');
  assert.equal(pub.init.body, 'hi');
});

test('bad arguments throw', () => {
  const Realtime = load(async () => { throw new Error('no fetch expected'); });
  assert.throws(() => new Realtime('/hub', {}), /channels/);
  assert.throws(() => new Realtime('/hub', { channels: ['bad channel'] }), /invalid channel/);
  assert.throws(() => new Realtime('/hub', { channels: ['a'], transports: ['carrier-pigeon'] }), /unknown transport/);
  const rt = new Realtime('/hub', { channels: ['a'], transports: ['longpoll'] });
  assert.throws(() => rt.on('mesage', () => {}), /unknown event/);
  rt.close();
  return rt.publish('a', 'x').then(() => assert.fail('publish after close'), (e) => assert.match(e.message, /closed/));
});

// fakeWebSockets makes a WebSocket class for load's extra: every socket
// made is in sockets; the test drives it with open(), frame(o), close(code, reason).
function fakeWebSockets() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = new URL(url);
      this.sent = [];
      this.closed = null;
      sockets.push(this);
      setTimeout(() => { for (const c of checks) c(); }, 0);
    }
    send(s) { this.sent.push(JSON.parse(s)); }
    close(code) { this.closed = code; }
    frame(o) { this.onmessage?.({ data: JSON.stringify(o) }); }
    end(code, reason = '') { this.onclose?.({ code, reason }); }
  }
  return { sockets, WebSocket: FakeWebSocket };
}

const pending = (init) => new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(new Error('aborted'))));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test('rewind: asked on a connect without a cursor, over every transport; never with one', async () => {
  // long-poll: the first poll asks for the rewind, the next ones resume
  {
    const seen = [];
    const answers = [
      { messages: [{ channel: 'news', id: '2-0', event: 'message', data: 'b' },
        { channel: 'news', id: '3-0', event: 'message', data: 'c' }], last_event_id: '3-0' },
      { messages: [{ channel: 'news', id: '4-0', event: 'message', data: 'live' }], last_event_id: '4-0' },
    ];
    const Realtime = load(async (url, init) => {
      const q = new URL(url).searchParams;
      seen.push({ rewind: q.get('rewind'), cursor: q.get('last_event_id') });
      const a = answers.shift();
      return a ? json(a) : pending(init);
    });
    const rt = new Realtime('/hub?rewind=9', { channels: ['news'], transports: ['longpoll'], rewind: 2 });
    const log = collect(rt);
    await log.until((l) => l.messages.length === 3 && seen.length === 3, 'three messages, a third poll');
    rt.close();
    assert.deepEqual(log.messages.map((m) => m.data), ['b', 'c', 'live']);
    assert.deepEqual(seen, [{ rewind: '2', cursor: null }, { rewind: null, cursor: '3-0' }, { rewind: null, cursor: '4-0' }]);
  }
  // SSE: the rewound messages come after retry:; the reconnect resumes
  {
    const urls = [];
    const Realtime = load(async (url, init) => {
      urls.push(new URL(url));
      if (urls.length === 1) {
        return sseResponse(['retry: 1000\n\n' +
          'id: 2-0\ndata: {"channel":"news","id":"2-0","event":"message","data":"b"}\n\n' +
          'id: 3-0\ndata: {"channel":"news","id":"3-0","event":"message","data":"c"}\n\n']);
      }
      return sseResponse(['retry: 1000\n\n'], { end: false, signal: init.signal });
    });
    const rt = new Realtime('/hub', { channels: ['news'], transports: ['sse'], rewind: 2, minRetryDelay: 5 });
    const log = collect(rt);
    await log.until((l) => urls.length === 2 && l.states.filter((s) => s.state === 'open').length === 2, 'a resumed stream');
    rt.close();
    assert.deepEqual(log.messages.map((m) => m.data), ['b', 'c']);
    assert.equal(urls[0].searchParams.get('rewind'), '2');
    assert.equal(urls[0].searchParams.get('last_event_id'), null);
    assert.equal(urls[1].searchParams.get('rewind'), null);
    assert.equal(urls[1].searchParams.get('last_event_id'), '3-0');
  }
  // WebSocket: rewind on the first URL; after a drop, the cursor instead
  {
    const ws = fakeWebSockets();
    const Realtime = load(async () => { throw new Error('no fetch expected'); }, { WebSocket: ws.WebSocket });
    const rt = new Realtime('/hub', { channels: ['news'], transports: ['websocket'], rewind: 0, minRetryDelay: 5 });
    const log = collect(rt);
    await log.until(() => ws.sockets.length === 1, 'a socket');
    assert.equal(ws.sockets[0].url.protocol, 'ws:');
    assert.equal(ws.sockets[0].url.searchParams.get('rewind'), '0', 'rewind: 0 is sent (it overrides a rule)');
    ws.sockets[0].frame({ type: 'subscribed' });
    ws.sockets[0].frame({ channel: 'news', id: '5-0', event: 'message', data: 'x' });
    ws.sockets[0].end(1006);
    await log.until(() => ws.sockets.length === 2, 'a second socket');
    rt.close();
    assert.equal(ws.sockets[1].url.searchParams.get('rewind'), null);
    assert.equal(ws.sockets[1].url.searchParams.get('last_event_id'), '5-0');
  }
  // a cursor from the start (lastEventId), or no rewind option: no rewind
  for (const opts of [{ rewind: 5, lastEventId: '1-0' }, {}]) {
    const seen = [];
    const Realtime = load(async (url, init) => {
      seen.push(new URL(url).searchParams);
      return pending(init);
    });
    const rt = new Realtime('/hub', { channels: ['news'], transports: ['longpoll'], ...opts });
    const log = collect(rt);
    await log.until(() => seen.length === 1, 'a poll');
    rt.close();
    assert.equal(seen[0].get('rewind'), null, JSON.stringify(opts));
    assert.equal(seen[0].get('last_event_id'), opts.lastEventId ?? null);
    assert.equal(log.states[0].state, 'connecting');
  }
});

test('rewind: anything but a non-negative integer throws', () => {
  const Realtime = load(async () => { throw new Error('no fetch expected'); });
  for (const bad of [-1, 1.5, '2', NaN, Infinity, true]) {
    assert.throws(() => new Realtime('/hub', { channels: ['a'], rewind: bad }), /rewind/, String(bad));
  }
  for (const ok of [0, 3, undefined, null]) {
    new Realtime('/hub', { channels: ['a'], rewind: ok }).close();
  }
});

test('realtime.closed ends the client: state closed with the reason, no reconnect, no fallback', async () => {
  const closedData = '{"reason":"disconnected"}';
  // SSE: the event (no id), then the stream ends
  {
    let fetches = 0;
    const Realtime = load(async () => {
      fetches++;
      return sseResponse(['retry: 1000\n\n',
        'id: 1-0\ndata: {"channel":"c","id":"1-0","event":"message","data":"before"}\n\n',
        `event: realtime.closed\ndata: ${closedData}\n\n`]);
    });
    const rt = new Realtime('/hub', { channels: ['c'], transports: ['sse', 'longpoll'], minRetryDelay: 1, maxRetryDelay: 5 });
    const log = collect(rt);
    await log.until((l) => l.states.some((s) => s.state === 'closed'), 'closed');
    await sleep(100);
    assert.equal(fetches, 1, 'no reconnect, no other transport');
    assert.deepEqual(log.messages.map((m) => m.data), ['before']);
    assert.deepEqual(plain(log.states.at(-1)), { state: 'closed', transport: 'sse', reason: 'disconnected' });
    assert.equal(rt.state, 'closed');
    assert.deepEqual(log.errors, []);
    await assert.rejects(rt.publish('c', 'x'), /closed/);
  }
  // long-poll: an entry of an answer's messages (data as text or as an object)
  for (const data of [closedData, { reason: 'disconnected' }]) {
    let polls = 0;
    const Realtime = load(async (url, init) => {
      polls++;
      if (polls === 1) return json({ messages: [{ channel: 'c', id: '1-0', event: 'message', data: 'before' }], last_event_id: '1-0' });
      if (polls === 2) return json({ messages: [{ channel: 'c', event: 'realtime.closed', data }], last_event_id: '1-0' });
      return pending(init);
    });
    const rt = new Realtime('/hub', { channels: ['c'], transports: ['longpoll', 'sse'], minRetryDelay: 1, maxRetryDelay: 5 });
    const log = collect(rt);
    await log.until((l) => l.states.some((s) => s.state === 'closed'), 'closed');
    await sleep(100);
    assert.equal(polls, 2, 'no poll after it');
    assert.deepEqual(log.messages.map((m) => m.data), ['before']);
    assert.deepEqual(plain(log.states.at(-1)), { state: 'closed', transport: 'longpoll', reason: 'disconnected' });
  }
  // WebSocket: close code 4000; a pending publish is rejected
  {
    const ws = fakeWebSockets();
    let fetches = 0;
    const Realtime = load(async () => { fetches++; throw new Error('no fetch expected'); }, { WebSocket: ws.WebSocket });
    const rt = new Realtime('/hub', { channels: ['c'], minRetryDelay: 1, maxRetryDelay: 5 });
    const log = collect(rt);
    await log.until(() => ws.sockets.length === 1, 'a socket');
    ws.sockets[0].frame({ type: 'subscribed' });
    const pub = rt.publish('c', 'unanswered');
    ws.sockets[0].end(4000, 'disconnected');
    await assert.rejects(pub, /closed/);
    await sleep(100);
    assert.equal(ws.sockets.length, 1, 'no new WebSocket');
    assert.equal(fetches, 0, 'no fallback to SSE or long-poll');
    assert.deepEqual(plain(log.states.map((s) => s.state)), ['connecting', 'open', 'closed']);
    assert.deepEqual(plain(log.states.at(-1)), { state: 'closed', transport: 'websocket', reason: 'disconnected' });
    assert.deepEqual(log.errors, []);
  }
  // another close code is a drop like any other: the client reconnects
  {
    const ws = fakeWebSockets();
    const Realtime = load(async () => { throw new Error('no fetch expected'); }, { WebSocket: ws.WebSocket });
    const rt = new Realtime('/hub', { channels: ['c'], transports: ['websocket'], minRetryDelay: 1, maxRetryDelay: 5 });
    const log = collect(rt);
    await log.until(() => ws.sockets.length === 1, 'a socket');
    ws.sockets[0].frame({ type: 'subscribed' });
    ws.sockets[0].end(1001, 'going away');
    await log.until(() => ws.sockets.length === 2, 'a reconnect');
    rt.close();
    assert.equal(log.states.at(-1).reason, undefined);
  }
});

test('join and leave: realtime.join/leave messages become join/leave events, never messages', async () => {
  const joinData = (sub) => JSON.stringify({ channel: 'chat:a', sub });
  // long-poll and SSE carry them as any message; the cursor moves past them
  const polls = [];
  const Realtime = load(async (url, init) => {
    polls.push(new URL(url).searchParams.get('last_event_id'));
    if (polls.length === 1) {
      return json({
        messages: [
          { channel: 'chat:a', id: '1-0', event: 'realtime.join', data: joinData('alice') },
          { channel: 'chat:a', id: '2-0', event: 'message', data: 'hi' },
          { channel: 'chat:a', id: '3-0', event: 'realtime.leave', data: joinData('alice') },
          { channel: 'chat:a', id: '4-0', event: 'realtime.join', data: 'not json' }, // dropped
          { channel: 'chat:a', id: '5-0', event: 'realtime.join', data: '{"channel":"chat:a"}' }, // no sub: dropped
          { channel: 'chat:b', id: '6-0', event: 'realtime.join', data: '{"sub":"bob"}' }, // channel from the message
        ],
        last_event_id: '6-0',
      });
    }
    return pending(init);
  });
  const rt = new Realtime('/hub', { channels: ['chat:a', 'chat:b'], transports: ['longpoll'] });
  const log = collect(rt);
  const joins = [];
  const leaves = [];
  rt.on('join', (j) => { joins.push(j); });
  rt.on('leave', (l) => { leaves.push(l); });
  await log.until(() => polls.length === 2, 'a second poll');
  rt.close();
  assert.deepEqual(plain(joins), [{ channel: 'chat:a', sub: 'alice', id: '1-0' }, { channel: 'chat:b', sub: 'bob', id: '6-0' }]);
  assert.deepEqual(plain(leaves), [{ channel: 'chat:a', sub: 'alice', id: '3-0' }]);
  assert.deepEqual(log.messages.map((m) => m.data), ['hi']);
  assert.deepEqual(polls, [null, '6-0']);

  // SSE (format=json) and WebSocket frames alike
  {
    const Realtime = load(async (url, init) => sseResponse(['retry: 1000\n\n',
      `id: 7-0\nevent: realtime.join\ndata: ${JSON.stringify({ channel: 'c', id: '7-0', event: 'realtime.join', data: '{"channel":"c","sub":"u1"}' })}\n\n`],
    { end: false, signal: init.signal }));
    const rt = new Realtime('/hub', { channels: ['c'], transports: ['sse'] });
    const got = [];
    rt.on('join', (j) => got.push(j));
    const log = collect(rt);
    await log.until(() => got.length === 1, 'a join over SSE');
    rt.close();
    assert.deepEqual(plain(got), [{ channel: 'c', sub: 'u1', id: '7-0' }]);
    assert.equal(rt.lastEventId, '7-0');
    assert.deepEqual(log.messages, []);
  }
  {
    const ws = fakeWebSockets();
    const Realtime = load(async () => { throw new Error('no fetch expected'); }, { WebSocket: ws.WebSocket });
    const rt = new Realtime('/hub', { channels: ['c'], transports: ['websocket'] });
    const got = [];
    rt.on('leave', (l) => got.push(l));
    const log = collect(rt);
    await log.until(() => ws.sockets.length === 1, 'a socket');
    ws.sockets[0].frame({ type: 'subscribed' });
    ws.sockets[0].frame({ channel: 'c', id: '8-0', event: 'realtime.leave', data: '{"channel":"c","sub":"u2"}' });
    rt.close();
    assert.deepEqual(plain(got), [{ channel: 'c', sub: 'u2', id: '8-0' }]);
    assert.deepEqual(log.messages, []);
  }
});

test('presence: GET <hub>/presence?channel=c with a fresh ticket for c; refusals carry status and reason', async () => {
  const answer = { channel: 'chat:lobby', connections: 3, members: [{ sub: 'alice', connections: 2 }, { sub: 'bob', connections: 1 }] };
  // with ticketURL: a ticket for the channel asked about, sent as a Bearer
  {
    const requests = [];
    let n = 0;
    const Realtime = load(async (url, init) => {
      const u = new URL(url);
      requests.push({ u, init });
      if (u.pathname === '/hub/ticket') return json({ ticket: 'p' + ++n, expires_in: 30 });
      if (u.pathname === '/hub/presence') {
        if (u.searchParams.get('channel') === 'news') return new Response('no presence for channel "news": its channels rule has no presence', { status: 404 });
        if (u.searchParams.get('channel') === 'secret') return new Response('ticket does not cover channel "secret"', { status: 403 });
        return json(answer);
      }
      return pending(init);
    });
    const rt = new Realtime('/hub/', { channels: ['chat:lobby'], transports: ['longpoll'], ticketURL: '/hub/ticket' });
    const p = await rt.presence('chat:other');
    assert.deepEqual(plain(p), answer);
    const tickets = requests.filter((r) => r.u.pathname === '/hub/ticket');
    const ask = requests.filter((r) => r.u.pathname === '/hub/presence');
    const forPresence = tickets.filter((r) => JSON.parse(r.init.body).channels[0] === 'chat:other');
    assert.equal(forPresence.length, 1, 'one ticket, for the channel asked about');
    assert.deepEqual(JSON.parse(forPresence[0].init.body), { channels: ['chat:other'] });
    assert.equal(ask[0].init.method ?? 'GET', 'GET');
    assert.equal(ask[0].u.searchParams.get('channel'), 'chat:other');
    assert.equal(ask[0].u.searchParams.get('ticket'), null, 'the ticket goes in the header, not the URL');
    const n0 = tickets.indexOf(forPresence[0]) + 1; // the tickets are p1, p2, ... in order
    assert.equal(ask[0].init.headers.Authorization, 'Bearer p' + n0);
    assert.equal(ask[0].init.credentials, 'same-origin');

    const notFound = await rt.presence('news').then(() => assert.fail('404 resolved'), (e) => e);
    assert.equal(notFound.name, 'RealtimeError');
    assert.equal(notFound.status, 404);
    assert.equal(notFound.reason, 'no presence for channel "news": its channels rule has no presence');
    assert.match(notFound.message, /^Realtime: presence refused: 404 no presence/);
    const forbidden = await rt.presence('secret').then(() => assert.fail('403 resolved'), (e) => e);
    assert.equal(forbidden.status, 403);
    assert.match(forbidden.reason, /does not cover/);
    await assert.rejects(rt.presence('bad channel'), /invalid channel/);
    rt.close();
    await assert.rejects(rt.presence('chat:lobby'), /closed/);
  }
  // without ticketURL: no Authorization (the page's cookies, the app's
  // authorize); the hub URL's own query parameters are kept; a ticket
  // refused (401) and a broken answer reject too
  {
    const asked = [];
    const Realtime = load(async (url, init) => {
      const u = new URL(url);
      if (u.pathname !== '/hub/presence') return pending(init);
      asked.push({ u, init });
      if (asked.length === 2) return new Response('<html>oops</html>', { status: 200, headers: { 'Content-Type': 'text/html' } });
      if (asked.length === 3) return new Response('authorize endpoint unreachable', { status: 502 });
      return json({ channel: 'c', connections: 1, members: [] });
    });
    const rt = new Realtime('/hub?name=alice&ticket=old', { channels: ['c'], transports: ['longpoll'] });
    assert.deepEqual(plain(await rt.presence('c')), { channel: 'c', connections: 1, members: [] });
    assert.equal(asked[0].init.headers.Authorization, undefined);
    assert.equal(asked[0].u.pathname, '/hub/presence');
    assert.equal(asked[0].u.searchParams.get('name'), 'alice');
    assert.equal(asked[0].u.searchParams.get('ticket'), null);
    await assert.rejects(rt.presence('c'), /presence answer/);
    const bad = await rt.presence('c').then(() => assert.fail('502 resolved'), (e) => e);
    assert.equal(bad.status, 502);
    assert.equal(bad.reason, 'authorize endpoint unreachable');
    rt.close();
  }
  {
    const Realtime = load(async (url) => {
      if (new URL(url).pathname === '/t') return new Response('not logged in', { status: 401 });
      throw new Error('no presence request without a ticket');
    });
    const rt = new Realtime('/hub', { channels: ['c'], transports: ['longpoll'], ticketURL: '/t' });
    const err = await rt.presence('c').then(() => assert.fail('resolved'), (e) => e);
    rt.close();
    assert.equal(err.status, 401);
    assert.match(err.message, /ticket request failed: 401 not logged in/);
  }
});

test('a refused HTTP publish carries status and reason', async () => {
  const Realtime = load(async (url, init) => {
    if (init.method === 'POST') return new Response('channels rule "news": publish off', { status: 403 });
    return pending(init);
  });
  const rt = new Realtime('/hub', { channels: ['news'], transports: ['longpoll'] });
  const err = await rt.publish('news', 'x').then(() => assert.fail('resolved'), (e) => e);
  rt.close();
  assert.equal(err.status, 403);
  assert.equal(err.reason, 'channels rule "news": publish off');
  assert.match(err.message, /^Realtime: publish refused: 403 channels rule/);
});

test('a message whose id is the hub\'s starting position is delivered (only ids delivered count as seen)', async () => {
  // the hub may fix a subscription's starting position after a message
  // that it then delivers live (e.g. the subscriber's own realtime.join,
  // published as it subscribes): that message is new to the page
  const ws = fakeWebSockets();
  const Realtime = load(async () => { throw new Error('no fetch expected'); }, { WebSocket: ws.WebSocket });
  const rt = new Realtime('/hub', { channels: ['c'], transports: ['websocket'] });
  const joins = [];
  rt.on('join', (j) => joins.push(j));
  const log = collect(rt);
  await log.until(() => ws.sockets.length === 1, 'a socket');
  ws.sockets[0].frame({ type: 'subscribed', channels: ['c'], last_event_id: 'p.1' });
  ws.sockets[0].frame({ channel: 'c', id: 'p.1', event: 'realtime.join', data: '{"channel":"c","sub":"me"}' });
  ws.sockets[0].frame({ channel: 'c', id: 'p.2', event: 'message', data: 'a' });
  ws.sockets[0].frame({ channel: 'c', id: 'p.2', event: 'message', data: 'a again' }); // an overlap: dropped
  rt.close();
  assert.deepEqual(plain(joins), [{ channel: 'c', sub: 'me', id: 'p.1' }]);
  assert.deepEqual(log.messages.map((m) => m.data), ['a']);
  // the page's own lastEventId counts as seen
  {
    let polls = 0;
    const Realtime = load(async (url, init) => (polls++ === 0
      ? json({ messages: [{ channel: 'c', id: '5-0', event: 'message', data: 'old' },
        { channel: 'c', id: '6-0', event: 'message', data: 'new' }], last_event_id: '6-0' })
      : pending(init)));
    const rt = new Realtime('/hub', { channels: ['c'], transports: ['longpoll'], lastEventId: '5-0' });
    const log = collect(rt);
    await log.until((l) => l.messages.length === 1, 'a message');
    rt.close();
    assert.deepEqual(log.messages.map((m) => m.data), ['new']);
  }
});
