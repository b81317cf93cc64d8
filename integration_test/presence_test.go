package integration_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/integration_test/harness"
	"github.com/caddy-realtime/realtime/internal/testredis"
	"github.com/golang-jwt/jwt/v5"
)

// Issue 19: presence and lifecycle webhooks, deployment-wide. Two (or
// three) Caddy nodes on one Redis: presence is the same on every node,
// join/leave come once per real join and leave (not for a reconnect
// within the grace), a crashed node's members go within 30 s, and each
// occupied/vacated/added/removed transition is POSTed once, signed,
// retried after a 5xx.

const presenceSite = `
:{{.HTTPPort}} {
	realtime /hub* {
		hub
		{{.Redis}}
		publish_key {{.PublishKey}}
		ticket {
			secret {{.Secret}}
		}
		channels room:* {
			presence events
			notify {{.Notify}}
		}
		channels quiet:* {
			presence
		}
	}
}
`

// hookReceiver is the app's webhook endpoint: it checks each request's
// signature and records its events; the first failFirst requests get a
// 500.
type hookReceiver struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	failFirst int
	requests  int
	batches   [][]hookEvent
	badSig    int
	arrived   chan struct{}
}

type hookEvent struct {
	ID      string    `json:"id"`
	Type    string    `json:"type"`
	Channel string    `json:"channel"`
	Sub     string    `json:"sub"`
	Time    time.Time `json:"time"`
}

func newHookReceiver(t *testing.T, failFirst int) *hookReceiver {
	h := &hookReceiver{t: t, failFirst: failFirst, arrived: make(chan struct{}, 64)}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, []byte(hubPublishKey))
		m.Write(body)
		want := "sha256=" + hex.EncodeToString(m.Sum(nil))
		var b struct {
			Events []hookEvent `json:"events"`
		}
		err := json.Unmarshal(body, &b)
		h.mu.Lock()
		h.requests++
		fail := h.requests <= h.failFirst
		if !hmac.Equal([]byte(r.Header.Get("X-Realtime-Signature")), []byte(want)) {
			h.badSig++
		}
		if err == nil {
			h.batches = append(h.batches, b.Events)
		}
		h.mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusInternalServerError)
		}
		select {
		case h.arrived <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// delivered is every event the app took (a 2xx), once per id, in order.
func (h *hookReceiver) delivered() []hookEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[string]bool{}
	var out []hookEvent
	for i, b := range h.batches {
		if i < h.failFirst {
			continue // answered 500: sent again
		}
		for _, e := range b {
			if !seen[e.ID] {
				seen[e.ID] = true
				out = append(out, e)
			}
		}
	}
	return out
}

