package endpoint

import (
	"context"
	"net/http"
	"time"

	"github.com/caddy-realtime/realtime/sse"
	"github.com/caddy-realtime/realtime/ws"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// liftDeadlines removes the server's read and write timeouts for a
// long-lived stream. Caddy keeps its `timeouts { write }` setting as a
// hard ceiling of the idle-timeout writer it installs, which a plain
// SetWriteDeadline(time.Time{}) does not lift, so the ceiling is cleared
// there too. The idle timeout itself stays: it bounds each write, so a
// client that stops reading is still cut off.
func liftDeadlines(w http.ResponseWriter, r *http.Request) {
	ir, iw := caddyhttp.IdleTimeoutsFromContext(r.Context())
	if iw != nil {
		iw.Deadline.HardDeadline = time.Time{}
	}
	if ir != nil {
		ir.Deadline.HardDeadline = time.Time{}
	}
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	_ = rc.SetReadDeadline(time.Time{})
}

// beneathIdleWriter returns the writer beneath Caddy's idle write
// timeout writer and that writer, for a hub stream to write to directly
// (see stream.ResponseBeneathIdle), or nil when w does not reach it
// through wrappers a stream may skip: Caddy's access log recorder only
// (which then logs the header, not the streamed bytes, as for a stream
// that left its request); an encoder, for one, must see every byte.
func beneathIdleWriter(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *caddyhttp.IdleTimeoutWriter) {
	_, iw := caddyhttp.IdleTimeoutsFromContext(r.Context())
	if iw == nil || iw.ResponseWriterWrapper == nil || iw.Deadline.MinRate > 0 {
		return nil, nil
	}
	for w != http.ResponseWriter(iw) {
		if _, ok := w.(caddyhttp.ResponseRecorder); !ok {
			return nil, nil
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil, nil
		}
		w = u.Unwrap()
	}
	return iw.ResponseWriterWrapper.ResponseWriter, iw
}

// streamContext is r's context, also cancelled when this handler is
// cleaned up (a config reload or stop), so that open streams end at once
// and the old server's shutdown does not wait for them.
func (h *Endpoint) streamContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(h.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// passthrough serves a request the hub does not answer: the next handler
// answers, with event streams unbuffered and kept alive, and protocol
// switches (WebSocket or any other upgrade a proxy would pass on) only
// after the Origin (and ticket) checks. An event stream the request did
// not ask for (no Accept: text/event-stream) is checked when the
// upstream's answer turns out to be one: refused, it never reaches the
// client, and the upstream request is cancelled.
func (h *Endpoint) passthrough(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	switching := ws.SwitchesProtocol(r)
	checkFirst := switching || wantsSSE(r)
	if checkFirst {
		if err := h.checkPassthrough(r); err != nil {
			return err
		}
		if h.tickets != nil {
			stripTicket(r)
		}
	}
	// an event stream (whatever the request asked for) ends when this
	// handler is cleaned up (reload, stop), so the old server's shutdown
	// does not wait for it; the client reconnects to the new config
	cancel := func() {}
	if !switching {
		var ctx context.Context
		ctx, cancel = h.streamContext(r)
		defer cancel()
		r = r.WithContext(ctx)
	}
	opts := sse.Options{
		Heartbeat: h.heartbeat,
		OnStream:  func() { liftDeadlines(w, r) },
		Logger:    h.logger,
	}
	if !checkFirst {
		opts.Gate = func() error { return h.checkPassthrough(r) }
		opts.Refuse = func(w http.ResponseWriter, err error) {
			cancel() // the upstream request
			if !h.writeRefusal(w, r, err) {
				h.logger.Error("checking an event stream", zap.Error(err))
				w.Header().Set("Content-Length", "0")
				w.WriteHeader(http.StatusInternalServerError)
			}
		}
	}
	sw := sse.NewWriter(w, opts)
	defer sw.Close()
	defer func() {
		// a proxy whose write to a refused stream fails aborts the
		// response (reverse_proxy panics with ErrAbortHandler), which
		// would reset the connection or HTTP/2 stream after the client's
		// complete answer: end it normally instead
		if sw.Refused() {
			if p := recover(); p != nil && p != http.ErrAbortHandler {
				panic(p)
			}
		}
	}()
	err := next.ServeHTTP(sw, r)
	if sw.Refused() {
		return nil // the proxy's error from writing: the client has its answer
	}
	return err
}

// checkPassthrough runs the Origin and ticket checks of a passthrough
// request that switches protocols or gets an event stream.
func (h *Endpoint) checkPassthrough(r *http.Request) error {
	if err := h.origins.Check(r); err != nil {
		return fromAuthError(err)
	}
	_, err := h.authorizeSubscribe(r, nil)
	return err
}
