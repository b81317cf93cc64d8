package hub

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/caddy-realtime/realtime/sse"
)

// DeliveryObserver counts what reaches clients, for metrics.
type DeliveryObserver interface {
	// Delivered is called once per message written to one client.
	Delivered(transport string, e *Envelope)
}

type nopDelivery struct{}

func (nopDelivery) Delivered(string, *Envelope) {}

// SSEOptions configures one hub SSE stream.
type SSEOptions struct {
	// Heartbeat is the interval of comment lines on an idle stream; zero
	// or less: none.
	Heartbeat time.Duration
	// Retry is sent as the `retry:` field once the subscription is live.
	Retry time.Duration
	// JSON sends each message's data as its JSON form (`?format=json`).
	JSON     bool
	Observer DeliveryObserver
	// Shutdown, when closed, ends the stream with a `retry:` hint of a
	// random delay up to ShutdownJitter, so that the clients of a
	// reloading or stopping server come back spread out, not at once.
	Shutdown       <-chan struct{}
	ShutdownJitter time.Duration
}

// ServeSSE streams ss to w as Server-Sent Events until the client leaves
// (ctx), the hub drops the subscriber, or a write fails. The `retry:`
// line goes first (the subscription is live), then the replay, then live
// messages.
//
// Everything pending is written with one Write and one Flush, so a burst
// costs one syscall per client, not one per message.
func ServeSSE(ctx context.Context, w http.ResponseWriter, ss *Session, opts SSEOptions) error {
	s := ss.Sub
	if opts.Observer == nil {
		opts.Observer = nopDelivery{}
	}
	rc := http.NewResponseController(w)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	if hdr.Get("Cache-Control") == "" {
		hdr.Set("Cache-Control", "no-cache")
	}
	hdr.Set("X-Accel-Buffering", "no")
	hdr.Del("Content-Length")
	w.WriteHeader(http.StatusOK)

	buf := sse.AppendRetry(nil, int(opts.Retry/time.Millisecond))
	if cur := ss.Cursor(); cur != "" && len(ss.Replay) == 0 {
		// an event with only an id sets the client's last event id
		// without dispatching anything: a client that drops before the
		// first message still resumes from here
		buf = append(buf, "id: "...)
		buf = append(buf, cur...)
		buf = append(buf, "\n\n"...)
	}
	for _, e := range ss.Replay {
		buf = appendSSE(buf, ss, e, opts.JSON)
	}
	if err := writeFlush(w, rc, buf); err != nil {
		return err
	}
	for _, e := range ss.Replay {
		opts.Observer.Delivered("sse", e)
	}
	ss.Replay = nil

	var tick <-chan time.Time
	if opts.Heartbeat > 0 {
		t := time.NewTicker(opts.Heartbeat)
		defer t.Stop()
		tick = t.C
	}
	var pending []*Envelope
	wrote := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-opts.Shutdown:
			ms := opts.Retry.Milliseconds()
			if j := opts.ShutdownJitter.Milliseconds(); j > 0 {
				ms += rand.Int64N(j)
			}
			_ = writeFlush(w, rc, sse.AppendRetry(buf[:0], int(ms)))
			return nil
		case <-s.Done():
			return s.Err()
		case <-tick:
			if wrote {
				wrote = false
				continue
			}
			buf = sse.AppendComment(buf[:0], "heartbeat")
			if err := writeFlush(w, rc, buf); err != nil {
				return err
			}
		case <-s.Ready():
			pending = ss.Next(pending[:0])
			if len(pending) == 0 {
				continue
			}
			buf = buf[:0]
			for _, e := range pending {
				buf = appendSSE(buf, ss, e, opts.JSON)
			}
			if err := writeFlush(w, rc, buf); err != nil {
				return err
			}
			for _, e := range pending {
				opts.Observer.Delivered("sse", e)
			}
			clear(pending)
			wrote = true
			if cap(buf) > 64<<10 {
				buf = nil // don't keep a burst's buffer on an idle stream
			}
		}
	}
}

// appendSSE appends e as the session's client is to see it: the shared
// encoding, or for a multi-channel session, one with its own cursor id.
func appendSSE(buf []byte, ss *Session, e *Envelope, asJSON bool) []byte {
	id := ss.Advance(e)
	if !ss.Multi() {
		if asJSON {
			return append(buf, e.SSEJSON()...)
		}
		return append(buf, e.SSE()...)
	}
	return e.AppendSSEWithID(buf, id, asJSON)
}

func writeFlush(w http.ResponseWriter, rc *http.ResponseController, b []byte) error {
	if _, err := w.Write(b); err != nil {
		return err
	}
	if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}
