/*!
 * TypeScript declarations of realtime.js, the browser client of
 * caddy-realtime hubs. The hub serves this file beside the client, at any
 * path ending in /realtime.d.ts (e.g. /hub/realtime.d.ts).
 *
 * Add it to the program (tsconfig "include"/"files", or a
 * `/// <reference path="realtime.d.ts" />`); then both ways of loading the
 * client are typed:
 *
 *   // classic script: <script src="/hub/realtime.js"> defines a global
 *   const rt = new Realtime('/hub', { channels: ['news'] }); // or window.Realtime
 *
 *   // ES module: any import path ending in /realtime.mjs
 *   import { Realtime } from '/hub/realtime.mjs';
 *
 * The option, event and payload types are in the namespace Realtime
 * (Realtime.Options, Realtime.Message, ...). client/test/types.test.mjs
 * keeps this file in step with realtime.js.
 */

/** A client of one caddy-realtime hub: subscribes to channels, delivers their messages, publishes. */
declare class Realtime {
  /**
   * Connects on the next microtask, so listeners added right after the
   * constructor see every event.
   * @param url the hub's URL, relative to the page (e.g. '/hub')
   * @throws TypeError on an empty or invalid channel list, an unknown
   *   transport, or a rewind that is not a non-negative integer
   */
  constructor(url: string | URL, options: Realtime.Options);

  /** The current state. */
  readonly state: Realtime.State;
  /** The transport in use or being tried. */
  readonly transport: Realtime.Transport;
  /** The resume cursor: the id of the last message seen ('' before any). */
  readonly lastEventId: string;
  /** A copy of the channels subscribed to. */
  readonly channels: string[];

  /** Adds a listener. An unknown event name throws. Returns the client. */
  on<K extends keyof Realtime.EventMap>(event: K, listener: (this: Realtime, value: Realtime.EventMap[K]) => void): this;
  /** Removes a listener added with on. Returns the client. */
  off<K extends keyof Realtime.EventMap>(event: K, listener: (this: Realtime, value: Realtime.EventMap[K]) => void): this;

  /** Adds a channel; the client reconnects, resuming from its cursor. */
  subscribe(channel: string): void;
  /** Drops a channel; the client reconnects (with no channel left: state 'closed' until the next subscribe). */
  unsubscribe(channel: string): void;

  /**
   * Publishes data to channel and resolves with the message's id; rejects
   * with the hub's reason. A string goes over an open WebSocket as a
   * publish frame; otherwise (and for bytes) as an HTTP POST with a fresh
   * ticket from ticketURL.
   */
  publish(channel: string, data: Realtime.PublishData, options?: Realtime.PublishOptions): Promise<string>;

  /**
   * Asks the hub who is on channel (GET <hub>/presence?channel=c, with a
   * fresh ticket from ticketURL for that channel, else the page's cookies)
   * and resolves with the answer; rejects with the hub's status and reason
   * (404: the channel's rule has no presence).
   */
  presence(channel: string): Promise<Realtime.Presence>;

  /** Ends the client for good: connection, retries and pending publishes; state 'closed'. */
  close(): void;
}

declare namespace Realtime {
  /** The ways to reach the hub, in the client's default order of preference. */
  type Transport = 'websocket' | 'sse' | 'longpoll';

  /** The client's state; 'open': the subscriptions are live. */
  type State = 'connecting' | 'open' | 'closed';

  interface Options {
    /** The channels to subscribe to (required, at least one). */
    channels: readonly string[];
    /** Order of preference. Default ['websocket', 'sse', 'longpoll']. */
    transports?: readonly Transport[];
    /** POSTed with {"channels": [...]} for a fresh ticket before every connect and HTTP publish. */
    ticketURL?: string | URL;
    /** Send cookies to a cross-origin hub (credentials 'include'). Default false. */
    withCredentials?: boolean;
    /** Resume from this cursor (e.g. one saved before a reload). */
    lastEventId?: string;
    /**
     * A non-negative integer: on a connect with no cursor yet, first get up
     * to the last n retained messages of each channel, then live ones. Not
     * sent once the client has a cursor. Unset: the hub's channel rule decides.
     */
    rewind?: number;
    /** ms; the first reconnect waits up to this (full jitter). Default 500. */
    minRetryDelay?: number;
    /** ms; the cap of the exponential backoff. Default 30000. */
    maxRetryDelay?: number;
    /** ms; a WebSocket or SSE attempt not live by then has failed. Default 15000. */
    connectTimeout?: number;
    /** ms; an SSE stream or a poll silent this long is dropped and resumed (0: never). Default 45000. */
    idleTimeout?: number;
    /** ms; a WebSocket publish not answered by then is rejected. Default 30000. */
    publishTimeout?: number;
  }

  /** A message of a channel. */
  interface Message {
    channel: string;
    /** The resume cursor after this message (opaque). */
    id: string;
    /** 'message' unless the publisher named one. */
    event: string;
    /** A string for UTF-8 text, the exact bytes otherwise. */
    data: string | Uint8Array;
  }

  /** Why the hub could not place the cursor. */
  type ResetReason = 'unknown-id' | 'expired' | 'gap';

  /** The cursor could not be placed for channel: messages may have been missed. */
  interface Reset {
    channel: string;
    reason: ResetReason;
  }

  /** Emitted on every change of state (and transport). */
  interface StateChange {
    state: State;
    transport: Transport;
    /** With 'closed' when the hub refused the subscription for good: why. */
    error?: RealtimeError;
    /** With 'closed' when the hub ended the client (realtime.closed): e.g. 'disconnected'. */
    reason?: string;
  }

  /** The errors of the client: failed attempts, refusals, rejected publishes. */
  interface RealtimeError extends Error {
    name: 'RealtimeError';
    /** The transport of the failed attempt or dropped connection. */
    transport?: Transport;
    /** The HTTP status, for an HTTP answer. */
    status?: number;
    /** The WebSocket close code, for a closed WebSocket. */
    code?: number;
    /** The hub's reason, for a refused publish or presence request. */
    reason?: string;
  }

  /** A member of a channel: a ticket's sub (or the sub of the app's approval). */
  interface PresenceMember {
    sub: string;
    /** Its connections to the channel, on every node. */
    connections: number;
  }

  /** The answer of presence(channel). */
  interface Presence {
    channel: string;
    /** Every connection to the channel, with a sub or without (those are counted, not listed). */
    connections: number;
    members: PresenceMember[];
  }

  /** A member's first connection to channel (join), or its last one gone (leave). */
  interface PresenceEvent {
    channel: string;
    sub: string;
    /** The resume cursor after this event, as for a message. */
    id: string;
  }

  /** The events of on/off and their payloads. */
  interface EventMap {
    message: Message;
    reset: Reset;
    state: StateChange;
    /** Informational: every failed attempt or dropped connection; the client retries by itself. */
    error: RealtimeError;
    /** A realtime.join message (channels with `presence events`); not also a 'message'. */
    join: PresenceEvent;
    /** A realtime.leave message (channels with `presence events`); not also a 'message'. */
    leave: PresenceEvent;
  }

  /** What publish sends: text, or bytes. */
  type PublishData = string | ArrayBuffer | ArrayBufferView | Blob;

  interface PublishOptions {
    /** The event name (default 'message'; names starting with "realtime." are the hub's). */
    event?: string;
  }
}

interface Window {
  /** Defined by the classic script realtime.js. */
  Realtime: typeof Realtime;
}

/** realtime.mjs, the ES module form of the client, wherever it is served. */
declare module '*/realtime.mjs' {
  import RealtimeClass = Realtime;
  export { RealtimeClass as Realtime };
}
