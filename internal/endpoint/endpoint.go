// Package endpoint answers the requests the realtime directive matches:
// with `hub`, subscriptions over each transport, publishes and ticket
// requests; without, it passes requests through to the next handler with
// event streams unbuffered and kept alive and upgrades gated.
//
// A subscription reads as: its checks (channels, Origin, ticket), a lease
// (an admission slot and a hub session, ended once by whoever serves the
// subscription last), then its transport (sse, ws, fallback).
package endpoint

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/caddy-realtime/realtime/auth"
	"github.com/caddy-realtime/realtime/internal/hub"
	"github.com/caddy-realtime/realtime/internal/rules"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// Config is the endpoint's configuration, with defaults applied.
type Config struct {
	// Hub serves subscriptions; nil: passthrough only.
	Hub *hub.Hub
	// Rules are the hub's channel rules (nil: the defaults for all).
	Rules *rules.Set
	// Presence answers presence requests; nil when no rule tracks it.
	Presence Presence
	// Conns tracks hub WebSocket connections, which belong to the hub's
	// state rather than to this endpoint.
	Conns   ConnTracker
	Origins *auth.Origins
	// Tickets, when not nil, turns ticket checks on.
	Tickets         *Tickets
	PublishKey      string
	Heartbeat       time.Duration // zero: off
	LongpollTimeout time.Duration
	Limits          Limits
	// DirectWrites lets the hub write to idle sockets itself.
	DirectWrites bool
	Logger       *zap.Logger
}

// Tickets is the ticket configuration at work: stored and signed
// tickets, and the app that approves ticket requests.
type Tickets struct {
	Tickets    *auth.Tickets
	Authorizer *auth.Authorizer // nil without `authorize`
	IssuePath  string
}

// Limits bounds what clients may use; zero: no bound.
type Limits struct {
	Connections, PerIP, Channels int
	MessageSize                  int64
}

// ConnTracker keeps what closes each open hub WebSocket connection, so
// that those that outlive a shutdown can be closed.
type ConnTracker interface {
	TrackConn(io.Closer)
	UntrackConn(io.Closer)
}

// Endpoint serves requests; see the package doc.
type Endpoint struct {
	hub             *hub.Hub
	rules           *rules.Set
	presence        Presence
	conns           ConnTracker
	origins         *auth.Origins
	tickets         *Tickets
	publishKey      string
	heartbeat       time.Duration
	longpollTimeout time.Duration
	limits          Limits
	directWrites    bool
	logger          *zap.Logger
	admission       *admission

	// ctx is cancelled by Shutdown: the streams this endpoint serves end,
	// so that a reload or stop returns promptly. It is kept, not only its
	// cancel function, because every stream waits on it
	// (context.AfterFunc costs no goroutine).
	ctx    context.Context
	cancel context.CancelFunc
	// streams counts the SSE streams that left their request, so that
	// Close can let them send their last retry hint.
	streams sync.WaitGroup
}

// New returns the endpoint of cfg.
func New(cfg Config) *Endpoint {
	ctx, cancel := context.WithCancel(context.Background())
	return &Endpoint{
		hub: cfg.Hub, rules: cfg.Rules, presence: cfg.Presence, conns: cfg.Conns, origins: cfg.Origins, tickets: cfg.Tickets,
		publishKey: cfg.PublishKey, heartbeat: cfg.Heartbeat, longpollTimeout: cfg.LongpollTimeout,
		limits: cfg.Limits, directWrites: cfg.DirectWrites, logger: cfg.Logger,
		admission: &admission{perIP: make(map[string]int)},
		ctx:       ctx, cancel: cancel,
	}
}

// ServeHTTP answers r: from the hub when there is one, else by passing
// it through to next. A refusal is answered here, with its status and
// reason.
func (h *Endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	var err error
	if h.hub != nil {
		err = h.serveHub(w, r)
	} else {
		err = h.passthrough(w, r, next)
	}
	if err != nil && h.writeRefusal(w, r, err) {
		return nil
	}
	return err
}

// Shutdown ends the streams this endpoint serves: the server is shutting
// down (a reload or stop).
func (h *Endpoint) Shutdown() { h.cancel() }

// Close ends the streams and waits, at most wait, for the detached ones
// to send their last retry hint: a stream stuck writing to a dead client
// does not hold up a reload.
func (h *Endpoint) Close(wait time.Duration) {
	h.cancel()
	done := make(chan struct{})
	go func() {
		h.streams.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(wait):
	}
}
