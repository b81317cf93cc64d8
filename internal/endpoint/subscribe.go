package endpoint

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/caddy-realtime/realtime/auth"
	"github.com/caddy-realtime/realtime/fallback"
	"github.com/caddy-realtime/realtime/internal/hub"
	"github.com/caddy-realtime/realtime/internal/metrics"
	"github.com/caddy-realtime/realtime/sse"
	"github.com/caddy-realtime/realtime/ws"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// serveSubscribe serves one subscription over the transport the request
// asks for: checks, then a lease on a hub session, then the transport.
func (h *Endpoint) serveSubscribe(w http.ResponseWriter, r *http.Request) error {
	channels, err := h.channelsOf(r)
	if err != nil {
		return err
	}
	claims, err := h.authorizeSubscribe(r, channels)
	if err != nil {
		return err
	}
	transport := transportOf(r)
	from, err := hub.ParseFrom(cursorOf(r, transport), channels)
	if err != nil {
		return badRequest("%v", err)
	}
	rewind, err := h.rewindOf(r, channels)
	if err != nil {
		return err
	}
	from.Rewind(rewind)
	client := hub.Client{Transport: transport}
	if claims != nil {
		client.Sub = claims.Sub
	}
	l, err := h.lease(r, channels, client, from)
	if l == nil {
		return err // nil: the client left while its channels were subscribed
	}
	// over HTTP/2 and HTTP/3 a WebSocket is a stream of this request
	liftDeadlines(w, r)
	switch transport {
	case "ws":
		err = h.serveWebSocket(w, r, l, claims)
	case "sse":
		err = h.serveSSE(w, r, l)
	default:
		err = fallback.Serve(r.Context(), w, l.session, fallback.Options{
			Timeout:  h.longpollTimeout,
			Shutdown: h.ctx,
		})
	}
	if !errors.Is(err, errDetached) {
		l.end(err)
	}
	return nil
}

// transportOf is the transport r asks for.
func transportOf(r *http.Request) string {
	switch {
	case ws.IsUpgrade(r):
		return "ws"
	case wantsSSE(r):
		return "sse"
	}
	return "longpoll"
}

// rewindOf is, per channel, how many of its newest messages the client
// gets first when it has no cursor: ?rewind=<n>, capped by the channel's
// rule, or the rule's rewind when the client does not ask.
func (h *Endpoint) rewindOf(r *http.Request, channels []string) ([]int, error) {
	q := r.URL.Query()
	asked := q.Has("rewind")
	requested := 0
	if asked {
		v := q.Get("rewind")
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, badRequest("invalid rewind %q: want a number of messages, 0 or more", truncate(v, 32))
		}
		requested = n
	}
	out := make([]int, len(channels))
	for i, c := range channels {
		out[i] = h.rules.Match(c).RewindFor(requested, asked)
	}
	return out, nil
}

// cursorOf is the client's cursor: Last-Event-ID (SSE; it wins) or
// ?last_event_id=.
func cursorOf(r *http.Request, transport string) string {
	if v := r.Header.Get("Last-Event-ID"); v != "" && transport == "sse" {
		return v
	}
	return r.URL.Query().Get("last_event_id")
}

// errDetached is what a transport's serve returns once its stream left
// the request, taking its lease along.
var errDetached = errors.New("detached")

func (h *Endpoint) serveSSE(w http.ResponseWriter, r *http.Request, l *lease) error {
	opts := sse.StreamOptions{
		Heartbeat:      h.heartbeat,
		Retry:          retryHint,
		JSON:           r.URL.Query().Get("format") == "json",
		Shutdown:       h.ctx,
		ShutdownJitter: shutdownJitter,
		DirectWrites:   h.directWrites,
	}
	if r.ProtoMajor == 1 && r.ProtoMinor >= 1 && r.Method == http.MethodGet {
		// over HTTP/1.1 the stream leaves the request goroutine (see
		// sse.StreamOptions.Detach): far less memory per idle stream
		if _, iw := caddyhttp.IdleTimeoutsFromContext(r.Context()); iw != nil {
			opts.WriteTimeout = iw.Deadline.Timeout
		}
		// the handler's Cleanup waits for them to send their retry hint
		opts.Detach = l.detach(&h.streams)
	}
	if opts.Detach == nil {
		// in place (HTTP/2, HTTP/3): cheaper write deadlines
		if beneath, iw := beneathIdleWriter(w, r); beneath != nil {
			opts.BeneathIdle, opts.IdleTimeout = beneath, iw.Deadline.Timeout
		}
	}
	err := sse.ServeStream(r.Context(), w, l.session, opts)
	if errors.Is(err, sse.ErrDetached) {
		return errDetached
	}
	return err
}

