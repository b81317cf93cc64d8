package integration_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/integration_test/harness"
	"github.com/caddy-realtime/realtime/internal/testredis"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// Issue 18: the admin API on Caddy's admin endpoint. It lists this
// node's channels and ends subscriptions by sub or by channel on every
// node (through Redis), each transport telling its client to stay away:
// WebSocket close 4000 "disconnected", SSE and long-poll the event
// realtime.closed. A reconnect passes the ticket checks again.

const adminSite = `
:{{.HTTPPort}} {
	realtime /hub* {
		hub
		{{.Redis}}
		publish_key {{.PublishKey}}
		longpoll_timeout 5s
		ticket {
			secret {{.Secret}}
		}
	}
}
`

func startAdminNode(t *testing.T, rd *testredis.Server) *hubEnv {
	t.Helper()
	e := &hubEnv{rd: rd, client: harness.HTTP1Client()}
	redisLine := ""
	if rd != nil {
		redisLine = "redis " + rd.URL()
	}
	e.c = harness.StartCaddy(t, adminSite,
		harness.Var("Redis", redisLine),
		harness.Var("PublishKey", hubPublishKey),
		harness.Var("Secret", jwtSecret),
	)
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

// ticketFor is a signed single-use ticket of sub for every channel.
func ticketFor(t *testing.T, sub string) string {
	return signed(t, jwt.SigningMethodHS256, []byte(jwtSecret), jwt.MapClaims{"sub": sub, "channels": []string{"*"}})
}

// disconnect POSTs body to the node's /realtime/disconnect.
func disconnect(t *testing.T, e *hubEnv, body string) (int, string) {
	t.Helper()
	status, b := e.c.Admin(t, http.MethodPost, "/realtime/disconnect", strings.NewReader(body))
	return status, string(b)
}

// expectClosedSSE reads the SSE stream up to the realtime.closed event
// and then its end. With lastID set, the event must leave the client's
// last event id at it (the event has no id of its own).
func expectClosedSSE(t *testing.T, what string, r *harness.SSEReader, lastID string) {
	t.Helper()
	it := r.NextEvent(t, time.Second) // "within a second"
	if it.Event != "realtime.closed" || it.Data != `{"reason":"disconnected"}` || (lastID != "" && it.ID != lastID) {
		t.Fatalf("%s: got %v, want event realtime.closed with data {\"reason\":\"disconnected\"}, the last event id staying %q", what, it, lastID)
	}
	rest, err := r.WaitEnd(t, time.Second)
	if err != nil || len(rest) != 0 {
		t.Fatalf("%s: after realtime.closed: %v, then %v; want the stream's clean end", what, rest, err)
	}
}

// expectClose4000 waits up to a second for the WebSocket to be closed
// with 4000 "disconnected".
func expectClose4000(t *testing.T, what string, w *hubWS) {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(time.Second):
		t.Fatalf("%s: still open a second after the disconnect", what)
	}
	var ce *websocket.CloseError
	if !errors.As(w.err, &ce) || ce.Code != 4000 || ce.Text != "disconnected" {
		t.Fatalf("%s: ended with %v, want close 4000 disconnected", what, w.err)
	}
}

