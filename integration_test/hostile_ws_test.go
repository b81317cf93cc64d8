package integration_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Hostile clients: every inbound WebSocket frame counts against the frame
// rate (default 20/s, burst 50), pings and pongs included: a ping flood
// is closed with 1008, not answered pong by pong.
func TestPingFloodClosed(t *testing.T) {
	t.Parallel()
	c := startAuthSite(t, authConfig{}).c
	for _, kind := range []int{websocket.PingMessage, websocket.PongMessage} {
		conn := dialHub(t, c, "/hub?channel=news", nil)
		var pongs atomic.Int32
		conn.SetPongHandler(func(string) error { pongs.Add(1); return nil })
		const flood = 2000
		sent, start := 0, time.Now()
		for ; sent < flood; sent++ {
			if conn.WriteControl(kind, []byte("x"), time.Now().Add(authWait)) != nil {
				break // closed meanwhile
			}
		}
		_ = conn.SetReadDeadline(time.Now().Add(authWait))
		var err error
		for err == nil {
			_, _, err = conn.ReadMessage()
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
			t.Fatalf("frame kind %d: after %d frames the connection ended with %v, want close 1008", kind, sent, err)
		}
		// the burst of 50, and 20 a second while the flood lasted
		if n, allowed := pongs.Load(), 50+int32(20*time.Since(start).Seconds())+10; n > allowed {
			t.Fatalf("%d pongs for a ping flood of %d frames, want at most %d (burst 50, 20/s)", n, sent, allowed)
		}
	}
}
