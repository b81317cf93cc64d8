package realtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/caddy-realtime/realtime/auth"
	"github.com/caddy-realtime/realtime/internal/node"
	"github.com/caddy-realtime/realtime/internal/presence"
	"github.com/caddy-realtime/realtime/internal/rules"
	"github.com/caddy-realtime/realtime/replay"
	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI is the module admin.api.realtime: routes on Caddy's admin
// endpoint to see this node's channels and to end subscriptions on every
// node. It is reachable only where the admin endpoint is, with its
// origin checks; Caddy loads it by itself, with no configuration.
//
//	GET  /realtime/channels[?match=<glob>&limit=<n>]
//	GET  /realtime/channels/<name>  (with its presence, when tracked)
//	POST /realtime/disconnect  {"sub": "u1"} or {"channel": "c"} (both: that sub on that channel)
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.realtime",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the routes of the realtime admin API.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/realtime/channels", Handler: caddy.AdminHandlerFunc(a.handleChannels)},
		{Pattern: "/realtime/channels/", Handler: caddy.AdminHandlerFunc(a.handleChannel)},
		{Pattern: "/realtime/disconnect", Handler: caddy.AdminHandlerFunc(a.handleDisconnect)},
	}
}

// defaultAdminLimit bounds the channels one listing returns.
const defaultAdminLimit = 10000

// channelSummary is one channel of GET /realtime/channels.
type channelSummary struct {
	Channel     string         `json:"channel"`
	Subscribers int            `json:"subscribers"`
	Transports  map[string]int `json:"transports"`
}

// handleChannels lists the channels this node holds, by name, with their
// subscribers per transport.
func (a *AdminAPI) handleChannels(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return methodNotAllowed(w, http.MethodGet)
	}
	q := r.URL.Query()
	match := q.Get("match")
	if match != "" {
		if err := rules.CheckPattern(match); err != nil {
			return apiError(http.StatusBadRequest, "match: %v", err)
		}
	}
	limit := defaultAdminLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return apiError(http.StatusBadRequest, "limit %q: want a positive number", v)
		}
		limit = n
	}
	byName := make(map[string]*channelSummary)
	eachNode(func(n *node.Node) {
		infos, _ := n.Hub.Channels(0)
		for _, ci := range infos {
			if match != "" && !auth.Glob(match, ci.Name) {
				continue
			}
			cs := byName[ci.Name]
			if cs == nil {
				cs = &channelSummary{Channel: ci.Name, Transports: make(map[string]int)}
				byName[ci.Name] = cs
			}
			for tr, k := range ci.Subscribers {
				cs.Transports[tr] += k
				cs.Subscribers += k
			}
		}
	})
	list := make([]channelSummary, 0, len(byName))
	for _, cs := range byName {
		list = append(list, *cs)
	}
	slices.SortFunc(list, func(a, b channelSummary) int { return strings.Compare(a.Channel, b.Channel) })
	truncated := len(list) > limit
	if truncated {
		list = list[:limit]
	}
	return writeJSON(w, struct {
		Channels  []channelSummary `json:"channels"`
		Truncated bool             `json:"truncated"`
	}{list, truncated})
}

// channelDetail is the answer of GET /realtime/channels/<name>.
type channelDetail struct {
	Channel     string         `json:"channel"`
	Subscribers int            `json:"subscribers"`
	Transports  map[string]int `json:"transports"`
	// Subscribed: this node holds the channel at its broker (it has
	// subscribers, or keeps the channel for resume).
	Subscribed bool   `json:"subscribed"`
	LastID     string `json:"last_id"`
	Cached     int    `json:"cached"`
	// Rule is the pattern of the channels rule that applies, "" for the
	// hub's settings.
	Rule string `json:"rule"`
	// Presence is the channel's presence on every node, when its rule
	// tracks it.
	Presence *presence.Snapshot `json:"presence,omitempty"`
}

// handleChannel shows one channel on this node.
func (a *AdminAPI) handleChannel(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return methodNotAllowed(w, http.MethodGet)
	}
	name := strings.TrimPrefix(r.URL.Path, "/realtime/channels/")
	if !replay.ValidChannel(name) {
		return apiError(http.StatusBadRequest, "invalid channel name %q: use 1 to 200 characters from A-Z a-z 0-9 _ - . : @ /", truncated(name, 64))
	}
	d := channelDetail{Channel: name, Transports: make(map[string]int)}
	var presenceErr error
	eachNode(func(n *node.Node) {
		ci, held := n.Hub.Channel(name)
		for tr, k := range ci.Subscribers {
			d.Transports[tr] += k
			d.Subscribers += k
		}
		if held {
			d.Subscribed = true
			if ci.LastID != "" {
				d.LastID = ci.LastID
			}
		}
		d.Cached = max(d.Cached, n.Cached(name))
		rule := n.Rules.Match(name)
		if rule.Pattern != "" {
			d.Rule = rule.Pattern
		}
		if rule.Presence && n.Presence != nil && d.Presence == nil {
			if snap, err := n.Presence.Snapshot(r.Context(), name); err == nil {
				d.Presence = &snap
			} else {
				presenceErr = err
			}
		}
	})
	if presenceErr != nil && d.Presence == nil {
		return apiError(http.StatusServiceUnavailable, "reading the presence of %s: %v", name, presenceErr)
	}
	return writeJSON(w, d)
}

// disconnectRequest is the body of POST /realtime/disconnect.
type disconnectRequest struct {
	Sub     string `json:"sub"`
	Channel string `json:"channel"`
}

// maxSubLen bounds the sub of a disconnect request.
const maxSubLen = 1024

// handleDisconnect ends the matching subscriptions on every node.
func (a *AdminAPI) handleDisconnect(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return methodNotAllowed(w, http.MethodPost)
	}
	var req disconnectRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return apiError(http.StatusBadRequest, `reading the request: %v (want {"sub": "..."} or {"channel": "..."})`, err)
	}
	switch {
	case req.Sub == "" && req.Channel == "":
		return apiError(http.StatusBadRequest, `nothing to disconnect: give "sub", "channel" or both`)
	case req.Channel != "" && !replay.ValidChannel(req.Channel):
		return apiError(http.StatusBadRequest, "invalid channel name %q", truncated(req.Channel, 64))
	case len(req.Sub) > maxSubLen:
		return apiError(http.StatusBadRequest, "sub longer than %d bytes", maxSubLen)
	}
	here := 0
	var errs []error
	eachNode(func(n *node.Node) {
		k, err := n.Hub.DisconnectEverywhere(r.Context(), req.Sub, req.Channel)
		here += k
		if err != nil {
			errs = append(errs, err)
		}
	})
	if err := errors.Join(errs...); err != nil {
		return apiError(http.StatusServiceUnavailable, "disconnected %d subscriptions on this node, but the other nodes could not be told: %v", here, err)
	}
	return writeJSON(w, struct {
		Disconnected int `json:"disconnected"`
	}{here})
}

// eachNode calls f with every hub node of the loaded configurations.
func eachNode(f func(*node.Node)) {
	nodes.Range(func(_, v any) bool {
		if n, ok := v.(*node.Node); ok && n.Hub != nil {
			f(n)
		}
		return true
	})
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

func apiError(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

func methodNotAllowed(w http.ResponseWriter, allow string) error {
	w.Header().Set("Allow", allow)
	return apiError(http.StatusMethodNotAllowed, "method not allowed: use %s", allow)
}

func truncated(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// Interface guard
var _ caddy.AdminRouter = (*AdminAPI)(nil)
