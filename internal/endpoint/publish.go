package endpoint

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddy-realtime/realtime/auth"
	"github.com/caddy-realtime/realtime/client"
	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/hub"
	"github.com/caddy-realtime/realtime/internal/rules"
	"github.com/caddy-realtime/realtime/replay"
	"github.com/caddy-realtime/realtime/ws"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// badRequest is a 400 refusal with a reason.
func badRequest(format string, args ...any) error {
	return refused(http.StatusBadRequest, "bad_request", format, args...)
}

// channelsOf returns the validated `channel` query parameters of r.
func (h *Endpoint) channelsOf(r *http.Request) ([]string, error) {
	chans := r.URL.Query()["channel"]
	if len(chans) == 0 {
		return nil, badRequest("missing channel: add ?channel=<name>")
	}
	if len(chans) > h.limits.Channels {
		return nil, refused(http.StatusBadRequest, "limit", "too many channels: %d, the limit is %d", len(chans), h.limits.Channels)
	}
	seen := make(map[string]bool, len(chans))
	out := chans[:0:0]
	for _, c := range chans {
		if !replay.ValidChannel(c) {
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

func isGet(r *http.Request) bool { return r.Method == http.MethodGet || r.Method == http.MethodHead }

// serveHub answers every request the hub's route matches.
func (h *Endpoint) serveHub(w http.ResponseWriter, r *http.Request) error {
	switch {
	case isGet(r) && strings.HasSuffix(r.URL.Path, "/realtime.js"):
		client.Serve(w, r, false)
		return nil
	case isGet(r) && strings.HasSuffix(r.URL.Path, "/realtime.mjs"):
		client.Serve(w, r, true)
		return nil
	case isGet(r) && strings.HasSuffix(r.URL.Path, "/realtime.d.ts"):
		client.ServeTypes(w, r)
		return nil
	}
	if err := h.origins.Check(r); err != nil {
		return fromAuthError(err)
	}
	if h.origins.CORS(w, r) {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if h.tickets != nil && h.tickets.IssuePath != "" && r.URL.Path == h.tickets.IssuePath {
		return h.serveIssue(w, r)
	}
	if isPresence(r) {
		return h.servePresence(w, r)
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

func (h *Endpoint) servePublish(w http.ResponseWriter, r *http.Request) error {
	channel := r.URL.Query().Get("channel")
	if !replay.ValidChannel(channel) {
		return badRequest("invalid or missing channel %q: publish to ?channel=<name>", truncate(channel, 64))
	}
	event := r.URL.Query().Get("event")
	if err := hub.CheckEvent(event); err != nil {
		return badRequest("invalid event %q: %v", truncate(event, 64), err)
	}
	if err := h.authorizePublish(r, channel); err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, h.limits.MessageSize+1))
	if err != nil {
		return badRequest("reading body: %v", err)
	}
	if int64(len(body)) > h.limits.MessageSize {
		return refused(http.StatusRequestEntityTooLarge, "limit", "message exceeds message_size (%d bytes)", h.limits.MessageSize)
	}
	id, err := h.hub.Publish(r.Context(), channel, event, body, broker.SourceHTTP)
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
// tickets are on, a ticket with publish rights on channel), as far as
// the channel's rule allows. What the rule refuses is refused before a
// ticket is verified, so that a single-use ticket is not spent on it.
func (h *Endpoint) authorizePublish(r *http.Request, channel string) error {
	rule := h.rules.Match(channel)
	if rule.Publish == rules.PublishOff {
		return refused(http.StatusForbidden, "scope", "publishing to %q over HTTP is off (channels %s { publish off }): its messages come through Redis", channel, rule.Pattern)
	}
	header := r.Header.Get("Authorization")
	token := auth.Bearer(header)
	if h.publishKey != "" && token != "" && constantTimeEqual(token, h.publishKey) {
		if rule.Publish == rules.PublishTicket {
			return refused(http.StatusForbidden, "scope", "channel %q takes publishes from tickets only (channels %s { publish ticket }), not the publish key", channel, rule.Pattern)
		}
		return nil
	}
	if rule.Publish == rules.PublishKey {
		if header == "" {
			return refused(http.StatusUnauthorized, "ticket", "missing publish key: channel %q takes publishes with the publish key only (channels %s { publish key }): send Authorization: Bearer <publish_key>", channel, rule.Pattern)
		}
		return refused(http.StatusUnauthorized, "ticket", "invalid publish key: channel %q takes publishes with the publish key only (channels %s { publish key })", channel, rule.Pattern)
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
	if h.publishKey == "" && h.tickets == nil {
		return refused(http.StatusForbidden, "ticket", "publishing over HTTP is off: set publish_key or ticket")
	}
	if header == "" {
		switch {
		case h.publishKey == "":
			return refused(http.StatusUnauthorized, "ticket", "missing ticket: pass ?ticket=<ticket> or Authorization: Bearer <ticket> with publish rights")
		case h.tickets != nil && rule.Publish != rules.PublishTicket:
			return refused(http.StatusUnauthorized, "ticket", "missing credentials: send Authorization: Bearer <publish_key> or a ticket with publish rights")
		case h.tickets != nil:
			return refused(http.StatusUnauthorized, "ticket", "missing ticket: channel %q takes publishes from tickets with publish rights only", channel)
		}
		return refused(http.StatusUnauthorized, "ticket", "missing publish key: send Authorization: Bearer <publish_key>")
	}
	return refused(http.StatusUnauthorized, "ticket", "invalid publish key")
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
