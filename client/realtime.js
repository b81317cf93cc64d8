/*!
 * realtime.js: the browser client of caddy-realtime hubs.
 * No dependencies. Served by the hub at <hub>/realtime.js (this file, which
 * defines window.Realtime) and <hub>/realtime.mjs (an ES module exporting
 * Realtime; the same text with its last line replaced by an export).
 *
 *   const rt = new Realtime('/hub', { channels: ['news'] });
 *   rt.on('message', (m) => console.log(m.channel, m.id, m.event, m.data));
 *
 * See client/README.md in the repository for the whole API; its
 * TypeScript declarations are realtime.d.ts (served at <hub>/realtime.d.ts).
 */
var Realtime = (function () {
  'use strict';

  var TRANSPORTS = ['websocket', 'sse', 'longpoll'];
  var EVENTS = ['message', 'reset', 'state', 'error', 'join', 'leave'];
  var RESET_EVENT = 'realtime.reset';
  var JOIN_EVENT = 'realtime.join'; // presence events: a member's first connection,
  var LEAVE_EVENT = 'realtime.leave'; // and its last one gone (after the hub's grace)
  var CLOSED_EVENT = 'realtime.closed'; // the hub ended the subscription for good
  var CLOSE_CODE = 4000; // the WebSocket close code of realtime.closed
  var CHANNEL_RE = /^[A-Za-z0-9_\-.:@/]{1,200}$/;

  var DEFAULTS = {
    minRetryDelay: 500, // ms: the first reconnect waits up to this
    maxRetryDelay: 30000, // ms: the cap of the exponential backoff
    connectTimeout: 15000, // ms: a WebSocket or SSE attempt not live by then has failed
    idleTimeout: 45000, // ms: an SSE stream or a poll silent this long is dead (0: never)
    publishTimeout: 30000, // ms: a publish not answered by then is rejected
  };

  // HTTP statuses that say the hub refuses this subscription for good (as
  // opposed to a transport being blocked, or a passing fault).
  function isRefusal(status) {
    return status >= 400 && status < 500 && status !== 408 && status !== 429;
  }

  function RealtimeError(message, props) {
    var err = new Error(message);
    err.name = 'RealtimeError';
    if (props) {
      for (var k in props) err[k] = props[k];
    }
    return err;
  }

  // refusedError is the error of an HTTP publish or presence request the
  // hub answered with a 4xx or 5xx: its status, and its reason (the body).
  function refusedError(what, status, text) {
    var reason = String(text || '').trim().slice(0, 500);
    try {
      var j = JSON.parse(reason);
      if (j && typeof j === 'object' && typeof j.reason === 'string') reason = j.reason;
    } catch (e) { /* plain text */ }
    return RealtimeError('Realtime: ' + what + ' refused: ' + status + (reason ? ' ' + reason : ''),
      { status: status, reason: reason });
  }

  function checkChannel(c) {
    if (typeof c !== 'string' || !CHANNEL_RE.test(c)) {
      throw new TypeError('Realtime: invalid channel name ' + JSON.stringify(c) +
        ': use 1 to 200 characters from A-Z a-z 0-9 _ - . : @ /');
    }
    return c;
  }

  function base64ToBytes(s) {
    var bin = atob(s);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  // decode turns the JSON form of a message into what the page sees:
  // {channel, id, event, data}, data a string, or a Uint8Array when the
  // payload is not UTF-8 text (the hub sends those bytes in base64).
  function decode(o, fallbackID) {
    if (!o || typeof o !== 'object') return null;
    var data = o.data == null ? '' : String(o.data);
    if (o.encoding === 'base64') data = base64ToBytes(data);
    return {
      channel: o.channel == null ? '' : String(o.channel),
      id: o.id == null ? (fallbackID || '') : String(o.id),
      event: o.event ? String(o.event) : 'message',
      data: data,
    };
  }

  // closedReason reads the reason of a realtime.closed event from its
  // data: {"reason": ...}, as an object or as JSON text.
  function closedReason(data) {
    var o = data;
    if (typeof o === 'string') {
      try { o = JSON.parse(o); } catch (e) { o = null; }
    }
    return o && typeof o === 'object' && typeof o.reason === 'string' && o.reason ? o.reason : 'disconnected';
  }

  function rethrowLater(err) {
    setTimeout(function () { throw err; }, 0);
  }

  class Realtime {
    /**
     * @param {string} url the hub's URL, e.g. '/hub'
     * @param {object} options {channels, transports, ticketURL, withCredentials,
     *   lastEventId, rewind, minRetryDelay, maxRetryDelay, connectTimeout,
     *   idleTimeout, publishTimeout}
     * (realtime.d.ts declares them; a test keeps the two in step.)
     */
    constructor(url, options) {
      options = options || {};
      if (!Array.isArray(options.channels) || options.channels.length === 0) {
        throw new TypeError('Realtime: options.channels must be a non-empty array of channel names');
      }
      var base = typeof document !== 'undefined' ? document.baseURI : (typeof location !== 'undefined' ? location.href : undefined);
      this._url = new URL(url, base);
      this._channels = [];
      for (var i = 0; i < options.channels.length; i++) {
        var c = checkChannel(options.channels[i]);
        if (this._channels.indexOf(c) < 0) this._channels.push(c);
      }
      var transports = options.transports || TRANSPORTS;
      if (!Array.isArray(transports) || transports.length === 0) {
        throw new TypeError('Realtime: options.transports must be a non-empty array');
      }
      this._transports = [];
      for (var j = 0; j < transports.length; j++) {
        if (TRANSPORTS.indexOf(transports[j]) < 0) {
          throw new TypeError('Realtime: unknown transport ' + JSON.stringify(transports[j]) +
            ': use ' + TRANSPORTS.join(', '));
        }
        if (this._transports.indexOf(transports[j]) < 0) this._transports.push(transports[j]);
      }
      this._ticketURL = options.ticketURL ? new URL(options.ticketURL, this._url) : null;
      this._credentials = options.withCredentials ? 'include' : 'same-origin';
      this._opts = {};
      for (var k in DEFAULTS) {
        this._opts[k] = typeof options[k] === 'number' && options[k] >= 0 ? options[k] : DEFAULTS[k];
      }
      this._cursor = options.lastEventId ? String(options.lastEventId) : '';
      // the id of the last message delivered (or the page's lastEventId):
      // a message with it again is a replay overlap. Not the cursor itself,
      // which may be a starting position from the hub (subscribed frame,
      // long-poll answer) that the next message legitimately carries.
      this._seen = this._cursor;
      // rewind: on a connect without a cursor, ask for up to the last n
      // messages of each channel first (null: not asked, the hub's rule decides)
      this._rewind = null;
      if (options.rewind != null) {
        if (typeof options.rewind !== 'number' || !(options.rewind >= 0) || options.rewind % 1 !== 0) {
          throw new TypeError('Realtime: options.rewind must be a non-negative integer, not ' + JSON.stringify(options.rewind));
        }
        this._rewind = options.rewind;
      }
      this._listeners = { message: [], reset: [], state: [], error: [], join: [], leave: [] };
      this._state = 'connecting';
      this._transport = this._transports[0];
      this._lastState = null;
      this._closed = false;
      this._conn = null; // the current attempt or connection
      this._index = 0; // the transport to try next
      this._round = null; // failures of the current round of attempts
      this._failures = 0; // consecutive rounds that failed (backoff exponent)
      this._timer = null;
      this._ws = null; // the open WebSocket, for publish frames
      this._pending = []; // publish frames awaiting their reply, in order
      // connect once the caller has had a chance to add listeners
      var self = this;
      Promise.resolve().then(function () { self._start(); });
    }

    /** The current state: 'connecting', 'open' or 'closed'. */
    get state() { return this._state; }
    /** The transport in use or being tried. */
    get transport() { return this._transport; }
    /** The resume cursor: the id of the last message seen. */
    get lastEventId() { return this._cursor; }
    /** The channels subscribed to. */
    get channels() { return this._channels.slice(); }

    /** on adds a listener for 'message', 'reset', 'state', 'error', 'join' or 'leave'. */
    on(event, fn) {
      if (EVENTS.indexOf(event) < 0) {
        throw new TypeError('Realtime: unknown event ' + JSON.stringify(event) + ': use ' + EVENTS.join(', '));
      }
      if (typeof fn !== 'function') throw new TypeError('Realtime: listener must be a function');
      this._listeners[event].push(fn);
      return this;
    }

    /** off removes a listener added with on. */
    off(event, fn) {
      var list = this._listeners[event];
      if (list) {
        var i = list.indexOf(fn);
        if (i >= 0) list.splice(i, 1);
      }
      return this;
    }

    /** subscribe adds a channel; the client reconnects, resuming where it was. */
    subscribe(channel) {
      checkChannel(channel);
      if (this._closed || this._channels.indexOf(channel) >= 0) return;
      this._channels.push(channel);
      this._resubscribe();
    }

    /** unsubscribe drops a channel; the client reconnects, resuming where it was. */
    unsubscribe(channel) {
      var i = this._channels.indexOf(channel);
      if (this._closed || i < 0) return;
      this._channels.splice(i, 1);
      this._resubscribe();
    }

    /**
     * publish sends data (a string; or bytes: ArrayBuffer, a typed array,
     * Blob) to channel and resolves with the message's id. Over an open
     * WebSocket a string goes as a publish frame; otherwise it is an HTTP
     * POST to the hub authorised with a fresh ticket from ticketURL.
     */
    publish(channel, data, options) {
      var self = this;
      return new Promise(function (resolve, reject) {
        checkChannel(channel);
        if (self._closed) throw RealtimeError('Realtime: closed');
        var event = options && options.event ? String(options.event) : '';
        var binary = data instanceof ArrayBuffer || ArrayBuffer.isView(data) ||
          (typeof Blob !== 'undefined' && data instanceof Blob);
        if (typeof data !== 'string' && !binary) {
          throw new TypeError('Realtime: publish data must be a string or bytes');
        }
        if (!binary && self._ws) {
          self._publishFrame(channel, data, event, resolve, reject);
        } else {
          self._publishHTTP(channel, data, event).then(resolve, reject);
        }
      });
    }

    /**
     * presence asks the hub who is on channel (GET <hub>/presence?channel=c,
     * with a fresh ticket from ticketURL for that channel, or the page's
     * cookies) and resolves with {channel, connections, members: [{sub,
     * connections}]}; rejects with the hub's status and reason.
     */
    presence(channel) {
      var self = this;
      return new Promise(function (resolve, reject) {
        checkChannel(channel);
        if (self._closed) throw RealtimeError('Realtime: closed');
        self._presenceHTTP(channel).then(resolve, reject);
      });
    }

    /** close ends the subscription for good. */
    close() {
      if (this._closed) return;
      this._closed = true;
      this._teardown();
      this._setState('closed', this._transport);
    }

    // ---- events

    _emit(event, value) {
      var list = this._listeners[event].slice();
      for (var i = 0; i < list.length; i++) {
        try {
          list[i].call(this, value);
        } catch (err) {
          rethrowLater(err);
        }
      }
    }

    _setState(state, transport, error, reason) {
      this._state = state;
      this._transport = transport;
      var key = state + '/' + transport;
      if (key === this._lastState && !error && !reason) return;
      this._lastState = key;
      var s = { state: state, transport: transport };
      if (error) s.error = error;
      if (reason) s.reason = reason;
      this._emit('state', s);
    }

    // _deliver hands one message to the page, keeping its id as the cursor.
    _deliver(conn, m) {
      if (!m || conn !== this._conn || this._closed) return;
      if (m.id) {
        if (m.id === this._seen) return; // already seen: a replay overlap
        this._seen = m.id;
        this._cursor = m.id;
      }
      if (m.event === CLOSED_EVENT) {
        this._closedByHub(conn, closedReason(m.data));
        return;
      }
      if (m.event === RESET_EVENT) {
        var r = {};
        try { r = JSON.parse(typeof m.data === 'string' ? m.data : ''); } catch (e) { r = {}; }
        this._emit('reset', { channel: r.channel || m.channel, reason: r.reason || 'gap' });
        return;
      }
      if (m.event === JOIN_EVENT || m.event === LEAVE_EVENT) {
        // data {"channel", "sub"}: a join or leave, never a 'message'
        var p = null;
        try { p = JSON.parse(typeof m.data === 'string' ? m.data : ''); } catch (e) { p = null; }
        if (p && typeof p === 'object' && typeof p.sub === 'string' && p.sub) {
          var who = { channel: typeof p.channel === 'string' && p.channel ? p.channel : m.channel, sub: p.sub, id: m.id };
          if (m.event === JOIN_EVENT) this._emit('join', who);
          else this._emit('leave', who);
        }
        return;
      }
      this._emit('message', m);
    }

    // _closedByHub ends the client for good when the hub says so
    // (realtime.closed, or WebSocket close code 4000): no reconnect, no
    // other transport; state 'closed' with the hub's reason.
    _closedByHub(conn, reason) {
      if (conn !== this._conn || conn.done || this._closed) return;
      this._closed = true;
      this._teardown();
      this._setState('closed', conn.transport, undefined, reason || 'disconnected');
    }

    // ---- connection lifecycle

    _start() {
      if (this._closed || this._conn) return;
      if (this._channels.length === 0) {
        this._setState('closed', this._transport);
        return;
      }
      this._round = { refusals: 0, other: 0, tried: 0 };
      this._attempt();
    }

    // _attempt opens the transport at this._index.
    _attempt() {
      var self = this;
      var name = this._transports[this._index];
      var conn = { transport: name, open: false, done: false, cleanup: [], sentCursor: this._cursor };
      this._conn = conn;
      this._round.tried++;
      this._setState('connecting', name);
      var opener = name === 'websocket' ? this._openWebSocket : name === 'sse' ? this._openSSE : this._openLongPoll;
      if (name !== 'longpoll' && this._opts.connectTimeout > 0) {
        var t = setTimeout(function () {
          if (!conn.open) self._failed(conn, RealtimeError('Realtime: ' + name + ' not live after ' + self._opts.connectTimeout + 'ms', { transport: name }));
        }, this._opts.connectTimeout);
        conn.cleanup.push(function () { clearTimeout(t); });
      }
      opener.call(this, conn).catch(function (err) { self._failed(conn, err); });
    }

    // _opened is called once a transport's subscriptions are live.
    _opened(conn) {
      if (conn !== this._conn || conn.done || conn.open) return;
      conn.open = true;
      this._failures = 0;
      this._round = null;
      this._setState('open', conn.transport);
    }

    // _failed ends conn after an error: before it was live, the next
    // transport is tried; after, the same transport reconnects with backoff.
    _failed(conn, err) {
      if (conn !== this._conn || conn.done) return;
      this._endConn(conn);
      this._conn = null;
      if (this._closed) return;
      if (err) {
        if (!err.transport) err.transport = conn.transport;
        this._emit('error', err);
      }
      if (conn.open) {
        // a live connection dropped: reconnect with this transport first
        this._round = { refusals: 0, other: 0, tried: 0 };
        this._schedule(conn.transport);
        return;
      }
      var round = this._round;
      var status = err && err.status;
      if (status === 400 && conn.sentCursor) {
        // the hub cannot read our cursor: say so and start afresh
        this._cursor = '';
        this._seen = '';
        for (var i = 0; i < this._channels.length; i++) {
          this._emit('reset', { channel: this._channels[i], reason: 'unknown-id' });
        }
        this._attempt();
        return;
      }
      if (status && isRefusal(status)) round.refusals++;
      else if (status || conn.transport !== 'websocket') round.other++;
      if (round.tried < this._transports.length) {
        this._index = (this._index + 1) % this._transports.length;
        this._attempt();
        return;
      }
      if (round.refusals > 0 && round.other === 0) {
        // every transport that told us why was refused: retrying won't help
        this._closed = true;
        this._teardown();
        this._setState('closed', conn.transport, err);
        return;
      }
      this._index = (this._index + 1) % this._transports.length;
      this._round = { refusals: 0, other: 0, tried: 0 };
      this._schedule(this._transports[this._index]);
    }

    // _schedule reconnects after a backoff with full jitter.
    _schedule(transport) {
      var self = this;
      this._index = this._transports.indexOf(transport);
      var cap = Math.min(this._opts.maxRetryDelay, this._opts.minRetryDelay * Math.pow(2, this._failures));
      this._failures++;
      var delay = Math.random() * cap;
      this._setState('connecting', transport);
      this._timer = setTimeout(function () {
        self._timer = null;
        if (self._closed || self._conn) return;
        self._round = self._round || { refusals: 0, other: 0, tried: 0 };
        self._attempt();
      }, delay);
    }

    _endConn(conn) {
      conn.done = true;
      for (var i = 0; i < conn.cleanup.length; i++) {
        try { conn.cleanup[i](); } catch (e) { /* already gone */ }
      }
      conn.cleanup = [];
      if (this._ws && this._ws.conn === conn) {
        this._ws = null;
        this._rejectPending(RealtimeError('Realtime: connection closed before the publish was answered'));
      }
    }

    _teardown() {
      if (this._timer) {
        clearTimeout(this._timer);
        this._timer = null;
      }
      if (this._conn) {
        this._endConn(this._conn);
        this._conn = null;
      }
      this._rejectPending(RealtimeError('Realtime: closed'));
    }

    _resubscribe() {
      var keep = this._conn && this._conn.open ? this._conn.transport : this._transports[this._index];
      this._teardown();
      this._index = this._transports.indexOf(keep);
      this._failures = 0;
      this._start();
    }

    // ---- URLs and tickets

    _subscribeURL(extra) {
      var u = new URL(this._url.href);
      var q = u.searchParams;
      ['channel', 'last_event_id', 'rewind', 'ticket', 'format'].forEach(function (k) { q.delete(k); });
      for (var i = 0; i < this._channels.length; i++) q.append('channel', this._channels[i]);
      // a cursor resumes; only a client without one asks for a rewind
      if (this._cursor) q.set('last_event_id', this._cursor);
      else if (this._rewind !== null) q.set('rewind', String(this._rewind));
      for (var k in extra) {
        if (extra[k]) q.set(k, extra[k]);
      }
      return u;
    }

    // _ticket POSTs ticketURL for a fresh ticket ('' without ticketURL),
    // for channels (default: those subscribed to).
    _ticket(signal, channels) {
      if (!this._ticketURL) return Promise.resolve('');
      return fetch(this._ticketURL.href, {
        method: 'POST',
        credentials: this._credentials,
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ channels: channels || this._channels }),
        cache: 'no-store',
        signal: signal,
      }).then(function (res) {
        if (!res.ok) {
          return res.text().then(function (text) {
            throw RealtimeError('Realtime: ticket request failed: ' + res.status + ' ' + text.trim(), { status: res.status });
          });
        }
        return res.json().then(function (j) {
          if (!j || typeof j.ticket !== 'string' || !j.ticket) {
            throw RealtimeError('Realtime: ticket answer has no ticket');
          }
          return j.ticket;
        });
      });
    }

    _abortable(conn) {
      var ac = typeof AbortController !== 'undefined' ? new AbortController() : null;
      if (ac) conn.cleanup.push(function () { ac.abort(); });
      return ac ? ac.signal : undefined;
    }

    // ---- WebSocket

    _openWebSocket(conn) {
      var self = this;
      if (typeof WebSocket === 'undefined') return Promise.reject(RealtimeError('Realtime: no WebSocket in this browser'));
      var signal = this._abortable(conn);
      return this._ticket(signal).then(function (ticket) {
        if (conn.done) return;
        var u = self._subscribeURL({ ticket: ticket });
        u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
        var ws = new WebSocket(u.href);
        conn.cleanup.push(function () {
          ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
          try { ws.close(1000); } catch (e) { /* not open yet */ }
        });
        ws.onmessage = function (ev) {
          if (conn.done) return;
          var o;
          try { o = JSON.parse(ev.data); } catch (e) { return; }
          if (!o || typeof o !== 'object') return;
          if (o.type === undefined) {
            self._deliver(conn, decode(o));
            return;
          }
          switch (o.type) {
            case 'subscribed':
              if (o.last_event_id && !self._cursor) self._cursor = String(o.last_event_id);
              self._ws = { socket: ws, conn: conn };
              self._opened(conn);
              break;
            case 'ack':
            case 'error':
            case 'pong':
              self._reply(o);
              break;
          }
        };
        ws.onclose = function (ev) {
          if (ev.code === CLOSE_CODE) {
            self._closedByHub(conn, ev.reason || 'disconnected');
            return;
          }
          self._failed(conn, RealtimeError('Realtime: WebSocket closed' + (ev.code ? ' (' + ev.code + (ev.reason ? ' ' + ev.reason : '') + ')' : ''), { code: ev.code }));
        };
      });
    }

    _publishFrame(channel, data, event, resolve, reject) {
      var p = { resolve: resolve, reject: reject, done: false };
      var frame = { type: 'publish', channel: channel, data: data };
      if (event) frame.event = event;
      this._pending.push(p);
      try {
        this._ws.socket.send(JSON.stringify(frame));
      } catch (err) {
        p.done = true;
        reject(err);
        return;
      }
      if (this._opts.publishTimeout > 0) {
        p.timer = setTimeout(function () {
          if (p.done) return;
          p.done = true; // stays queued so later replies still match in order
          reject(RealtimeError('Realtime: publish not answered in time'));
        }, this._opts.publishTimeout);
      }
    }

    // _reply matches a control reply to the oldest publish frame.
    _reply(o) {
      var p = this._pending.shift();
      if (!p || p.done) return;
      p.done = true;
      clearTimeout(p.timer);
      if (o.type === 'ack') p.resolve(o.id == null ? '' : String(o.id));
      else p.reject(RealtimeError('Realtime: publish refused: ' + (o.reason || o.type), { reason: String(o.reason || o.type) }));
    }

    _rejectPending(err) {
      var pending = this._pending;
      this._pending = [];
      for (var i = 0; i < pending.length; i++) {
        if (!pending[i].done) {
          pending[i].done = true;
          clearTimeout(pending[i].timer);
          pending[i].reject(err);
        }
      }
    }

    _publishHTTP(channel, data, event) {
      var self = this;
      return this._ticket().then(function (ticket) {
        var u = new URL(self._url.href);
        u.search = '';
        u.searchParams.set('channel', channel);
        if (event) u.searchParams.set('event', event);
        var headers = { 'Content-Type': typeof data === 'string' ? 'text/plain; charset=utf-8' : 'application/octet-stream' };
        if (ticket) headers.Authorization = 'Bearer ' + ticket;
        return fetch(u.href, {
          method: 'POST',
          credentials: self._credentials,
          headers: headers,
          body: data,
          cache: 'no-store',
        });
      }).then(function (res) {
        return res.text().then(function (text) {
          if (!res.ok) throw refusedError('publish', res.status, text);
          var j = {};
          try { j = JSON.parse(text); } catch (e) { /* not JSON */ }
          return j && j.id != null ? String(j.id) : '';
        });
      });
    }

    // _presenceHTTP GETs <hub>/presence?channel=c (the hub URL's own query
    // parameters kept, as for subscriptions) with a fresh ticket for c.
    _presenceHTTP(channel) {
      var self = this;
      return this._ticket(undefined, [channel]).then(function (ticket) {
        var u = new URL(self._url.href);
        u.pathname = u.pathname.replace(/\/+$/, '') + '/presence';
        ['channel', 'last_event_id', 'rewind', 'ticket', 'format'].forEach(function (k) { u.searchParams.delete(k); });
        u.searchParams.set('channel', channel);
        var headers = { Accept: 'application/json' };
        if (ticket) headers.Authorization = 'Bearer ' + ticket;
        return fetch(u.href, { credentials: self._credentials, headers: headers, cache: 'no-store' });
      }).then(function (res) {
        return res.text().then(function (text) {
          if (!res.ok) throw refusedError('presence', res.status, text);
          var j = null;
          try { j = JSON.parse(text); } catch (e) { j = null; }
          if (!j || typeof j !== 'object' || !Array.isArray(j.members)) {
            throw RealtimeError('Realtime: presence answer is not {channel, connections, members}', { status: res.status });
          }
          var members = [];
          for (var i = 0; i < j.members.length; i++) {
            var mb = j.members[i];
            if (mb && typeof mb.sub === 'string') members.push({ sub: mb.sub, connections: Number(mb.connections) || 0 });
          }
          return { channel: typeof j.channel === 'string' ? j.channel : channel, connections: Number(j.connections) || 0, members: members };
        });
      });
    }

    // ---- SSE (fetch and a stream parser, so every event name is seen)

    async _openSSE(conn) {
      if (typeof fetch === 'undefined' || typeof TextDecoder === 'undefined' ||
          typeof ReadableStream === 'undefined') {
        throw RealtimeError('Realtime: no streaming fetch in this browser');
      }
      var self = this;
      var signal = this._abortable(conn);
      var idle = this._opts.idleTimeout;
      var watchdog = null;
      conn.cleanup.push(function () { clearTimeout(watchdog); });
      var alive = function () {
        if (!idle) return;
        clearTimeout(watchdog);
        watchdog = setTimeout(function () {
          self._failed(conn, RealtimeError('Realtime: SSE stream silent for ' + idle + 'ms'));
        }, idle);
      };
      var ticket = await this._ticket(signal);
      if (conn.done) return;
      var u = this._subscribeURL({ ticket: ticket, format: 'json' });
      var res = await fetch(u.href, {
        headers: { Accept: 'text/event-stream' },
        credentials: this._credentials,
        cache: 'no-store',
        signal: signal,
      });
      if (conn.done) return;
      var type = res.headers.get('Content-Type') || '';
      if (!res.ok || type.indexOf('text/event-stream') < 0) {
        var text = await res.text().catch(function () { return ''; });
        throw RealtimeError('Realtime: SSE refused: ' + res.status + ' ' + text.trim().slice(0, 200),
          { status: res.ok ? 0 : res.status });
      }
      if (!res.body || !res.body.getReader) throw RealtimeError('Realtime: no streaming fetch in this browser');
      var reader = res.body.getReader();
      conn.cleanup.push(function () { reader.cancel().catch(function () {}); });
      var parser = new SSEParser(function (ev) {
        self._opened(conn); // retry: comes once the subscriptions are live
        if (ev.retry !== undefined) return;
        if (!ev.hasData) {
          if (ev.id) self._cursor = ev.id; // an id-only event moves the cursor
          return;
        }
        var o = null;
        try { o = JSON.parse(ev.data); } catch (e) { o = null; }
        if (ev.event === CLOSED_EVENT) {
          // data {"reason": ...} (or the JSON form of a message carrying it)
          self._closedByHub(conn, closedReason(o && typeof o === 'object' && o.event === CLOSED_EVENT ? o.data : o));
          return;
        }
        var m = o && typeof o === 'object' && o.type === undefined ? decode(o, ev.id) : null;
        if (!m) {
          // not the JSON form (a hub that ignored format=json): pass it on
          m = { channel: self._channels.length === 1 ? self._channels[0] : '', id: ev.id, event: ev.event, data: ev.data };
        }
        self._deliver(conn, m);
      });
      var decoder = new TextDecoder();
      alive();
      for (;;) {
        var r = await reader.read();
        if (conn.done) return;
        if (r.done) {
          parser.push(decoder.decode(), true);
          throw RealtimeError('Realtime: SSE stream ended');
        }
        alive();
        parser.push(decoder.decode(r.value, { stream: true }), false);
      }
    }

    // ---- long-poll

    async _openLongPoll(conn) {
      if (typeof fetch === 'undefined') throw RealtimeError('Realtime: no fetch in this browser');
      var idle = this._opts.idleTimeout;
      while (!conn.done) {
        var ac = typeof AbortController !== 'undefined' ? new AbortController() : null;
        var timer = null;
        var stop = function () { if (ac) ac.abort(); clearTimeout(timer); };
        conn.cleanup.push(stop);
        var j;
        try {
          var ticket = await this._ticket(ac ? ac.signal : undefined);
          if (conn.done) return;
          conn.sentCursor = this._cursor;
          var u = this._subscribeURL({ ticket: ticket });
          if (idle && ac) timer = setTimeout(stop, idle);
          var res = await fetch(u.href, {
            headers: { Accept: 'application/json' },
            credentials: this._credentials,
            cache: 'no-store',
            signal: ac ? ac.signal : undefined,
          });
          if (conn.done) return;
          if (!res.ok) {
            var text = await res.text().catch(function () { return ''; });
            throw RealtimeError('Realtime: long-poll refused: ' + res.status + ' ' + text.trim().slice(0, 200),
              { status: res.status });
          }
          j = await res.json();
        } finally {
          clearTimeout(timer);
          var i = conn.cleanup.indexOf(stop);
          if (i >= 0) conn.cleanup.splice(i, 1);
        }
        if (conn.done) return;
        if (!j || !Array.isArray(j.messages)) throw RealtimeError('Realtime: long-poll answer has no messages');
        this._opened(conn);
        for (var k = 0; k < j.messages.length && !conn.done; k++) {
          var e = j.messages[k];
          if (e && e.event === CLOSED_EVENT) {
            this._closedByHub(conn, closedReason(e.data));
            return;
          }
          this._deliver(conn, decode(e));
        }
        if (conn.done) return;
        if (j.last_event_id) this._cursor = String(j.last_event_id);
      }
    }
  }

  // SSEParser reads an event stream as the HTML standard says: lines end
  // in CRLF, LF or CR; fields data, event, id, retry; comments ignored.
  // onEvent gets {event, data, id, hasData} per dispatched event (and
  // id-only events) and {retry} per retry field.
  function SSEParser(onEvent) {
    this.onEvent = onEvent;
    this.buf = '';
    this.data = [];
    this.event = '';
    this.id = '';
    this.idSet = false;
    this.first = true;
  }

  SSEParser.prototype.push = function (text, end) {
    var buf = this.buf + text;
    if (this.first && buf.length > 0) {
      if (buf.charCodeAt(0) === 0xfeff) buf = buf.slice(1);
      this.first = false;
    }
    var start = 0;
    for (;;) {
      var cr = buf.indexOf('\r', start);
      var lf = buf.indexOf('\n', start);
      var eol = cr < 0 ? lf : lf < 0 ? cr : Math.min(cr, lf);
      if (eol < 0) break;
      var next = eol + 1;
      if (buf.charCodeAt(eol) === 13) {
        if (eol + 1 === buf.length && !end) break; // a CR that may start a CRLF
        if (buf.charCodeAt(eol + 1) === 10) next++;
      }
      this.line(buf.slice(start, eol));
      start = next;
    }
    this.buf = buf.slice(start);
    if (end) this.buf = ''; // an unterminated last event is dropped
  };

  SSEParser.prototype.line = function (line) {
    if (line === '') {
      this.dispatch();
      return;
    }
    if (line.charCodeAt(0) === 58) return; // ':' comment (heartbeat)
    var colon = line.indexOf(':');
    var field = colon < 0 ? line : line.slice(0, colon);
    var value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    switch (field) {
      case 'data':
        this.data.push(value);
        break;
      case 'event':
        this.event = value;
        break;
      case 'id':
        if (value.indexOf('\0') < 0) {
          this.id = value;
          this.idSet = true;
        }
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.onEvent({ retry: parseInt(value, 10) });
        break;
    }
  };

  SSEParser.prototype.dispatch = function () {
    var hasData = this.data.length > 0;
    if (hasData || this.idSet) {
      this.onEvent({
        event: this.event || 'message',
        data: this.data.join('\n'),
        id: this.idSet ? this.id : '',
        hasData: hasData,
      });
    }
    this.data = [];
    this.event = '';
    this.idSet = false;
  };

  return Realtime;
})();
if (typeof window !== 'undefined') window.Realtime = Realtime;
