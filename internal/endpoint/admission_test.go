package endpoint

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// per_ip counts Caddy's client IP, IPv6 per /64.
func TestClientKey(t *testing.T) {
	tests := []struct {
		remote, clientIP, want string
	}{
		{"192.0.2.7:5000", "", "192.0.2.7"},
		{"10.0.0.1:5000", "203.0.113.9", "203.0.113.9"}, // behind trusted_proxies
		{"[2001:db8:1:2:3:4:5:6]:443", "", "2001:db8:1:2::/64"},
		{"10.0.0.1:5000", "2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"},
		{"[::ffff:192.0.2.7]:1", "", "192.0.2.7"},
		{"[fe80::1%eth0]:1", "", "fe80::/64"},
		{"not an address", "", "not an address"},
	}
	for _, tc := range tests {
		r := httptest.NewRequest("GET", "http://example.com/hub", nil)
		r.RemoteAddr = tc.remote
		vars := map[string]any{}
		if tc.clientIP != "" {
			vars[caddyhttp.ClientIPVarKey] = tc.clientIP
		}
		r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, vars))
		if got := clientKey(r); got != tc.want {
			t.Errorf("remote %s, client_ip %q: key %q, want %q", tc.remote, tc.clientIP, got, tc.want)
		}
	}
}
