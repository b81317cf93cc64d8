package endpoint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddy-realtime/realtime/auth"
	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/hub"
	"github.com/caddy-realtime/realtime/internal/metrics"
	"github.com/caddy-realtime/realtime/internal/rules"
	"github.com/caddy-realtime/realtime/replay"
	"github.com/caddy-realtime/realtime/ws"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// fromAuthError turns an auth refusal into the handler's refusal; other
// errors pass through.
func fromAuthError(err error) error {
	var ae *auth.Error
	if errors.As(err, &ae) {
		return &refusal{status: ae.Status, reason: ae.Reason, metric: ae.Kind}
	}
	return err
}

// authorizeSubscribe checks the ticket (or the app's approval) of a
// subscription or upgrade, for channels (none: a passthrough request,
// where only the ticket's validity is checked). With tickets off it
// approves and returns nil claims. The ticket's subject is set as the
// placeholder {http.realtime.sub}.
func (h *Endpoint) authorizeSubscribe(r *http.Request, channels []string) (*auth.Claims, error) {
	if h.tickets == nil {
		return nil, nil
	}
	claims, err := h.verifyTicket(r)
	if err != nil {
		return nil, err
	}
	if claims == nil {
		if h.tickets.Authorizer == nil {
			return nil, refused(http.StatusUnauthorized, "ticket", "missing ticket: pass ?ticket=<ticket> or Authorization: Bearer <ticket>")
		}
		claims, err = h.tickets.Authorizer.Authorize(r.Context(), h.forApp(r), channels)
		if err != nil {
			return nil, fromAuthError(err)
		}
	}
	if len(channels) > 0 {
		if err := claims.Cover(channels); err != nil {
			return nil, fromAuthError(err)
		}
	}
	setSubject(r, claims)
	return claims, nil
}

// forApp returns r as the app is asked about it: without the user's
// cookies and Authorization header when its Origin is allowed only by
// "origins *", whose sites may not act with the user's credentials (the
// app then sees an anonymous caller).
func (h *Endpoint) forApp(r *http.Request) *http.Request {
	if h.origins.Credentialed(r) {
		return r
	}
	anon := r.Clone(r.Context())
	anon.Header.Del("Cookie")
	anon.Header.Del("Authorization")
	return anon
}

func setSubject(r *http.Request, claims *auth.Claims) {
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok && claims != nil {
		repl.Set("http.realtime.sub", claims.Sub)
	}
}

// verifyTicket returns the claims of the ticket r presents, nil if it
// presents none.
func (h *Endpoint) verifyTicket(r *http.Request) (*auth.Claims, error) {
	token := auth.TokenFromRequest(r)
	if token == "" {
		return nil, nil
	}
	claims, err := h.tickets.Tickets.Verify(r.Context(), token)
	if err != nil {
		return nil, fromAuthError(err)
	}
	return claims, nil
}

// wsPublisher returns what handles a hub WebSocket's publish frames: nil
// (refused) unless the connection's ticket has publish rights.
func (h *Endpoint) wsPublisher(claims *auth.Claims) ws.PublishFunc {
	if claims == nil || len(claims.Publish) == 0 {
		return nil
	}
	return func(ctx context.Context, channel, event string, data []byte) (string, error) {
		switch {
		case !replay.ValidChannel(channel):
			return "", fmt.Errorf("invalid channel name %q", truncate(channel, 64))
		case hub.CheckEvent(event) != nil:
			return "", fmt.Errorf("invalid event %q: %w", truncate(event, 64), hub.CheckEvent(event))
		case !claims.CanPublish(channel):
			metrics.Refuse("scope")
			return "", fmt.Errorf("ticket does not allow publishing to %q", channel)
		}
		if rule := h.rules.Match(channel); rule.Publish == rules.PublishOff || rule.Publish == rules.PublishKey {
			metrics.Refuse("scope")
			return "", fmt.Errorf("channel %q does not take publishes from tickets (channels %s { publish %s })", channel, rule.Pattern, rule.Publish)
		}
		return h.hub.Publish(ctx, channel, event, data, broker.SourceWS)
	}
}

// serveIssue answers the built-in ticket endpoint: the app approves (or
// refuses) the caller by its cookie or login, and an approved caller gets
// a fresh ticket with the app's claims.
func (h *Endpoint) serveIssue(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return refused(http.StatusMethodNotAllowed, "bad_request", "the ticket endpoint takes POST")
	}
	var req struct {
		Channels []string `json:"channels"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		return badRequest("reading body: %v", err)
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			return badRequest("ticket request body must be JSON {\"channels\": [...]}: %v", err)
		}
	}
	if len(req.Channels) == 0 {
		req.Channels = r.URL.Query()["channel"]
	}
	for _, c := range req.Channels {
		if !replay.ValidChannel(c) {
			return badRequest("invalid channel name %q", truncate(c, 64))
		}
	}
	claims, err := h.tickets.Authorizer.AuthorizeIssue(r.Context(), h.forApp(r), req.Channels)
	if err != nil {
		return fromAuthError(err)
	}
	token, ttl, err := h.tickets.Tickets.Issue(r.Context(), claims)
	if err != nil {
		if e := fromAuthError(err); e != err {
			return e
		}
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(struct {
		Ticket    string `json:"ticket"`
		ExpiresIn int    `json:"expires_in"`
	}{token, int(ttl / time.Second)})
}

// stripTicket removes the ?ticket= parameters from r once the ticket is
// checked, so that the handlers after this one (reverse_proxy logs the
// request it sends upstream) and the upstream never see the credential.
// The rest of the query is kept as it came.
func stripTicket(r *http.Request) {
	if r.URL == nil || !r.URL.Query().Has("ticket") {
		return
	}
	parts := strings.Split(r.URL.RawQuery, "&")
	kept := parts[:0]
	for _, p := range parts {
		k, _, _ := strings.Cut(p, "=")
		if uk, err := url.QueryUnescape(k); err == nil && uk == "ticket" {
			continue
		}
		kept = append(kept, p)
	}
	if len(kept) == len(parts) {
		return
	}
	r.URL.RawQuery = strings.Join(kept, "&")
	r.URL.ForceQuery = false
	if r.RequestURI != "" {
		path, _, _ := strings.Cut(r.RequestURI, "?")
		if r.URL.RawQuery != "" {
			path += "?" + r.URL.RawQuery
		}
		r.RequestURI = path
	}
}
