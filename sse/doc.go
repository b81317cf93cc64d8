// Package sse is the Server-Sent Events layer of caddy-realtime: a
// ResponseWriter wrapper that keeps proxied event streams unbuffered and
// alive (Writer, with LineTracker to inject heartbeats only between
// lines), append-style encoders for the hub's own streams, and a parser
// that reads a stream exactly as a browser's EventSource does, for tests
// and load generators.
//
// The package does not import Caddy; the root package adapts it.
package sse
