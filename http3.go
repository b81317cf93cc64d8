package realtime

import (
	"fmt"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// quicIdleTimeout is how long browsers keep an idle QUIC connection: a
// stream silent that long over HTTP/3 dies with its connection.
const quicIdleTimeout = 30 * time.Second

// servesHTTP3 reports whether srv serves HTTP/3: it has TLS and h3 among
// its protocols (Caddy's default).
func servesHTTP3(srv *caddyhttp.Server) bool {
	if srv == nil || len(srv.TLSConnPolicies) == 0 {
		return false
	}
	if slices.Contains(srv.Protocols, "h3") {
		return true
	}
	for _, p := range srv.ListenProtocols {
		if slices.Contains(p, "h3") {
			return true
		}
	}
	return false
}

// idleOverHTTP3 returns what in this configuration would let a quiet
// stream sit idle for quicIdleTimeout or more, so that a browser on
// HTTP/3 drops it: heartbeats off or too rare, a long-poll that waits
// too long. The defaults (15 s, 25 s) stay below.
func idleOverHTTP3(heartbeat, longpoll time.Duration, hub bool) []string {
	var out []string
	switch {
	case heartbeat <= 0:
		out = append(out, "heartbeat is off: browsers close an HTTP/3 (QUIC) connection idle for 30s, so a quiet event stream or WebSocket over HTTP/3 dies; set a heartbeat below 30s")
	case heartbeat >= quicIdleTimeout:
		out = append(out, fmt.Sprintf("heartbeat %v is not below 30s: browsers close an HTTP/3 (QUIC) connection idle for 30s, so a quiet event stream or WebSocket over HTTP/3 dies; set it below 30s", heartbeat))
	}
	if hub && longpoll >= quicIdleTimeout {
		out = append(out, fmt.Sprintf("longpoll_timeout %v is not below 30s: browsers close an HTTP/3 (QUIC) connection idle for 30s, so a waiting long-poll over HTTP/3 fails; set it below 30s", longpoll))
	}
	return out
}
