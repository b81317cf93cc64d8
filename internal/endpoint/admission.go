package endpoint

import (
	"net"
	"net/http"
	"sync"
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
	ip, _, splitErr := net.SplitHostPort(r.RemoteAddr)
	if splitErr != nil {
		ip = r.RemoteAddr
	}
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
