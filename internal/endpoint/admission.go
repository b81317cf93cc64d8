package endpoint

import (
	"net"
	"net/http"
	"net/netip"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// admission counts open subscriptions, in total and per client IP, to
// enforce `limits`.
type admission struct {
	mu    sync.Mutex
	total int
	perIP map[string]int
}

// admit reserves a subscription slot, or answers 503 with Retry-After.
func (h *Endpoint) admit(r *http.Request) (release func(), err error) {
	lim := h.limits
	if lim.Connections == 0 && lim.PerIP == 0 {
		return func() {}, nil
	}
	ip := clientKey(r)
	a := h.admission
	a.mu.Lock()
	if (lim.Connections > 0 && a.total >= lim.Connections) || (lim.PerIP > 0 && a.perIP[ip] >= lim.PerIP) {
		a.mu.Unlock()
		return nil, &refusal{status: http.StatusServiceUnavailable, metric: "limit", reason: "too many open subscriptions: retry later", retryAfter: true}
	}
	a.total++
	a.perIP[ip]++
	a.mu.Unlock()
	return func() {
		a.mu.Lock()
		a.total--
		if a.perIP[ip]--; a.perIP[ip] <= 0 {
			delete(a.perIP, ip)
		}
		a.mu.Unlock()
	}, nil
}

// clientKey is what per_ip counts r against: Caddy's client IP (the one
// its trusted_proxies setting yields, as {client_ip}; the socket's peer
// without it), with an IPv6 address reduced to its /64, the block one
// subscriber line usually gets whole.
func clientKey(r *http.Request) string {
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	if ip == "" {
		var err error
		if ip, _, err = net.SplitHostPort(r.RemoteAddr); err != nil {
			ip = r.RemoteAddr
		}
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	addr = addr.Unmap()
	if addr.Is4() {
		return addr.String()
	}
	prefix, _ := addr.WithZone("").Prefix(64)
	return prefix.String()
}
