package integration_test

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/integration_test/harness"
	"golang.org/x/net/http2"
)

// TestHubWebSocketOverHTTP2: a client that offers RFC 8441 (extended
// CONNECT over HTTP/2) gets a hub WebSocket on an HTTP/2 stream. Go's
// HTTP/2 server advertises extended CONNECT when GODEBUG=http2xconnect=1.
func TestHubWebSocketOverHTTP2(t *testing.T) {
	c := harness.StartCaddy(t, `
{
}
https://127.0.0.1:{{.HTTPSPort}} {
	realtime /hub* {
		hub
		publish_key k
	}
}
`, harness.Env("GODEBUG", "http2xconnect=1"))
	// net/http's Transport refuses the :protocol pseudo-header; the
	// HTTP/2 transport of golang.org/x/net sends extended CONNECTs
	client := &http.Client{Transport: &http2.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer client.CloseIdleConnections()
	// a first request sets up the connection and its settings
	if resp, err := client.Get(c.HTTPSURL("/hub/realtime.js")); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}

	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest(http.MethodConnect, c.HTTPSURL("/hub?channel=h2"), pr)
	req.Header.Set(":protocol", "websocket")
	req.Header.Set("Sec-Websocket-Version", "13")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("extended CONNECT: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("extended CONNECT answered %s over HTTP/%d", resp.Status, resp.ProtoMajor)
	}
	br := bufio.NewReader(resp.Body)
	frames := make(chan string, 4)
	go func() {
		defer close(frames)
		for {
			msg, err := readServerFrame(br)
			if err != nil {
				return
			}
			frames <- msg
		}
	}()
	next := func() string {
		select {
		case m, ok := <-frames:
			if !ok {
				t.Fatal("stream ended")
			}
			return m
		case <-time.After(5 * time.Second):
			t.Fatal("no frame within 5s")
		}
		return ""
	}
	if m := next(); !strings.Contains(m, `"type":"subscribed"`) {
		t.Fatalf("first frame %s", m)
	}
	pub, _ := http.NewRequest("POST", c.HTTPSURL("/hub?channel=h2"), strings.NewReader("over h2"))
	pub.Header.Set("Authorization", "Bearer k")
	if presp, err := client.Do(pub); err != nil || presp.StatusCode != 200 {
		t.Fatalf("publish: %v %v", presp, err)
	}
	if m := next(); !strings.Contains(m, `"data":"over h2"`) {
		t.Fatalf("message frame %s", m)
	}
	// the client's own frames reach the server: a masked ping frame of
	// the JSON protocol ({"type":"ping"}) is answered with a pong frame
	if _, err := pw.Write(maskedText(`{"type":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	if m := next(); !strings.Contains(m, `"type":"pong"`) {
		t.Fatalf("reply frame %s", m)
	}
}

// readServerFrame reads one unmasked text frame (no fragmentation; control
// frames are skipped).
func readServerFrame(br *bufio.Reader) (string, error) {
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return "", err
		}
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(br, b[:]); err != nil {
				return "", err
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(br, b[:]); err != nil {
				return "", err
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		if n > 1<<20 {
			return "", fmt.Errorf("frame of %d bytes", n)
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			return "", err
		}
		if hdr[0]&0x0f == 1 {
			return string(payload), nil
		}
	}
}

// maskedText is a client text frame.
func maskedText(s string) []byte {
	key := [4]byte{1, 2, 3, 4}
	out := []byte{0x81, 0x80 | byte(len(s))}
	out = append(out, key[:]...)
	for i := 0; i < len(s); i++ {
		out = append(out, s[i]^key[i%4])
	}
	return out
}
