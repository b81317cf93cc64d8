package harness

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// WSEchoUpstream is a WebSocket echo server on loopback. It counts every
// request it sees, upgrade or not, before doing anything with it, so a
// test can assert that a refused request never reached it.
type WSEchoUpstream struct {
	addr     string
	requests atomic.Int64
	upgrades atomic.Int64

	mu      sync.Mutex
	origins []string
	conns   map[*websocket.Conn]bool
}

// NewWSEchoUpstream starts the echo server; it accepts any Origin (the
// checks under test are Caddy's) and echoes each message back as it came.
func NewWSEchoUpstream(t testing.TB) *WSEchoUpstream {
	t.Helper()
	u := &WSEchoUpstream{conns: map[*websocket.Conn]bool{}}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.requests.Add(1)
		u.mu.Lock()
		u.origins = append(u.origins, r.Header.Get("Origin"))
		u.mu.Unlock()
		if !websocket.IsWebSocketUpgrade(r) {
			http.Error(w, "websocket echo: not an upgrade", http.StatusBadRequest)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		u.upgrades.Add(1)
		u.mu.Lock()
		u.conns[c] = true
		u.mu.Unlock()
		defer func() {
			u.mu.Lock()
			delete(u.conns, c)
			u.mu.Unlock()
			_ = c.Close()
		}()
		for {
			typ, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			_ = c.SetWriteDeadline(time.Now().Add(WaitTimeout))
			if err := c.WriteMessage(typ, msg); err != nil {
				return
			}
		}
	}))
	u.addr = srv.Listener.Addr().String()
	t.Cleanup(func() {
		// hijacked connections are not the server's to close
		u.mu.Lock()
		for c := range u.conns {
			_ = c.Close()
		}
		u.mu.Unlock()
		srv.Close()
	})
	return u
}

// Addr is host:port of the upstream.
func (u *WSEchoUpstream) Addr() string { return u.addr }

// Requests is the number of requests the upstream has seen.
func (u *WSEchoUpstream) Requests() int { return int(u.requests.Load()) }

// Upgrades is the number of WebSocket connections it has accepted.
func (u *WSEchoUpstream) Upgrades() int { return int(u.upgrades.Load()) }

// Origins returns the Origin header of each request it has seen.
func (u *WSEchoUpstream) Origins() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.origins...)
}

// WSDialer returns a gorilla dialer with bounded handshakes that accepts
// Caddy's internal certificates (loopback only). Over TLS it speaks
// HTTP/1.1, as gorilla does.
func WSDialer() *websocket.Dialer {
	return &websocket.Dialer{
		NetDial:          (&net.Dialer{Timeout: DialTimeout}).Dial,
		HandshakeTimeout: DialTimeout + TLSTimeout,
		TLSClientConfig:  &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
	}
}

// WSURL turns an http(s):// URL into the ws(s):// one.
func WSURL(httpURL string) string {
	if s, ok := strings.CutPrefix(httpURL, "https://"); ok {
		return "wss://" + s
	}
	return "ws://" + strings.TrimPrefix(httpURL, "http://")
}
