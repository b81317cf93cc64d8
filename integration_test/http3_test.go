package integration_test

import (
	"strings"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/integration_test/harness"
)

// Browsers close an HTTP/3 connection idle for 30 s. Caddy serves HTTP/3
// on HTTPS sites by default: the module's defaults keep streams busier
// than that, and a heartbeat or long-poll timeout that would not is
// warned about when the config loads (not on cleartext sites, which
// have no HTTP/3).
func TestHTTP3IdleWarning(t *testing.T) {
	t.Parallel()
	const warning = "HTTP/3 (QUIC) connection idle for 30s"
	for _, tc := range []struct {
		name, site string
		warned     bool
	}{
		{"https, defaults", "https://127.0.0.1:{{.HTTPSPort}} {\n\trealtime /hub* {\n\t\thub\n\t}\n}", false},
		{"https, heartbeat 45s", "https://127.0.0.1:{{.HTTPSPort}} {\n\trealtime /hub* {\n\t\thub\n\t\theartbeat 45s\n\t}\n}", true},
		{"https, long-poll 40s", "https://127.0.0.1:{{.HTTPSPort}} {\n\trealtime /hub* {\n\t\thub\n\t\tlongpoll_timeout 40s\n\t}\n}", true},
		{"cleartext, heartbeat 45s", ":{{.HTTPPort}} {\n\trealtime /hub* {\n\t\thub\n\t\theartbeat 45s\n\t}\n}", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := harness.StartCaddy(t, tc.site)
			// the warning comes at provision, before this line; the
			// logs are read from Caddy's output as it comes
			deadline := time.Now().Add(authWait)
			for !strings.Contains(c.Logs(), "serving initial configuration") {
				if time.Now().After(deadline) {
					t.Fatal("Caddy never logged that it serves its configuration")
				}
				time.Sleep(10 * time.Millisecond)
			}
			if got := strings.Contains(c.Logs(), warning); got != tc.warned {
				t.Fatalf("warned %v, want %v", got, tc.warned)
			}
		})
	}
}
