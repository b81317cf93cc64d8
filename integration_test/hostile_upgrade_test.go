package integration_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Hostile clients: every request that asks for a protocol switch gets the
// Origin and ticket checks before anything reaches the upstream, however
// its Upgrade header is phrased. Sent from a raw socket, as an attacker
// would; the upstream records every request that reaches it.
func TestUpgradeVariantsGated(t *testing.T) {
	t.Parallel()
	env := startAuthSite(t, authConfig{Pass: ticketBlock("secret " + jwtSecret)})
	addr := strings.TrimPrefix(env.c.URL(""), "http://")
	variants := []string{
		"Upgrade: websocket",
		"Upgrade: WebSocket",
		"Upgrade: websocket, x-other",
		"Upgrade: x-other, websocket",
		"Upgrade: x-other\r\nUpgrade: websocket",
		"Upgrade: h2c",
		"Upgrade: x-tunnel/1",
	}
	for i, upgrade := range variants {
		name := "case-" + strconv.Itoa(i)
		status := rawUpgrade(t, addr, "/pass?case="+name, upgrade, "")
		if status != http.StatusUnauthorized {
			t.Errorf("%q without a ticket: status %d, want 401", upgrade, status)
		}
		if env.up.saw(name) {
			t.Errorf("%q without a ticket reached the upstream", upgrade)
		}
	}
	// with a ticket but from a foreign site: 403, nothing upstream
	tok := signed(t, jwt.SigningMethodHS256, []byte(jwtSecret), userClaims())
	status := rawUpgrade(t, addr, "/pass?case=foreign&ticket="+url.QueryEscape(tok), "Upgrade: x-other, websocket", "Origin: https://evil.example\r\n")
	if status != http.StatusForbidden || env.up.saw("foreign") {
		t.Errorf("foreign Origin with a ticket: status %d, upstream reached %v; want 403, not reached", status, env.up.saw("foreign"))
	}
	// a valid ticket gets through, and the upstream switches
	tok = signed(t, jwt.SigningMethodHS256, []byte(jwtSecret), userClaims())
	status = rawUpgrade(t, addr, "/pass?case=ok&ticket="+url.QueryEscape(tok), "Upgrade: websocket", "")
	if status != http.StatusSwitchingProtocols || !env.up.saw("ok") {
		t.Errorf("with a ticket: status %d, upstream reached %v; want 101, reached", status, env.up.saw("ok"))
	}
}

// rawUpgrade sends an upgrade request with the given Upgrade line(s) and
// extra header lines over a fresh TCP connection and returns the status
// of the answer.
func rawUpgrade(t *testing.T, addr, path, upgrade, extra string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, authWait)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(authWait))
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\n%s\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n", path, addr, upgrade, extra)
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%q: reading the answer: %v", upgrade, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
