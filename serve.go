package realtime

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/caddy-realtime/realtime/client"
	"github.com/caddy-realtime/realtime/fallback"
	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/hub"
	"github.com/caddy-realtime/realtime/ws"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/gorilla/websocket"
	"go.uber.org/zap"
)

// validChannel reports whether name is 1 to 200 characters from
// A-Z a-z 0-9 _ - . : @ /.
func validChannel(name string) bool {
	if len(name) == 0 || len(name) > 200 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '_', c == '-', c == '.', c == ':', c == '@', c == '/':
		default:
			return false
		}
	}
	return true
}

// badRequest is a 400 refusal with a reason.
func badRequest(format string, args ...any) error {
	return refused(http.StatusBadRequest, "bad_request", format, args...)
}

// channelsOf returns the validated `channel` query parameters of r.
func (h *Handler) channelsOf(r *http.Request) ([]string, error) {
	chans := r.URL.Query()["channel"]
	if len(chans) == 0 {
		return nil, badRequest("missing channel: add ?channel=<name>")
	}
	if len(chans) > h.Limits.Channels {
		return nil, refused(http.StatusBadRequest, "limit", "too many channels: %d, the limit is %d", len(chans), h.Limits.Channels)
	}
	seen := make(map[string]bool, len(chans))
	out := chans[:0:0]
	for _, c := range chans {
		if !validChannel(c) {
			return nil, badRequest("invalid channel name %q: use 1 to 200 characters from A-Z a-z 0-9 _ - . : @ /", truncate(c, 64))
		}
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
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

func isGet(r *http.Request) bool { return r.Method == http.MethodGet || r.Method == http.MethodHead }

// serveHub answers every request the hub's route matches.
func (h *Handler) serveHub(w http.ResponseWriter, r *http.Request) error {
	switch {
	case isGet(r) && strings.HasSuffix(r.URL.Path, "/realtime.js"):
		client.Serve(w, r, false)
		return nil
	case isGet(r) && strings.HasSuffix(r.URL.Path, "/realtime.mjs"):
		client.Serve(w, r, true)
		return nil
	}
	if err := h.origins.Check(r); err != nil {
		return fromAuthError(err)
	}
	if h.origins.CORS(w, r) {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if h.tickets != nil && h.tickets.issuePath != "" && r.URL.Path == h.tickets.issuePath {
		return h.serveIssue(w, r)
	}
	switch r.Method {
	case http.MethodOptions:
		w.WriteHeader(http.StatusNoContent)
		return nil
	case http.MethodPost:
		return h.servePublish(w, r)
	case http.MethodGet, http.MethodHead:
		return h.serveSubscribe(w, r)
	case http.MethodConnect:
		if ws.IsUpgrade(r) { // WebSocket over HTTP/2 or HTTP/3
			return h.serveSubscribe(w, r)
		}
	}
	w.Header().Set("Allow", "GET, POST, OPTIONS")
	return refused(http.StatusMethodNotAllowed, "bad_request", "method %s not allowed: GET subscribes, POST publishes", r.Method)
}

func (h *Handler) servePublish(w http.ResponseWriter, r *http.Request) error {
	channel := r.URL.Query().Get("channel")
	if !validChannel(channel) {
		return badRequest("invalid or missing channel %q: publish to ?channel=<name>", truncate(channel, 64))
	}
	event := r.URL.Query().Get("event")
	if strings.HasPrefix(event, hub.ReservedPrefix) {
		return badRequest("event names starting with \"realtime.\" are reserved")
	}
	if err := h.authorizePublish(r, channel); err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, h.Limits.MessageSize+1))
	if err != nil {
		return badRequest("reading body: %v", err)
	}
	if int64(len(body)) > h.Limits.MessageSize {
		return refused(http.StatusRequestEntityTooLarge, "limit", "message exceeds message_size (%d bytes)", h.Limits.MessageSize)
	}
	id, err := h.state.hub.Publish(r.Context(), channel, event, body, broker.SourceHTTP)
	if err != nil {
		if errors.Is(err, broker.ErrUnavailable) {
			return refused(http.StatusServiceUnavailable, "", "publishing failed: %v", err)
		}
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	w.Header().Set("Content-Type", "application/json")
	_, err = fmt.Fprintf(w, "{\"id\":%q}\n", id)
	return err
}

// authorizePublish lets a request publish with the publish key (or, once
// tickets are on, a ticket with publish rights on channel).
func (h *Handler) authorizePublish(r *http.Request, channel string) error {
	auth := r.Header.Get("Authorization")
	token, isBearer := strings.CutPrefix(auth, "Bearer ")
	if h.PublishKey != "" && isBearer && constantTimeEqual(token, h.PublishKey) {
		return nil
	}
	if h.tickets != nil {
		claims, err := h.verifyTicket(r)
		if err != nil {
			return err
		}
		if claims != nil {
			if !claims.CanPublish(channel) {
				return refused(http.StatusForbidden, "scope", "ticket does not allow publishing to %q", channel)
			}
			return nil
		}
	}
	if h.PublishKey == "" && h.tickets == nil {
		return refused(http.StatusForbidden, "ticket", "publishing over HTTP is off: set publish_key or ticket")
	}
	if auth == "" {
		switch {
		case h.PublishKey == "":
			return refused(http.StatusUnauthorized, "ticket", "missing ticket: pass ?ticket=<ticket> or Authorization: Bearer <ticket> with publish rights")
		case h.tickets != nil:
			return refused(http.StatusUnauthorized, "ticket", "missing credentials: send Authorization: Bearer <publish_key> or a ticket with publish rights")
		}
		return refused(http.StatusUnauthorized, "ticket", "missing publish key: send Authorization: Bearer <publish_key>")
	}
	return refused(http.StatusUnauthorized, "ticket", "invalid publish key")
}

// serveSubscribe serves one subscription over the transport the request
// asks for.
func (h *Handler) serveSubscribe(w http.ResponseWriter, r *http.Request) error {
	channels, err := h.channelsOf(r)
	if err != nil {
		return err
	}
	claims, err := h.authorizeSubscribe(r, channels)
	if err != nil {
		return err
	}
	transport := "longpoll"
	switch {
	case ws.IsUpgrade(r):
		transport = "ws"
	case wantsSSE(r):
		transport = "sse"
	}
	release, err := h.admit(r)
	if err != nil {
		return err
	}
	// a stream that leaves its request (detached) takes over what the
	// defers below would do, and runs it when it ends
	detached := false
	defer func() {
		if !detached {
			release()
		}
	}()

	res, err := h.parseResume(r, transport, channels)
	if err != nil {
		return err
	}
	ctx := r.Context()
	sub, err := h.state.hub.Subscribe(ctx, channels)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return refused(http.StatusServiceUnavailable, "", "subscribing failed: %v", err)
	}
	defer func() {
		if !detached {
			h.state.hub.Unsubscribe(sub)
		}
	}()
	sess := res.session(ctx, h, sub)

	switch transport {
	case "ws":
		metrics.connWS.Inc()
		var conn *websocket.Conn
		end := func() {
			if conn != nil {
				h.state.untrackConn(conn)
			}
			metrics.connWS.Dec()
		}
		// over HTTP/2 and HTTP/3 the WebSocket is a stream of this request
		liftDeadlines(w, r)
		// the hub owns hub WebSocket connections: they stay open across a
		// reload that keeps the hub's configuration, so they follow the
		// state's lifetime, not the handler's
		err = ws.Serve(h.state.hub.Context(), w, r, sess, ws.Options{
			Heartbeat:   h.heartbeat,
			MessageSize: h.Limits.MessageSize,
			FrameRate:   wsFrameRate,
			FrameBurst:  wsFrameBurst,
			OnLimit:     func() { refuse("limit") },
			Publish:     h.wsPublisher(claims),
			Observer:    observer{},
			Logger:      h.logger,
			OnUpgrade: func(c *websocket.Conn) {
				conn = c
				h.state.trackConn(c)
			},
			// a hijacked connection leaves the request goroutine (see
			// ws.Options.Detach): far less memory per idle connection
			Detach: func(serve func() error) {
				detached = true
				log := h.logger
				go func() {
					err := serve()
					end()
					h.state.hub.Unsubscribe(sub)
					release()
					logEnd(log, "ws", err)
				}()
			},
		})
		if detached {
			return nil
		}
		end()
	case "sse":
		metrics.connSSE.Inc()
		liftDeadlines(w, r)
		opts := hub.SSEOptions{
			Heartbeat:      h.heartbeat,
			Retry:          retryHint,
			JSON:           r.URL.Query().Get("format") == "json",
			Observer:       observer{},
			Shutdown:       h.ctx,
			ShutdownJitter: shutdownJitter,
		}
		if r.ProtoMajor == 1 && r.ProtoMinor >= 1 && r.Method == http.MethodGet {
			// over HTTP/1.1 the stream leaves the request goroutine (see
			// hub.SSEOptions.Detach): far less memory per idle stream
			if _, iw := caddyhttp.IdleTimeoutsFromContext(ctx); iw != nil {
				opts.WriteTimeout = iw.Deadline.Timeout
			}
			log := h.logger
			opts.Detach = func(serve func() error) {
				detached = true
				h.streams.Add(1)
				go func() {
					defer h.streams.Done()
					err := serve()
					metrics.connSSE.Dec()
					h.state.hub.Unsubscribe(sub)
					release()
					logEnd(log, "sse", err)
				}()
			}
		}
		err = hub.ServeSSE(ctx, w, sess, opts)
		if detached {
			return nil
		}
		metrics.connSSE.Dec()
	default:
		metrics.connPoll.Inc()
		defer metrics.connPoll.Dec()
		liftDeadlines(w, r)
		err = fallback.Serve(ctx, w, sess, fallback.Options{
			Timeout:  time.Duration(h.LongpollTimeout),
			Observer: observer{},
			Shutdown: h.ctx.Done(),
		})
	}
	logEnd(h.logger, transport, err)
	return nil
}

// logEnd logs, at debug level, why a subscription ended abnormally.
func logEnd(log *zap.Logger, transport string, err error) {
	if err != nil && !errors.Is(err, hub.ErrSlowConsumer) && !errors.Is(err, hub.ErrHubClosed) {
		if c := log.Check(zap.DebugLevel, "subscription ended"); c != nil {
			c.Write(zap.String("transport", transport), zap.Error(err))
		}
	}
}

const (
	// retryHint is the reconnection delay suggested to SSE clients.
	retryHint = 2 * time.Second
	// shutdownJitter spreads the reconnections of the SSE clients of a
	// reloading or stopping server over this much more time.
	shutdownJitter = 3 * time.Second
	// wsFrameRate and wsFrameBurst bound what one hub WebSocket client
	// may send: plenty for chat, not enough to flood the bus.
	wsFrameRate  = 20
	wsFrameBurst = 50
)

// constantTimeEqual compares secrets without leaking their length of
// common prefix through timing.
func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
