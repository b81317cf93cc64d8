// realtime.d.ts against realtime.js: the declarations type-check a use of
// the whole API (classic script and ES module) under tsc --strict, reject
// misuses (so they are not `any`), and name exactly the public methods,
// properties, options and events that realtime.js has, so adding one to
// the code without declaring it (or the reverse) fails here.
//
// Needs typescript from node_modules (client/test/run.sh installs it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const clientDir = path.resolve(here, '..');
const dts = path.join(clientDir, 'realtime.d.ts');
const typesDir = path.join(here, 'fixtures', 'types');
const source = fs.readFileSync(path.join(clientDir, 'realtime.js'), 'utf8');
const execFileP = promisify(execFile);

const require = createRequire(import.meta.url);
const ts = require('typescript');
const tscBin = path.join(path.dirname(require.resolve('typescript/package.json')), 'bin', 'tsc');

// tsc compiles the project of a tsconfig in test/fixtures/types;
// resolves with its exit code and output.
async function tsc(project) {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [tscBin, '-p', path.join(typesDir, project)],
      { cwd: typesDir, timeout: 120000 });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    if (typeof err.code !== 'number') throw err;
    return { code: err.code, out: String(err.stdout) + String(err.stderr) };
  }
}

test('tsc --strict accepts the whole API, as a classic script and as an ES module', { timeout: 150000 }, async () => {
  const { code, out } = await tsc('tsconfig.json');
  assert.equal(code, 0, `tsc failed:\n${out}`);
  assert.equal(out.trim(), '');
});

test('tsc rejects a misuse (the declarations are not any)', { timeout: 150000 }, async () => {
  const { code, out } = await tsc('tsconfig.misuse.json');
  assert.notEqual(code, 0, 'tsc accepted rewind: "all"');
  assert.match(out, /misuse\.ts\(5,\d+\): error TS2322: Type 'string' is not assignable to type 'number'/);
  assert.equal(out.trim().split('\n').filter((l) => /error TS/.test(l)).length, 1, out);
});

// ---- the names declared

function declared() {
  const sf = ts.createSourceFile('realtime.d.ts', fs.readFileSync(dts, 'utf8'), ts.ScriptTarget.Latest, true);
  const out = { instance: new Map(), statics: new Set(), interfaces: new Map() };
  const nameOf = (m) => m.name && (ts.isIdentifier(m.name) || ts.isStringLiteral(m.name)) ? m.name.text : null;
  for (const st of sf.statements) {
    if (ts.isClassDeclaration(st) && st.name?.text === 'Realtime') {
      for (const m of st.members) {
        if (ts.isConstructorDeclaration(m)) continue;
        const name = nameOf(m);
        assert.ok(name, 'every member of the class has a plain name');
        const isStatic = m.modifiers?.some((x) => x.kind === ts.SyntaxKind.StaticKeyword);
        if (isStatic) {
          out.statics.add(name);
          continue;
        }
        const readonly = m.modifiers?.some((x) => x.kind === ts.SyntaxKind.ReadonlyKeyword) || ts.isGetAccessor(m);
        out.instance.set(name, ts.isMethodDeclaration(m) ? 'method' : readonly ? 'readonly' : 'property');
      }
    }
    if (ts.isModuleDeclaration(st) && st.name.text === 'Realtime' && st.body && ts.isModuleBlock(st.body)) {
      for (const d of st.body.statements) {
        if (ts.isInterfaceDeclaration(d)) {
          out.interfaces.set(d.name.text, new Map(d.members.map((m) => [nameOf(m), !m.questionToken])));
        }
      }
    }
  }
  return out;
}

// load runs realtime.js in a fresh context (fetch: a scripted fake).
function load(fetch = async () => new Promise(() => {})) {
  const ctx = {
    URL, TextDecoder, TextEncoder, ReadableStream, AbortController, Response, Blob,
    setTimeout, clearTimeout, Promise, atob, Uint8Array, ArrayBuffer, JSON, Math, console, fetch,
    location: { href: 'http://example.test/page' },
  };
  ctx.window = ctx;
  vm.createContext(ctx);
  vm.runInContext(source, ctx, { filename: 'realtime.js' });
  return ctx.Realtime;
}

const sorted = (xs) => [...xs].sort();

test('the class members declared are those of realtime.js', () => {
  const d = declared();
  const Realtime = load();
  const proto = Realtime.prototype;
  const actual = new Map();
  for (const name of Object.getOwnPropertyNames(proto)) {
    if (name === 'constructor' || name.startsWith('_')) continue;
    const desc = Object.getOwnPropertyDescriptor(proto, name);
    actual.set(name, typeof desc.value === 'function' ? 'method' : desc.set ? 'property' : 'readonly');
  }
  assert.deepEqual(sorted(d.instance.keys()), sorted(actual.keys()), 'public members: realtime.d.ts vs realtime.js');
  for (const [name, kind] of actual) assert.equal(d.instance.get(name), kind, `kind of ${name}`);
  const statics = Object.getOwnPropertyNames(Realtime).filter((n) => !['length', 'name', 'prototype'].includes(n));
  assert.deepEqual(sorted(d.statics), sorted(statics), 'static members');
  // nothing public set on an instance either (only _private state)
  const rt = new Realtime('/hub', { channels: ['a'] });
  rt.close();
  assert.deepEqual(Object.keys(rt).filter((k) => !k.startsWith('_')), [], 'public instance fields');
});

