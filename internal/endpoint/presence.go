package endpoint

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/caddy-realtime/realtime/auth"
	"github.com/caddy-realtime/realtime/internal/presence"
	"github.com/caddy-realtime/realtime/replay"
)

// Presence answers presence requests: a channel's members on every node.
type Presence interface {
	Snapshot(ctx context.Context, channel string) (presence.Snapshot, error)
}

// isPresence reports whether r asks for a channel's presence: a GET whose
// path ends in /presence.
func isPresence(r *http.Request) bool {
	return isGet(r) && strings.HasSuffix(r.URL.Path, "/presence")
}

// servePresence answers GET <hub>/presence?channel=c with the channel's
// connections and members, for the publish key or a ticket (or the
// app's approval) covering the channel.
func (h *Endpoint) servePresence(w http.ResponseWriter, r *http.Request) error {
	channel := r.URL.Query().Get("channel")
	if !replay.ValidChannel(channel) {
		return badRequest("invalid or missing channel %q: ask for ?channel=<name>", truncate(channel, 64))
	}
	rule := h.rules.Match(channel)
	if h.presence == nil || !rule.Presence {
		return refused(http.StatusNotFound, "bad_request", "no presence for channel %q: its channels rule has no presence", channel)
	}
	token := auth.Bearer(r.Header.Get("Authorization"))
	if h.publishKey == "" || token == "" || !constantTimeEqual(token, h.publishKey) {
		if _, err := h.authorizeSubscribe(r, []string{channel}); err != nil {
			return err
		}
	}
	snap, err := h.presence.Snapshot(r.Context(), channel)
	if err != nil {
		return refused(http.StatusServiceUnavailable, "", "reading presence failed: %v", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(snap)
}