func TestAdminDisconnectAcrossNodes(t *testing.T) {
	t.Parallel()
	rd := testredis.Start(t)
	a := startAdminNode(t, rd)
	b := startAdminNode(t, rd)

	tickA := ticketFor(t, "u1")
	u1SSE := a.openSSE(t, hubQuery([]string{"room"}, "ticket", tickA))
	u1WSOnB := b.openWS(t, hubQuery([]string{"other"}, "ticket", ticketFor(t, "u1")))
	u2WS := a.openWS(t, hubQuery([]string{"room"}, "ticket", ticketFor(t, "u2")))
	u2SSEOnB := b.openSSE(t, hubQuery([]string{"room"}, "ticket", ticketFor(t, "u2")))
	poll := goPoll(a.client, a.c.URL("/hub?"+hubQuery([]string{"room"}, "ticket", ticketFor(t, "u3"), "last_event_id", "")))

	// the listing shows them, per transport
	waitFor(t, "the long-poll to be counted", func() bool {
		return channelOf(t, a, "room").Transports["longpoll"] == 1
	})
	d := channelOf(t, a, "room")
	if d.Subscribers != 3 || d.Transports["sse"] != 1 || d.Transports["ws"] != 1 || !d.Subscribed {
		t.Fatalf("room on node a: %+v, want 3 subscribers: sse 1, ws 1, longpoll 1", d)
	}
	status, body := a.c.Admin(t, http.MethodGet, "/realtime/channels", nil)
	if status != http.StatusOK || !strings.Contains(string(body), `{"channel":"room","subscribers":3,`) {
		t.Fatalf("GET /realtime/channels: %d %s", status, body)
	}

	// by sub, sent to node a: u1 goes on both nodes, u2 stays
	if status, body := disconnect(t, a, `{"sub":"u1"}`); status != http.StatusOK || !strings.Contains(body, `"disconnected":1`) {
		t.Fatalf("disconnect u1: %d %s", status, body)
	}
	expectClosedSSE(t, "u1's SSE on node a", u1SSE, "")
	expectClose4000(t, "u1's WebSocket on node b", u1WSOnB)
	id := a.mustPublish(t, "room", "", []byte("still here"))
	if f := u2WS.nextMessage(t); string(f.payload(t)) != "still here" {
		t.Fatalf("u2 after u1's disconnect: %+v", f)
	}
	if ev := u2SSEOnB.NextEvent(t, hubWait); ev.ID != id {
		t.Fatalf("u2 on node b after u1's disconnect: %v", ev)
	}

	// by channel, sent to node b: every subscription of room ends
	// (the long-poll first answers the message above; poll again)
	if p := <-poll; p.err != nil || p.res.status != http.StatusOK {
		t.Fatalf("long-poll: %+v", p)
	}
	poll = goPoll(a.client, a.c.URL("/hub?"+hubQuery([]string{"room"}, "ticket", ticketFor(t, "u3"), "last_event_id", id)))
	waitFor(t, "the second long-poll to be counted", func() bool {
		return channelOf(t, a, "room").Transports["longpoll"] == 1
	})
	if status, body := disconnect(t, b, `{"channel":"room"}`); status != http.StatusOK {
		t.Fatalf("disconnect room: %d %s", status, body)
	}
	expectClose4000(t, "u2's WebSocket on node a", u2WS)
	expectClosedSSE(t, "u2's SSE on node b", u2SSEOnB, id)
	select {
	case p := <-poll:
		if p.err != nil || p.res.status != http.StatusOK {
			t.Fatalf("long-poll: %+v", p)
		}
		msgs := p.res.decoded.Messages
		if len(msgs) != 1 || msgs[0].Event != "realtime.closed" || string(msgs[0].payload(t)) != `{"reason":"disconnected"}` || p.res.cursor() != id {
			t.Fatalf("long-poll after the disconnect: %s, want one realtime.closed entry and last_event_id %q", p.res.body, id)
		}
	case <-time.After(time.Second):
		t.Fatal("long-poll: no answer within a second of the disconnect")
	}

	// a reconnect passes the ticket checks again: the used ticket is
	// refused, a fresh one works
	if status, _ := hubGet(t, a, hubQuery([]string{"room"}, "ticket", tickA), sseHeader()); status != http.StatusUnauthorized {
		t.Fatalf("reconnect with the used ticket: %d, want 401", status)
	}
	r := a.openSSE(t, hubQuery([]string{"room"}, "ticket", ticketFor(t, "u1")))
	r.Close()
}

func TestAdminAPIBadRequests(t *testing.T) {
	t.Parallel()
	e := startAdminNode(t, nil) // embedded broker: one node
	for _, tc := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"POST", "/realtime/disconnect", `{}`, 400, "nothing to disconnect"},
		{"POST", "/realtime/disconnect", `{"user":"u1"}`, 400, "unknown field"},
		{"POST", "/realtime/disconnect", `not json`, 400, "reading the request"},
		{"POST", "/realtime/disconnect", `{"channel":"a b"}`, 400, "invalid channel"},
		{"GET", "/realtime/disconnect", ``, 405, "use POST"},
		{"POST", "/realtime/channels", ``, 405, "use GET"},
		{"GET", "/realtime/channels/bad%20name", ``, 400, "invalid channel"},
		{"GET", "/realtime/channels?limit=0", ``, 400, "limit"},
		{"GET", "/realtime/channels?match=a%23", ``, 400, "match"},
	} {
		var body *strings.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		var status int
		var got []byte
		if body != nil {
			status, got = e.c.Admin(t, tc.method, tc.path, body)
		} else {
			status, got = e.c.Admin(t, tc.method, tc.path, nil)
		}
		if status != tc.status || !strings.Contains(string(got), tc.want) {
			t.Errorf("%s %s %s: %d %s, want %d with %q", tc.method, tc.path, tc.body, status, got, tc.status, tc.want)
		}
	}
	// the embedded broker's node disconnects its own subscribers
	w := e.openWS(t, hubQuery([]string{"solo"}, "ticket", ticketFor(t, "u9")))
	if status, body := disconnect(t, e, `{"sub":"u9","channel":"solo"}`); status != http.StatusOK || !strings.Contains(body, `"disconnected":1`) {
		t.Fatalf("disconnect: %d %s", status, body)
	}
	expectClose4000(t, "embedded", w)
	e.mustPublish(t, "solo", "", []byte("x"))
	d := channelOf(t, e, "solo")
	if d.Subscribers != 0 || d.Cached != 1 || d.LastID == "" {
		t.Fatalf("solo after the disconnect: %+v, want no subscriber, 1 message cached and its id", d)
	}
}

// adminChannel is GET /realtime/channels/<name>.
type adminChannel struct {
	Channel     string         `json:"channel"`
	Subscribers int            `json:"subscribers"`
	Transports  map[string]int `json:"transports"`
	Subscribed  bool           `json:"subscribed"`
	LastID      string         `json:"last_id"`
	Cached      int            `json:"cached"`
	Rule        string         `json:"rule"`
}

func channelOf(t *testing.T, e *hubEnv, name string) adminChannel {
	t.Helper()
	status, body := e.c.Admin(t, http.MethodGet, "/realtime/channels/"+name, nil)
	if status != http.StatusOK {
		t.Fatalf("GET /realtime/channels/%s: %d %s", name, status, body)
	}
	var d adminChannel
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatalf("GET /realtime/channels/%s: %s: %v", name, body, err)
	}
	return d
}

// waitFor polls cond until it holds, failing the test after hubWait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hubWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", hubWait, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