test('the options declared are those realtime.js reads', () => {
  const d = declared();
  const Realtime = load();
  const read = new Set();
  const spy = (obj, into) => new Proxy(obj, {
    get(t, k) { if (typeof k === 'string') into.add(k); return t[k]; },
    has(t, k) { if (typeof k === 'string') into.add(k); return k in t; },
  });
  const rt = new Realtime('/hub', spy({ channels: ['a'] }, read));
  const pubRead = new Set();
  rt.publish('a', 'x', spy({}, pubRead)).catch(() => {});
  rt.close();
  const options = d.interfaces.get('Options');
  assert.deepEqual(sorted(options.keys()), sorted(read), 'Options: realtime.d.ts vs what the constructor reads');
  assert.deepEqual([...options].filter(([, required]) => required).map(([k]) => k), ['channels'], 'required options');
  assert.deepEqual(sorted(d.interfaces.get('PublishOptions').keys()), sorted(pubRead), 'PublishOptions');
  // every option is also documented in client/README.md
  const readme = fs.readFileSync(path.join(clientDir, 'README.md'), 'utf8');
  for (const k of read) assert.match(readme, new RegExp(`\\b${k}\\b`), `client/README.md does not mention the option ${k}`);
});

test('the events declared are those realtime.js emits, with their payloads', async () => {
  const d = declared();
  const eventMap = d.interfaces.get('EventMap');
  const m = /var EVENTS = \[([^\]]*)\]/.exec(source);
  assert.ok(m, 'realtime.js has var EVENTS = [...]');
  const events = [...m[1].matchAll(/'([^']+)'/g)].map((x) => x[1]);
  assert.deepEqual(sorted(eventMap.keys()), sorted(events), 'EventMap vs EVENTS');
  const emitted = new Set([...source.matchAll(/_emit\('([^']+)'/g)].map((x) => x[1]));
  assert.deepEqual(sorted(emitted), sorted(events), 'every event emitted is in EVENTS');
  const Realtime = load();
  for (const e of events) new Realtime('/hub', { channels: ['a'] }).on(e, () => {}).close();

  // the payloads: a scripted long-poll that gives a message, a reset, an
  // error, and ends with realtime.closed; every key is declared, every
  // required member present
  let polls = 0;
  const json = (o, status = 200) => new Response(JSON.stringify(o), { status, headers: { 'Content-Type': 'application/json' } });
  const R = load(async () => {
    polls++;
    if (polls === 1) throw new TypeError('Failed to fetch');
    if (polls === 2) {
      return json({
        messages: [
          { channel: 'a', id: '1-0', event: 'message', data: 'x' },
          { channel: 'a', id: '2-0', event: 'realtime.reset', data: '{"channel":"a","reason":"gap"}' },
          { channel: 'a', id: '3-0', event: 'realtime.join', data: '{"channel":"a","sub":"u1"}' },
          { channel: 'a', id: '4-0', event: 'realtime.leave', data: '{"channel":"a","sub":"u1"}' },
        ],
        last_event_id: '4-0',
      });
    }
    return json({ messages: [{ channel: 'a', event: 'realtime.closed', data: '{"reason":"disconnected"}' }] });
  });
  const rt = new R('/hub', { channels: ['a'], transports: ['longpoll'], minRetryDelay: 1, maxRetryDelay: 2 });
  const got = { message: [], reset: [], state: [], error: [], join: [], leave: [] };
  for (const e of events) rt.on(e, (v) => got[e].push(v));
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no realtime.closed within 5s: ' + JSON.stringify(got))), 5000);
    rt.on('state', (s) => { if (s.state === 'closed') { clearTimeout(timer); resolve(); } });
  });
  const iface = {
    message: 'Message', reset: 'Reset', state: 'StateChange', error: 'RealtimeError',
    join: 'PresenceEvent', leave: 'PresenceEvent',
  };
  for (const e of events) {
    assert.ok(got[e].length > 0, `the scenario emits ${e}`);
    const members = d.interfaces.get(iface[e]);
    assert.ok(members, `realtime.d.ts declares Realtime.${iface[e]}`);
    for (const v of got[e]) {
      const keys = e === 'error' ? Object.keys(v).concat('name', 'message') : Object.keys(v);
      for (const k of keys) {
        if (e === 'error' && k === 'message') continue; // Error's own
        assert.ok(members.has(k), `${e} payload key ${k} is not declared in Realtime.${iface[e]}`);
      }
      for (const [k, required] of members) if (required) assert.ok(k in v, `${e} payload lacks ${k}`);
    }
  }
  assert.deepEqual({ ...got.state.at(-1) }, { state: 'closed', transport: 'longpoll', reason: 'disconnected' });
});

test('the presence answer and its refusal have the declared shapes', async () => {
  const d = declared();
  const R = load(async (url) => {
    const q = new URL(url).searchParams;
    if (q.get('channel') === 'none') return new Response('no presence for channel "none"', { status: 404 });
    return new Response(JSON.stringify({ channel: 'a', connections: 3, members: [{ sub: 'u1', connections: 2 }] }),
      { status: 200, headers: { 'Content-Type': 'application/json' } });
  });
  const rt = new R('/hub', { channels: ['a'], transports: ['longpoll'] });
  const p = await rt.presence('a');
  const refused = await rt.presence('none').then(() => assert.fail('a 404 resolved'), (e) => e);
  rt.close();
  const check = (v, name) => {
    const members = d.interfaces.get(name);
    assert.ok(members, `realtime.d.ts declares Realtime.${name}`);
    for (const k of Object.keys(v)) assert.ok(members.has(k), `${k} is not declared in Realtime.${name}`);
    for (const [k, required] of members) if (required) assert.ok(k in v, `${name} lacks ${k}`);
  };
  check(p, 'Presence');
  for (const m of p.members) check(m, 'PresenceMember');
  assert.equal(refused.status, 404);
  const errKeys = Object.keys(refused).concat('name');
  for (const k of errKeys) assert.ok(d.interfaces.get('RealtimeError').has(k), `error key ${k} is not declared in Realtime.RealtimeError`);
});