func (h *Endpoint) serveWebSocket(w http.ResponseWriter, r *http.Request, l *lease, claims *auth.Claims) error {
	st := h.conns
	// the hub owns hub WebSocket connections: they stay open across a
	// reload that keeps the hub's configuration, and end when the hub
	// closes (with 1001), so they do not follow the handler's shutdown
	err := ws.Serve(context.Background(), w, r, l.session, ws.Options{
		Heartbeat:   h.heartbeat,
		MessageSize: h.limits.MessageSize,
		FrameRate:   wsFrameRate,
		FrameBurst:  wsFrameBurst,
		OnLimit:     func() { metrics.Refuse("limit") },
		Publish:     h.wsPublisher(claims),
		Logger:      h.logger,
		OnUpgrade: func(c io.Closer) {
			st.TrackConn(c)
			l.onEnd = func() { st.UntrackConn(c) }
		},
		// a hijacked connection leaves the request goroutine (see
		// ws.Options.Detach): far less memory per idle connection
		Detach:       l.detach(nil),
		DirectWrites: h.directWrites,
	})
	if errors.Is(err, ws.ErrDetached) {
		return errDetached
	}
	return err
}

// lease is what one subscription holds until it ends: its admission
// slot, its hub session and its place in the connection gauge. A stream
// that outlives its request (detached) takes the lease along; whichever
// goroutine serves the subscription last ends it, once.
type lease struct {
	transport string
	session   *hub.Session
	release   func() // the admission slot
	gauge     prometheus.Gauge
	onEnd     func() // set by the transport, or nil
	logger    *zap.Logger
	once      sync.Once
}

// lease admits a subscription and opens its hub session.
func (h *Endpoint) lease(r *http.Request, channels []string, client hub.Client, from hub.From) (*lease, error) {
	release, err := h.admit(r)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	ss, err := h.hub.Subscribe(ctx, channels, client, from)
	if err != nil {
		release()
		if ctx.Err() != nil {
			return nil, nil
		}
		return nil, refused(http.StatusServiceUnavailable, "", "subscribing failed: %v", err)
	}
	g := metrics.Connections(client.Transport)
	g.Inc()
	return &lease{transport: client.Transport, session: ss, release: release, gauge: g, logger: h.logger}, nil
}

// detach is a transport's Detach option: the rest of the stream runs on
// a goroutine of its own, counted in wg (when not nil), which ends the
// lease.
func (l *lease) detach(wg *sync.WaitGroup) func(serve func() error) {
	return func(serve func() error) {
		if wg != nil {
			wg.Add(1)
		}
		go func() {
			if wg != nil {
				defer wg.Done()
			}
			l.end(serve())
		}()
	}
}

// end releases everything the subscription held, and logs, at debug
// level, why it ended abnormally.
func (l *lease) end(err error) {
	l.once.Do(func() {
		if l.onEnd != nil {
			l.onEnd()
		}
		l.session.Close()
		l.gauge.Dec()
		l.release()
		if err != nil && !errors.Is(err, hub.ErrSlowConsumer) && !errors.Is(err, hub.ErrHubClosed) && !errors.Is(err, hub.ErrDisconnected) {
			if c := l.logger.Check(zap.DebugLevel, "subscription ended"); c != nil {
				c.Write(zap.String("transport", l.transport), zap.Error(err))
			}
		}
	})
}

// wantsSSE reports whether the Accept header includes text/event-stream.
func wantsSSE(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err == nil && mt == "text/event-stream" {
				return true
			}
		}
	}
	return false
}
