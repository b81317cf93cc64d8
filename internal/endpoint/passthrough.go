package endpoint

import (
	"context"
	"net/http"
	"time"

	"github.com/caddy-realtime/realtime/sse"
	"github.com/caddy-realtime/realtime/ws"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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
// after the Origin (and ticket) checks.
func (h *Endpoint) passthrough(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if ws.SwitchesProtocol(r) || wantsSSE(r) {
		if err := h.origins.Check(r); err != nil {
			return fromAuthError(err)
		}
		if _, err := h.authorizeSubscribe(r, nil); err != nil {
			return err
		}
		if h.tickets != nil {
			stripTicket(r)
		}
	}
	if wantsSSE(r) {
		// an event stream ends when this handler is cleaned up (reload,
		// stop), so the old server's shutdown does not wait for it; the
		// client reconnects to the new config
		ctx, cancel := h.streamContext(r)
		defer cancel()
		r = r.WithContext(ctx)
	}
	sw := sse.NewWriter(w, sse.Options{
		Heartbeat: h.heartbeat,
		OnStream:  func() { liftDeadlines(w, r) },
		Logger:    h.logger,
	})
	defer sw.Close()
	return next.ServeHTTP(sw, r)
}
