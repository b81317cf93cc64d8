package realtime

import (
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
)

// Browsers close an idle QUIC connection after 30 s: the defaults keep
// streams busier than that, and a configuration that would not is
// warned about, on servers that speak HTTP/3.
func TestIdleOverHTTP3(t *testing.T) {
	tests := []struct {
		name                string
		heartbeat, longpoll time.Duration
		hub                 bool
		warnings            int
	}{
		{"defaults", DefaultHeartbeat, DefaultLongpollTimeout, true, 0},
		{"heartbeat 29s", 29 * time.Second, DefaultLongpollTimeout, true, 0},
		{"heartbeat 30s", 30 * time.Second, DefaultLongpollTimeout, true, 1},
		{"heartbeat off", 0, DefaultLongpollTimeout, false, 1},
		{"long-poll 45s", DefaultHeartbeat, 45 * time.Second, true, 1},
		{"long-poll 45s, no hub", DefaultHeartbeat, 45 * time.Second, false, 0},
		{"both", time.Minute, time.Minute, true, 2},
	}
	for _, tc := range tests {
		if got := idleOverHTTP3(tc.heartbeat, tc.longpoll, tc.hub); len(got) != tc.warnings {
			t.Errorf("%s: %d warnings %q, want %d", tc.name, len(got), got, tc.warnings)
		}
	}
	tls := caddytls.ConnectionPolicies{{}}
	for _, tc := range []struct {
		srv  *caddyhttp.Server
		want bool
	}{
		{&caddyhttp.Server{Protocols: []string{"h1", "h2", "h3"}, TLSConnPolicies: tls}, true},
		{&caddyhttp.Server{Protocols: []string{"h1", "h2"}, TLSConnPolicies: tls}, false},
		{&caddyhttp.Server{Protocols: []string{"h1", "h2", "h3"}}, false}, // cleartext: no HTTP/3
		{&caddyhttp.Server{ListenProtocols: [][]string{{"h3"}}, TLSConnPolicies: tls}, true},
		{nil, false},
	} {
		if got := servesHTTP3(tc.srv); got != tc.want {
			t.Errorf("servesHTTP3(%+v) = %v, want %v", tc.srv, got, tc.want)
		}
	}
}
