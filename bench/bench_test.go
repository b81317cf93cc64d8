package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestPayloadRoundTrip(t *testing.T) {
	tests := []struct {
		name       string
		seq, round int
	}{
		{"zero", 0, 0},
		{"large", 9999999, 9999},
		{"typical", 42, 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			due := time.Unix(1_700_000_000, 123456789)
			p := makePayload(nil, due, tc.seq, tc.round)
			if len(p) != payloadSize {
				t.Fatalf("payload is %d bytes, want %d", len(p), payloadSize)
			}
			ts, seq, round, ok := parsePayload(p)
			if !ok || ts != due.UnixNano() || seq != tc.seq || round != tc.round {
				t.Fatalf("parsePayload = %d %d %d %v", ts, seq, round, ok)
			}
			j, _ := json.Marshal(map[string]string{"channel": "c", "id": "1-0", "data": string(p)})
			if _, seq2, _, ok := parsePayload(payloadFromJSON(j)); !ok || seq2 != tc.seq {
				t.Fatalf("payloadFromJSON failed on %s", j)
			}
		})
	}
	if _, _, _, ok := parsePayload([]byte("hello")); ok {
		t.Fatal("parsePayload accepted garbage")
	}
}

func TestStats(t *testing.T) {
	v := make([]int32, 100)
	for i := range v {
		v[i] = int32(100 - i) // 1..100 µs
	}
	st := statsMicros(v)
	if st.P50 != 50*time.Microsecond || st.P99 != 99*time.Microsecond || st.Max != 100*time.Microsecond {
		t.Fatalf("stats = %+v", st)
	}
}

// fakeHub speaks the hub's wire protocol (SSE with a retry line, WebSocket
// with a subscribed frame and JSON messages, long-poll JSON, POST publish)
// for one channel, so the load generator can be tested without the module.
type fakeHub struct {
	mu   sync.Mutex
	log  [][]byte
	cond *sync.Cond
	subs map[chan []byte]struct{}
}

func newFakeHub() *fakeHub {
	h := &fakeHub{subs: map[chan []byte]struct{}{}}
	h.cond = sync.NewCond(&h.mu)
	return h
}

func (h *fakeHub) subscribe() chan []byte {
	c := make(chan []byte, 1024)
	h.mu.Lock()
	h.subs[c] = struct{}{}
	h.mu.Unlock()
	return c
}

func (h *fakeHub) unsubscribe(c chan []byte) {
	h.mu.Lock()
	delete(h.subs, c)
	h.mu.Unlock()
}

func (h *fakeHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost:
		if r.Header.Get("Authorization") != "Bearer k" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		b, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.log = append(h.log, b)
		id := len(h.log)
		for c := range h.subs {
			c <- b
		}
		h.cond.Broadcast()
		h.mu.Unlock()
		fmt.Fprintf(w, `{"id":"%d"}`, id)
	case websocket.IsWebSocketUpgrade(r):
		u := websocket.Upgrader{}
		conn, err := u.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		c := h.subscribe()
		defer h.unsubscribe(c)
		_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribed","channels":["c"]}`))
		go func() { // reader: notices the close
			for {
				if _, _, err := conn.ReadMessage(); err != nil {
					conn.Close()
					return
				}
			}
		}()
		for b := range c {
			j, _ := json.Marshal(map[string]string{"channel": "c", "id": "x", "event": "message", "data": string(b)})
			if conn.WriteMessage(websocket.TextMessage, j) != nil {
				return
			}
		}
	case strings.Contains(r.Header.Get("Accept"), "text/event-stream"):
		c := h.subscribe()
		defer h.unsubscribe(c)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "retry: 2000\n\n")
		w.(http.Flusher).Flush()
		for {
			select {
			case b := <-c:
				fmt.Fprintf(w, "id: x\ndata: %s\n\n", b)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	default: // long-poll
		h.mu.Lock()
		from := len(h.log)
		if v := r.URL.Query().Get("last_event_id"); v != "" {
			from, _ = strconv.Atoi(v)
		}
		deadline := time.Now().Add(2 * time.Second)
		stop := context.AfterFunc(r.Context(), func() { h.mu.Lock(); h.cond.Broadcast(); h.mu.Unlock() })
		defer stop()
		t := time.AfterFunc(2*time.Second, func() { h.mu.Lock(); h.cond.Broadcast(); h.mu.Unlock() })
		defer t.Stop()
		for len(h.log) <= from && time.Now().Before(deadline) && r.Context().Err() == nil {
			h.cond.Wait()
		}
		type msg struct {
			Channel string `json:"channel"`
			ID      string `json:"id"`
			Data    string `json:"data"`
		}
		out := struct {
			Messages    []msg  `json:"messages"`
			LastEventID string `json:"last_event_id"`
		}{Messages: []msg{}, LastEventID: strconv.Itoa(len(h.log))}
		for i := from; i < len(h.log); i++ {
			out.Messages = append(out.Messages, msg{Channel: "c", ID: strconv.Itoa(i + 1), Data: string(h.log[i])})
		}
		h.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	}
}

func TestLoadGeneratorAgainstFakeHub(t *testing.T) {
	for _, tr := range []string{tSSE, tWS, tLongPoll} {
		t.Run(tr, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: newFakeHub()}
			go func() { _ = srv.Serve(l) }()
			defer srv.Close()
			tgt := target{Kind: "hub", Addr: l.Addr().String(), SubPath: "/hub", PubPath: "/hub", PublishKey: "k", PID: os.Getpid()}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			const n, m = 40, 20
			sw := connectSwarm(ctx, tgt, loadSpec{N: n, Transport: tr, Channel: "c", ConnectRate: 500, ConnectConc: 16})
			defer sw.close()
			if len(sw.live) != n || sw.fails != 0 {
				t.Fatalf("connected %d/%d, failures %d: %s", len(sw.live), n, sw.fails, sw.failErr)
			}
			if tr == tLongPoll {
				time.Sleep(300 * time.Millisecond)
			}
			res, err := sw.runRound(ctx, roundSpec{M: m, Rate: 100, Pub: pubHTTP}, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if res.Lost != 0 || res.Dup != 0 || res.Deliveries != n*m || res.PubErrors != 0 {
				t.Fatalf("round: %+v", res)
			}
			if res.P50 <= 0 || res.Max < res.P99 || res.P99 < res.P50 {
				t.Fatalf("implausible latencies: %+v", res)
			}
		})
	}
}
