package integration_test

import (
	"testing"

	"github.com/caddy-realtime/realtime/integration_test/harness"
)

// perIPSite allows two open subscriptions per client; the global options
// trust a proxy on loopback, or do not.
const perIPSite = `
{
	{{.Servers}}
}
:{{.HTTPPort}} {
	realtime /hub* {
		hub
		limits {
			per_ip 2
		}
	}
}
`

// Hostile clients: per_ip counts Caddy's client IP, the one its
// trusted_proxies setting yields (so users behind a load balancer do not
// share one budget, and a client cannot forge one when no proxy is
// trusted), with IPv6 clients counted per /64.
func TestPerIPCountsClientIP(t *testing.T) {
	t.Parallel()
	t.Run("behind a trusted proxy", func(t *testing.T) {
		t.Parallel()
		c := harness.StartCaddy(t, perIPSite, harness.Var("Servers", "servers {\n\t\ttrusted_proxies static 127.0.0.0/8\n\t}"))
		// each allowed one is held open; a refused one holds nothing
		for _, tc := range []struct {
			xff  string
			want int
		}{
			{"203.0.113.5", 200},
			{"203.0.113.5", 200},
			{"203.0.113.5", 503}, // its two are open
			{"203.0.113.6", 200}, // another user behind the same proxy
			{"2001:db8:0:1::1", 200},
			{"2001:db8:0:1::2", 200},
			{"2001:db8:0:1:ffff::3", 503}, // the same /64
			{"2001:db8:0:2::1", 200},      // another /64
		} {
			if tc.want == 200 {
				subscribe(t, c, "/hub?channel=news", sseHeader("X-Forwarded-For", tc.xff))
				continue
			}
			r := do(t, "GET", c.URL("/hub?channel=news"), sseHeader("X-Forwarded-For", tc.xff), "")
			expect(t, "X-Forwarded-For "+tc.xff, r, tc.want, "")
		}
	})
	t.Run("no trusted proxy", func(t *testing.T) {
		t.Parallel()
		c := harness.StartCaddy(t, perIPSite, harness.Var("Servers", ""))
		subscribe(t, c, "/hub?channel=news", sseHeader("X-Forwarded-For", "203.0.113.1"))
		subscribe(t, c, "/hub?channel=news", sseHeader("X-Forwarded-For", "203.0.113.2"))
		// a forged header does not buy another budget
		r := do(t, "GET", c.URL("/hub?channel=news"), sseHeader("X-Forwarded-For", "203.0.113.3"), "")
		expect(t, "a third subscription from one socket address", r, 503, "")
	})
}
