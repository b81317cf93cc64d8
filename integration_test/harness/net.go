package harness

import (
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/testredis"
)

// FreePort returns a loopback TCP port that was free a moment ago and
// that this test process has not handed out before (so parallel tests
// never get the same port, whether for Caddy, an upstream or Redis).
func FreePort(t testing.TB) int {
	t.Helper()
	return testredis.FreePort(t)
}

// Client timeouts: connecting is bounded; a response body is not (streams
// live long), so tests bound their reads with contexts and the waits of
// SSEReader.
const (
	DialTimeout = 5 * time.Second
	TLSTimeout  = 5 * time.Second
)

func transport() *http.Transport {
	d := &net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:               nil,
		DialContext:         d.DialContext,
		TLSHandshakeTimeout: TLSTimeout,
		// Caddy's internal CA is not trusted here; this is loopback only.
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
		DisableCompression:  true,                                  // a test asks for gzip itself, and decodes it
		MaxIdleConnsPerHost: 100,
		IdleConnTimeout:     30 * time.Second,
	}
}

// HTTP1Client returns a client that speaks only HTTP/1.1, over plain TCP
// or TLS. It has no overall timeout (streams are long); dial and TLS
// handshakes are bounded. It does not ask for compression by itself.
func HTTP1Client() *http.Client {
	tr := transport()
	tr.ForceAttemptHTTP2 = false
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	return &http.Client{Transport: tr}
}

// HTTP2Client returns a client that negotiates HTTP/2 over TLS (use it
// with Caddy.HTTPSURL; a test checks resp.ProtoMajor == 2). Several
// requests share one connection, as a browser's do.
func HTTP2Client() *http.Client {
	tr := transport()
	tr.ForceAttemptHTTP2 = true
	tr.TLSClientConfig.NextProtos = []string{"h2", "http/1.1"}
	return &http.Client{Transport: tr}
}