// summary is "type:sub" of each delivered event of channel, sorted:
// nodes send their own batches, so events decided on different nodes
// (and a batch retried after a 5xx) may arrive in any order; each
// carries its time.
func (h *hookReceiver) summary(channel string) string {
	var out []string
	for _, e := range h.delivered() {
		if e.Channel == channel {
			s := e.Type
			if e.Sub != "" {
				s += ":" + e.Sub
			}
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// waitSummary waits up to d for the channel's delivered events to be
// want.
func (h *hookReceiver) waitSummary(t *testing.T, channel, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for h.summary(channel) != want {
		if time.Now().After(deadline) {
			t.Fatalf("webhooks of %s: %q, want %q", channel, h.summary(channel), want)
		}
		select {
		case <-h.arrived:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func startPresenceNode(t *testing.T, rd *testredis.Server, hooks *hookReceiver) *hubEnv {
	t.Helper()
	e := &hubEnv{rd: rd, client: harness.HTTP1Client()}
	e.c = harness.StartCaddy(t, presenceSite,
		harness.Var("Redis", "redis "+rd.URL()),
		harness.Var("PublishKey", hubPublishKey),
		harness.Var("Secret", jwtSecret),
		harness.Var("Notify", hooks.srv.URL+"/hooks"),
	)
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

// anonTicket covers every channel and has no sub: counted, not listed.
func anonTicket(t *testing.T) string {
	return signed(t, jwt.SigningMethodHS256, []byte(jwtSecret), jwt.MapClaims{"channels": []string{"*"}})
}

type presenceAnswer struct {
	Channel     string `json:"channel"`
	Connections int    `json:"connections"`
	Members     []struct {
		Sub         string `json:"sub"`
		Connections int    `json:"connections"`
	} `json:"members"`
}

func (p presenceAnswer) String() string {
	var ms []string
	for _, m := range p.Members {
		ms = append(ms, fmt.Sprintf("%s:%d", m.Sub, m.Connections))
	}
	sort.Strings(ms)
	return fmt.Sprintf("%d [%s]", p.Connections, strings.Join(ms, " "))
}

// presenceOf asks e for channel's presence with the publish key.
func presenceOf(t *testing.T, e *hubEnv, channel string) presenceAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.c.URL("/hub/presence?channel="+url.QueryEscape(channel)), nil)
	req.Header.Set("Authorization", "Bearer "+hubPublishKey)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("presence of %s: %d %s", channel, resp.StatusCode, body)
	}
	var p presenceAnswer
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("presence of %s: %s: %v", channel, body, err)
	}
	return p
}

// waitPresence waits up to d for e's presence of channel to read want.
func waitPresence(t *testing.T, e *hubEnv, channel, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := presenceOf(t, e, channel).String()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("presence of %s: %s, want %s", channel, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// nextPresenceEvent reads the watcher's next message and checks it is
// event (realtime.join or realtime.leave) of sub, with an id.
func nextPresenceEvent(t *testing.T, w *sseClient, channel, event, sub string, d time.Duration) resumeMsg {
	t.Helper()
	it := w.r.NextEvent(t, d)
	m := resumeMsg{Channel: channel, ID: it.ID, Event: it.Event, Data: it.Data}
	want := fmt.Sprintf(`{"channel":%q,"sub":%q}`, channel, sub)
	if m.Event != event || m.Data != want || m.ID == "" {
		t.Fatalf("watcher got %v, want %s %s with an id", m, event, want)
	}
	return m
}

func TestPresenceAcrossNodes(t *testing.T) {
	t.Parallel()
	rd := testredis.Start(t)
	hooks := newHookReceiver(t, 1) // the first POST gets a 500: retried
	a := startPresenceNode(t, rd, hooks)
	b := startPresenceNode(t, rd, hooks)
	const ch = "room:1"

	watcher := a.resumeSSE(t, hubQuery([]string{ch}, "ticket", anonTicket(t)), nil, []string{ch})
	defer watcher.close()
	u1 := a.openSSE(t, hubQuery([]string{ch}, "ticket", ticketFor(t, "u1")))
	u2 := b.openWS(t, hubQuery([]string{ch}, "ticket", ticketFor(t, "u2")))
	u2again := a.openWS(t, hubQuery([]string{ch}, "ticket", ticketFor(t, "u2"))) // a second tab, another node

	// one join per member, whichever node and however many connections
	joins := map[string]bool{}
	for range 2 {
		m := watcher.next(t)
		if m.Event != "realtime.join" || m.ID == "" {
			t.Fatalf("watcher got %v, want realtime.join", m)
		}
		var d struct{ Channel, Sub string }
		_ = json.Unmarshal([]byte(m.Data), &d)
		if d.Channel != ch || joins[d.Sub] {
			t.Fatalf("join %s: channel %q, twice %v", m.Data, d.Channel, joins[d.Sub])
		}
		joins[d.Sub] = true
	}
	// the same presence from either node: the watcher is counted, not listed
	waitPresence(t, a, ch, "4 [u1:1 u2:2]", hubWait)
	waitPresence(t, b, ch, "4 [u1:1 u2:2]", hubWait)
	// the admin API shows it too, beside this node's own subscribers
	status, body := b.c.Admin(t, http.MethodGet, "/realtime/channels/"+ch, nil)
	if status != http.StatusOK || !strings.Contains(string(body), `"presence":{"channel":"room:1","connections":4,"members":[{"sub":"u1","connections":1},{"sub":"u2","connections":2}]}`) || !strings.Contains(string(body), `"subscribers":1,`) {
		t.Fatalf("admin channel detail: %d %s", status, body)
	}

	// a reconnect within the grace is no leave; a real leave is one leave
	u1.Close()
	u1 = b.openSSE(t, hubQuery([]string{ch}, "ticket", ticketFor(t, "u1")))
	defer u1.Close()
	_ = u2.conn.Close()
	<-u2.done
	time.Sleep(100 * time.Millisecond)
	_ = u2again.conn.Close()
	<-u2again.done
	nextPresenceEvent(t, watcher, ch, "realtime.leave", "u2", 10*time.Second)
	marker := a.mustPublish(t, ch, "", []byte("after the grace"))
	if m := watcher.next(t); m.ID != marker {
		t.Fatalf("after u2's leave the watcher got %v, want the marker (no leave or join for u1's reconnect)", m)
	}
	waitPresence(t, b, ch, "2 [u1:1]", hubWait)

	// the webhooks: each transition once, signed, the first batch retried
	hooks.waitSummary(t, ch, "channel_occupied member_added:u1 member_added:u2 member_removed:u2", 15*time.Second)
	u1.Close()
	watcher.close()
	hooks.waitSummary(t, ch, "channel_occupied channel_vacated member_added:u1 member_added:u2 member_removed:u1 member_removed:u2", 15*time.Second)
	// what the app took is gone from the outbox: nothing is sent again
	waitFor(t, "the outbox to empty", func() bool {
		n, err := rd.Do("ZCARD", "realtime:#presence:{"+ch+"}:outbox")
		return err == nil && n == int64(0)
	})
	hooks.mu.Lock()
	defer hooks.mu.Unlock()
	if hooks.badSig != 0 {
		t.Errorf("%d webhook requests with a bad signature", hooks.badSig)
	}
	retried := false
	for _, b := range hooks.batches[1:] {
		retried = retried || b[0].ID == hooks.batches[0][0].ID
	}
	if !retried {
		t.Errorf("the batch answered 500 was not sent again with the same ids: %d requests", hooks.requests)
	}
}

// A crashed node's members leave the deployment's presence within 30 s,
// with one realtime.leave and one member_removed; the webhook the node
// had decided and not sent is sent by another.
func TestPresenceCrashedNode(t *testing.T) {
	t.Parallel()
	rd := testredis.Start(t)
	hooks := newHookReceiver(t, 0)
	a := startPresenceNode(t, rd, hooks)
	doomed := startPresenceNode(t, rd, hooks)
	const ch = "room:crash"
	watcher := a.resumeSSE(t, hubQuery([]string{ch}, "ticket", anonTicket(t)), nil, []string{ch})
	defer watcher.close()
	u9 := doomed.openWS(t, hubQuery([]string{ch}, "ticket", ticketFor(t, "u9")))
	nextPresenceEvent(t, watcher, ch, "realtime.join", "u9", hubWait)
	waitPresence(t, a, ch, "2 [u9:1]", hubWait)

	// killed before its webhook batch (a second) went out: the event
	// is in the channel's outbox in Redis, and another node sends it
	// once the dead node's claim on it lapses
	crashed := time.Now()
	doomed.c.Kill()
	<-u9.done
	// presence read on a, and the leave the sweeper announces
	waitPresence(t, a, ch, "1 []", 30*time.Second)
	nextPresenceEvent(t, watcher, ch, "realtime.leave", "u9", 30*time.Second)
	if took := time.Since(crashed); took > 30*time.Second {
		t.Fatalf("the crashed node's member left after %v", took)
	}
	hooks.waitSummary(t, ch, "channel_occupied member_added:u9 member_removed:u9", 30*time.Second)
}

// The presence endpoint: who may ask, and channels without presence.
func TestPresenceEndpoint(t *testing.T) {
	t.Parallel()
	rd := testredis.Start(t)
	hooks := newHookReceiver(t, 0)
	e := startPresenceNode(t, rd, hooks)
	w := e.openWS(t, hubQuery([]string{"quiet:1"}, "ticket", ticketFor(t, "u5")))
	defer w.conn.Close()
	waitPresence(t, e, "quiet:1", "1 [u5:1]", hubWait)
	get := func(q string, h http.Header) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, e.c.URL("/hub/presence?"+q), nil)
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	narrow := signed(t, jwt.SigningMethodHS256, []byte(jwtSecret), jwt.MapClaims{"sub": "x", "channels": []string{"room:*"}})
	for _, tc := range []struct {
		name, query string
		header      http.Header
		status      int
		want        string
	}{
		{"ticket covering the channel", "channel=quiet:1&ticket=" + ticketFor(t, "u6"), nil, 200, `"members":[{"sub":"u5","connections":1}]`},
		{"no credentials", "channel=quiet:1", nil, 401, "missing ticket"},
		{"ticket not covering it", "channel=quiet:1&ticket=" + narrow, nil, 403, ""},
		{"wrong key", "channel=quiet:1", http.Header{"Authorization": {"Bearer nope"}}, 401, ""},
		{"no presence on the channel", "channel=news", http.Header{"Authorization": {"Bearer " + hubPublishKey}}, 404, "no presence"},
		{"bad channel", "channel=a%20b", nil, 400, "invalid"},
	} {
		status, body := get(tc.query, tc.header)
		if status != tc.status || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, want %d with %q", tc.name, status, body, tc.status, tc.want)
		}
	}
	// presence without events publishes nothing on the channel
	e.mustPublish(t, "quiet:1", "", []byte("hello"))
	if f := w.nextMessage(t); string(f.payload(t)) != "hello" {
		t.Fatalf("quiet:1 got %+v, want only the published message", f)
	}
}

// A client flooding the presence endpoint costs Redis a bounded number of
// reads: the requests that come while a read of the channel runs share
// the next one.
func TestPresenceEndpointFlood(t *testing.T) {
	t.Parallel()
	rd := testredis.Start(t)
	e := startPresenceNode(t, rd, newHookReceiver(t, 0))
	const ch = "quiet:flood"
	w := e.openWS(t, hubQuery([]string{ch}, "ticket", ticketFor(t, "u7")))
	defer w.conn.Close()
	waitPresence(t, e, ch, "1 [u7:1]", hubWait)
	before := redisCalls(t, rd, "hgetall")
	const clients, each = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := harness.HTTP1Client()
			defer client.CloseIdleConnections()
			for range each {
				req, _ := http.NewRequest(http.MethodGet, e.c.URL("/hub/presence?channel="+ch), nil)
				req.Header.Set("Authorization", "Bearer "+hubPublishKey)
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"sub":"u7"`) {
					errs <- fmt.Errorf("%d %s", resp.StatusCode, b)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	reads := redisCalls(t, rd, "hgetall") - before
	t.Logf("%d presence requests, %d reads of Redis", clients*each, reads)
	if reads < 1 || reads > clients*each/2 {
		t.Fatalf("%d presence requests made %d reads of Redis, want at most %d (one per request without sharing)", clients*each, reads, clients*each/2)
	}
}

// redisCalls is how many times rd ran cmd (INFO commandstats), inside
// scripts too.
func redisCalls(t *testing.T, rd *testredis.Server, cmd string) int {
	t.Helper()
	info, err := rd.Do("INFO", "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(fmt.Sprint(info), "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
			return n
		}
	}
	return 0
}

// With the embedded broker, one node: the same presence, events and
// endpoint, without Redis.
func TestPresenceEmbedded(t *testing.T) {
	t.Parallel()
	hooks := newHookReceiver(t, 0)
	e := &hubEnv{client: harness.HTTP1Client()}
	e.c = harness.StartCaddy(t, presenceSite,
		harness.Var("Redis", ""),
		harness.Var("PublishKey", hubPublishKey),
		harness.Var("Secret", jwtSecret),
		harness.Var("Notify", hooks.srv.URL+"/hooks"),
	)
	t.Cleanup(e.client.CloseIdleConnections)
	const ch = "room:solo"
	watcher := e.resumeSSE(t, hubQuery([]string{ch}, "ticket", anonTicket(t)), nil, []string{ch})
	defer watcher.close()
	u1 := e.openWS(t, hubQuery([]string{ch}, "ticket", ticketFor(t, "u1")))
	join := nextPresenceEvent(t, watcher, ch, "realtime.join", "u1", hubWait)
	waitPresence(t, e, ch, "2 [u1:1]", hubWait)
	_ = u1.conn.Close()
	<-u1.done
	nextPresenceEvent(t, watcher, ch, "realtime.leave", "u1", 10*time.Second)
	hooks.waitSummary(t, ch, "channel_occupied member_added:u1 member_removed:u1", 10*time.Second)
	waitMetric(t, e.c, "realtime_webhook_events_total", map[string]string{"result": "delivered"}, func(v float64) bool { return v == 3 })
	metrics := e.c.Metrics(t)
	for typ, want := range map[string]float64{"channel_occupied": 1, "member_added": 1, "member_removed": 1} {
		if got := metricValue(metrics, "realtime_presence_transitions_total", map[string]string{"type": typ}); got != want {
			t.Errorf("realtime_presence_transitions_total{type=%q} = %v, want %v", typ, got, want)
		}
	}
	// the join is an ordinary message, kept and rewound like any other
	again := e.resumeSSE(t, hubQuery([]string{ch}, "ticket", anonTicket(t), "rewind", "2"), nil, []string{ch})
	defer again.close()
	if m := again.next(t); m.Event != "realtime.join" || m.ID != join.ID {
		t.Fatalf("rewound %v, want the join %s", m, join.ID)
	}
}
