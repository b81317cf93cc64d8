package integration_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/integration_test/harness"
	"github.com/caddy-realtime/realtime/internal/ssetest"
	"github.com/gorilla/websocket"
)

// smallReceiveBuffer dials with a 4 KiB socket receive buffer, so that a
// client that pauses reading makes the server's writes partial at once.
func smallReceiveBuffer() *net.Dialer {
	return &net.Dialer{Timeout: harness.DialTimeout, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
}

// bigPayload is message i: its number, then filler up to size bytes, so
// that a byte lost, doubled or misplaced shows.
func bigPayload(i, size int) []byte {
	head := fmt.Sprintf("%04d|", i)
	fill := strings.Repeat(string(rune('a'+i%26)), size-len(head))
	return []byte(head + fill)
}

// TestHubPartialWrites: the hub writes a message straight to an idle
// connection's socket when it takes it at once, and hands the rest of a
// write the socket could not take to the connection's goroutine. Messages
// much larger than the client's receive buffer, sent while the client
// pauses reading, make every such write partial: each client must still
// get every message whole and in order, over SSE and WebSocket.
//
// Over TLS with the realtime listener wrapper, the fan-out seals messages
// of up to one record itself and leaves larger ones to the goroutine:
// there small messages fill the socket first (the fan-out must hand what
// the socket did not take to the goroutine), then sizes alternate, so
// that both paths take turns on a full socket.
func TestHubPartialWrites(t *testing.T) {
	t.Parallel()
	cleartextAndTLSSocket(t, testHubPartialWrites)
}

func testHubPartialWrites(t *testing.T, overTLS bool) {
	const ch = "big"
	n := 120 // 7 MB: more than the server's socket send buffer can grow to (4 MB)
	size := func(int) int { return 60 << 10 }
	o, url := hubOpts{}, (*harness.Caddy).URL
	if overTLS {
		const small = 640 // 5 MB
		n = small + 60
		size = func(i int) int {
			if i < small {
				return 8 << 10 // the fan-out's alone until the socket is full
			}
			return []int{8 << 10, 60 << 10, 100}[i%3]
		}
		o.globals = "servers {\n\t\t" + socketServers + "\n\t}"
		url = (*harness.Caddy).HTTPSURL
	}
	e := startHub(t, o)
	query := hubQuery([]string{ch})

	// SSE: a stream whose body is not read until everything is published
	tr := &http.Transport{
		DialContext:        smallReceiveBuffer().DialContext,
		DisableCompression: true,
		TLSClientConfig:    &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}, //nolint:gosec // the test's own Caddy
	}
	client := &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	req, err := http.NewRequest(http.MethodGet, url(e.c, "/hub?"+query), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	ctx, cancel := context.WithTimeout(context.Background(), 2*hubWait)
	defer cancel()
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := ssetest.NewParser(bufio.NewReader(resp.Body))

	// WebSocket: the same, frames not read until everything is published
	d := harness.WSDialer()
	d.NetDialContext = smallReceiveBuffer().DialContext
	d.NetDial = nil
	ws, _, err := d.Dial(harness.WSURL(url(e.c, "/hub?"+query)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(2 * hubWait))
	if _, first, err := ws.ReadMessage(); err != nil || !bytes.Contains(first, []byte(`"subscribed"`)) {
		t.Fatalf("websocket: first frame %s, %v", first, err)
	}
	// both are subscribed: the SSE one too, once the metric says so
	waitMetric(t, e.c, "realtime_connections", map[string]string{"transport": "sse"}, func(v float64) bool { return v == 1 })

	if resp.TLS != nil != overTLS || resp.ProtoMajor != 1 {
		t.Fatalf("SSE over %s, TLS %v", resp.Proto, resp.TLS != nil)
	}
	for i := range n {
		e.redisPublish(t, ch, bigPayload(i, size(i)))
	}

	for i := range n {
		ev, err := events.Next()
		if err != nil {
			t.Fatalf("sse: message %d: %v", i, err)
		}
		if want := bigPayload(i, size(i)); ev.Data != string(want) {
			t.Fatalf("sse: message %d: got %d bytes starting %.12q, want %d bytes starting %.12q", i, len(ev.Data), ev.Data, len(want), want)
		}
	}
	for i := range n {
		typ, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("websocket: message %d: %v", i, err)
		}
		var f struct {
			Channel, Data string
		}
		if typ != websocket.TextMessage || json.Unmarshal(msg, &f) != nil {
			t.Fatalf("websocket: message %d: frame type %d, %.40q", i, typ, msg)
		}
		if want := bigPayload(i, size(i)); f.Channel != ch || f.Data != string(want) {
			t.Fatalf("websocket: message %d: got %d bytes starting %.12q, want %d bytes starting %.12q", i, len(f.Data), f.Data, len(want), want)
		}
	}
}
