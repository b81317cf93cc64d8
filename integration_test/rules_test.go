package integration_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/integration_test/harness"
	"github.com/caddy-realtime/realtime/internal/testredis"
	"github.com/golang-jwt/jwt/v5"
)

// Issue 18: channel rules and rewind. Rules are chosen by pattern (first
// match wins), each with its replay, rewind and publish setting; a
// subscriber without a cursor that rewinds gets the newest retained
// messages first, in order, with ids, then the live ones, on every
// transport and broker, from Redis on a node that has not cached the
// channel, with no duplicate, and a cursor wins over rewind.

// rewindRules are the rules of the rewind tests: ticker:* rewinds 2 by
// default, capped rewinds at most 3 whatever is asked.
const rewindRules = `
		channels ticker:* {
			rewind 2
		}
		channels capped {
			rewind 3
		}`

// subscribeWith subscribes over transport with extra query pairs and no
// cursor, and returns once the subscription is live (for long-poll: the
// first poll is sent by the first next).
func (e *hubEnv) subscribeWith(t *testing.T, transport string, channels []string, extra ...string) resumeClient {
	t.Helper()
	switch transport {
	case "sse":
		if len(channels) > 1 {
			extra = append(extra, "format", "json") // each message names its channel
		}
		return e.resumeSSE(t, hubQuery(channels, extra...), nil, channels)
	case "ws":
		return &wsClient{w: e.openWS(t, hubQuery(channels, extra...))}
	case "longpoll":
		return &pollClient{e: e, channels: channels, first: extra}
	}
	t.Fatalf("unknown transport %q", transport)
	return nil
}

// publisher publishes data to channel of e as one source would.
type publisher func(t *testing.T, e *hubEnv, channel, data string)

var rewindSources = []struct {
	name     string
	embedded bool
	publish  publisher
	// cachedOnly: the messages live in the node's cache alone (Redis
	// pub/sub keeps nothing), so the node must be subscribed to see them
	cachedOnly bool
}{
	{"embedded", true, httpPublisher, false},
	{"redis-publish", false, func(t *testing.T, e *hubEnv, ch, data string) { e.redisPublish(t, ch, []byte(data)) }, true},
	{"redis-xadd", false, func(t *testing.T, e *hubEnv, ch, data string) { e.redisXAdd(t, ch, []byte(data), "") }, false},
	{"http", false, httpPublisher, false},
}

func httpPublisher(t *testing.T, e *hubEnv, ch, data string) { e.mustPublish(t, ch, "", []byte(data)) }

// publishSome publishes m1..mn to channel; with a watcher (a subscriber
// on the node) it waits until the node has them.
func publishSome(t *testing.T, e *hubEnv, pub publisher, channel string, n int, watcher resumeClient) []string {
	t.Helper()
	var want []string
	for i := 1; i <= n; i++ {
		want = append(want, fmt.Sprintf("m%d", i))
		pub(t, e, channel, want[i-1])
	}
	if watcher != nil {
		expectMsgs(t, "watcher", watcher, want...)
	}
	return want
}

func TestRewindEveryTransportAndBroker(t *testing.T) {
	t.Parallel()
	for _, src := range rewindSources {
		t.Run(src.name, func(t *testing.T) {
			t.Parallel()
			e := startHub(t, hubOpts{embedded: src.embedded, extra: rewindRules})
			for _, tr := range resumeTransports {
				t.Run(tr, func(t *testing.T) {
					ch := "news-" + tr
					var watcher resumeClient
					if src.cachedOnly {
						watcher = e.subscribeVia(t, "sse", []string{ch}, "")
						defer watcher.close()
					}
					publishSome(t, e, src.publish, ch, 5, watcher)
					c := e.subscribeWith(t, tr, []string{ch}, "rewind", "3")
					defer c.close()
					got := expectMsgs(t, "rewound", c, "m3", "m4", "m5")
					src.publish(t, e, ch, "m6")
					live := expectMsgs(t, "live after the rewind", c, "m6")
					if got[2].ID == live[0].ID {
						t.Fatalf("live message repeats the last rewound id %s", got[2].ID)
					}
					// the last rewound id is a resume point: nothing is sent twice
					r := e.subscribeVia(t, tr, []string{ch}, got[2].ID)
					defer r.close()
					expectMsgs(t, "resumed from the last rewound id", r, "m6")
				})
			}
			t.Run("rule default and cap", func(t *testing.T) {
				var w1, w2 resumeClient
				if src.cachedOnly {
					w1 = e.subscribeVia(t, "sse", []string{"ticker:eur"}, "")
					defer w1.close()
					w2 = e.subscribeVia(t, "sse", []string{"capped"}, "")
					defer w2.close()
				}
				publishSome(t, e, src.publish, "ticker:eur", 5, w1)
				publishSome(t, e, src.publish, "capped", 5, w2)
				c := e.subscribeWith(t, "ws", []string{"ticker:eur"}) // no ?rewind: the rule's 2
				defer c.close()
				expectMsgs(t, "ticker:* default rewind", c, "m4", "m5")
				c2 := e.subscribeWith(t, "sse", []string{"capped"}, "rewind", "50")
				defer c2.close()
				expectMsgs(t, "capped at the rule's 3", c2, "m3", "m4", "m5")
				c3 := e.subscribeWith(t, "sse", []string{"ticker:eur"}, "rewind", "0")
				defer c3.close()
				src.publish(t, e, "ticker:eur", "m6")
				expectMsgs(t, "rewind=0 asks for none", c3, "m6")
			})
		})
	}
}

// A node that has never cached a stream-fed channel rewinds from Redis;
// messages then published on another node arrive once.
func TestRewindAcrossNodes(t *testing.T) {
	t.Parallel()
	rd := testredis.Start(t)
	a := startResumeNode(t, rd, "")
	b := startResumeNode(t, rd, "")
	for _, tr := range resumeTransports {
		t.Run(tr, func(t *testing.T) {
			ch := "feed-" + tr
			for i := 1; i <= 5; i++ {
				a.mustPublish(t, ch, "", []byte(fmt.Sprintf("m%d", i)))
			}
			c := b.subscribeWith(t, tr, []string{ch}, "rewind", "2")
			defer c.close()
			expectMsgs(t, "rewound on the other node", c, "m4", "m5")
			a.mustPublish(t, ch, "", []byte("m6"))
			b.redisXAdd(t, ch, []byte("m7"), "")
			expectMsgs(t, "live", c, "m6", "m7")
		})
	}
	// a cursor wins over rewind, on any node
	ch := "feed-cursor"
	var ids []string
	for i := 1; i <= 4; i++ {
		ids = append(ids, a.mustPublish(t, ch, "", []byte(fmt.Sprintf("m%d", i))))
	}
	c := b.resumeSSE(t, hubQuery([]string{ch}, "rewind", "1", "last_event_id", ids[1]), nil, []string{ch})
	defer c.close()
	expectMsgs(t, "cursor, not rewind", c, "m3", "m4")
}

// Subscribers that rewind while messages are being published see each
// message once, in order, with no gap between the rewound and the live
// ones.
func TestRewindWhilePublishing(t *testing.T) {
	t.Parallel()
	for _, src := range []string{"http", "redis-publish"} {
		t.Run(src, func(t *testing.T) {
			t.Parallel()
			e := startHub(t, hubOpts{})
			// pub/sub messages come as fast as Redis takes them, so that
			// some reach the node while a rewind is being read
			ch, total, pause := "busy", 300, 2*time.Millisecond
			if src == "redis-publish" {
				total, pause = 3000, 0
			}
			watcher := e.subscribeVia(t, "sse", []string{ch}, "")
			defer watcher.close()
			pub := func(i int) {
				if src == "http" {
					e.mustPublish(t, ch, "", []byte(strconv.Itoa(i)))
				} else {
					e.redisPublish(t, ch, []byte(strconv.Itoa(i)))
				}
			}
			pub(0)
			expectMsgs(t, "watcher", watcher, "0")
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := 1; i < total; i++ {
					pub(i)
					if pause > 0 {
						time.Sleep(pause) // spread over the subscribers' connects
					}
				}
			}()
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for k := 0; k < 8; k++ {
				tr := []string{"sse", "ws"}[k%2]
				c := e.subscribeWith(t, tr, []string{ch}, "rewind", "5")
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.close()
					errs <- readConsecutive(t, c, total-1)
				}()
				if pause > 0 {
					time.Sleep(50 * time.Millisecond) // subscribers come while publishing goes on
				}
			}
			wg.Wait()
			<-done
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// readConsecutive reads messages whose data are increasing integers until
// last, and reports a gap, a repeat or an id out of order. It must not
// call t.Fatal (it runs on its own goroutine): next does only when no
// message comes within hubWait, which is then reported as a failure too.
func readConsecutive(t *testing.T, c resumeClient, last int) error {
	prev, prevID := -1, ""
	for prev < last {
		m := c.next(t)
		n, err := strconv.Atoi(m.Data)
		if err != nil {
			return fmt.Errorf("message %v: data is no number", m)
		}
		if prev >= 0 && n != prev+1 {
			return fmt.Errorf("after %d got %d (a gap or a repeat)", prev, n)
		}
		if m.ID == prevID {
			return fmt.Errorf("id %s twice", m.ID)
		}
		prev, prevID = n, m.ID
	}
	return nil
}

// rulesSite has one rule of each kind, beside channels no rule matches.
const rulesSite = `
:{{.HTTPPort}} {
	realtime /hub* {
		hub
		{{.Redis}}
		publish_key {{.PublishKey}}
		{{.Ticket}}
		longpoll_timeout 1s
		channels prices {
			replay {
				size 2
				ttl 1h
			}
			rewind 1
			publish key
		}
		channels chat:* {
			publish ticket
		}
		channels user:* {
			publish off
		}
	}
}
`

// startRulesSite starts rulesSite, with signed tickets required when
// tickets is set.
func startRulesSite(t *testing.T, embedded, tickets bool) *hubEnv {
	t.Helper()
	e := &hubEnv{client: harness.HTTP1Client()}
	redisLine := ""
	if !embedded {
		e.rd = testredis.Start(t)
		redisLine = "redis " + e.rd.URL()
	}
	e.c = harness.StartCaddy(t, rulesSite,
		harness.Var("Redis", redisLine),
		harness.Var("PublishKey", hubPublishKey),
		harness.Var("Ticket", map[bool]string{true: "ticket {\n\t\t\tsecret " + jwtSecret + "\n\t\t}"}[tickets]),
	)
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

// publishTicket returns a signed ticket that may publish to every
// channel.
func publishTicket(t *testing.T) string {
	return signed(t, jwt.SigningMethodHS256, []byte(jwtSecret), jwt.MapClaims{
		"sub": "writer", "channels": []string{"*"}, "publish": []string{"*"},
	})
}

func TestChannelRulesPublish(t *testing.T) {
	t.Parallel()
	e := startRulesSite(t, false, true)
	post := func(channel, credential string) (int, string) {
		status, body := e.httpPublish(t, "/hub", url.Values{"channel": {channel}}.Encode(), credential, []byte("x"))
		return status, strings.TrimSpace(string(body))
	}
	for _, tc := range []struct {
		channel, who string
		status       int
		reason       string
	}{
		{"news", "key", 200, ""},
		{"news", "ticket", 200, ""},
		{"prices", "key", 200, ""},
		{"prices", "ticket", 401, "publish key only"},
		{"prices", "", 401, "publish key only"},
		{"chat:lobby", "ticket", 200, ""},
		{"chat:lobby", "key", 403, "tickets only"},
		{"user:42", "key", 403, "publish off"},
		{"user:42", "ticket", 403, "publish off"},
	} {
		cred := ""
		switch tc.who {
		case "key":
			cred = hubPublishKey
		case "ticket":
			cred = publishTicket(t)
		}
		status, body := post(tc.channel, cred)
		if status != tc.status || !strings.Contains(body, tc.reason) {
			t.Errorf("publish to %s with %s: %d %q, want %d with %q", tc.channel, tc.who, status, body, tc.status, tc.reason)
		}
	}

	// WebSocket publish frames follow the same rules
	w := e.openWS(t, hubQuery([]string{"news"}, "ticket", publishTicket(t)))
	for _, tc := range []struct {
		channel string
		ok      bool
	}{{"chat:lobby", true}, {"prices", false}, {"user:42", false}, {"news", true}} {
		if err := w.conn.WriteJSON(map[string]any{"type": "publish", "channel": tc.channel, "data": "hi"}); err != nil {
			t.Fatal(err)
		}
		f := w.next(t)
		if f.Type == "subscribed" || f.Type == "" {
			f = w.next(t) // news: the message itself may come first
		}
		if ok := f.Type == "ack"; ok != tc.ok {
			t.Errorf("websocket publish to %s: %+v, want ack %v", tc.channel, f, tc.ok)
		}
		if !tc.ok && !strings.Contains(f.Reason, "does not take publishes from tickets") {
			t.Errorf("websocket publish to %s: reason %q", tc.channel, f.Reason)
		}
	}

	// the rule's replay ttl is the stream's in Redis
	ttl, err := e.rd.Do("TTL", "realtime:prices")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := ttl.(int64); n < 3000 || n > 3600 {
		t.Errorf("TTL realtime:prices = %v, want the rule's 1h", ttl)
	}
	ttl, _ = e.rd.Do("TTL", "realtime:news")
	if n, _ := ttl.(int64); n > 600 {
		t.Errorf("TTL realtime:news = %v, want the hub's 10m", ttl)
	}
}

// The rule's replay size bounds what a resume finds: past it, the reset
// signal; a channel no rule matches keeps the hub's.
func TestChannelRulesReplay(t *testing.T) {
	t.Parallel()
	e := startRulesSite(t, true, false)
	for _, ch := range []string{"prices", "news"} {
		first := ""
		for i := 1; i <= 5; i++ {
			id := e.mustPublish(t, ch, "", []byte(fmt.Sprintf("m%d", i)))
			if first == "" {
				first = id
			}
		}
		c := e.subscribeVia(t, "sse", []string{ch}, first)
		if ch == "prices" {
			expectReset(t, "prices keeps 2", c, ch, "expired")
		} else {
			expectMsgs(t, "news keeps the hub's 1000", c, "m2", "m3", "m4", "m5")
		}
		c.close()
	}
	// prices rewinds 1 by default
	c := e.subscribeWith(t, "longpoll", []string{"prices"})
	expectMsgs(t, "prices rewinds its last value", c, "m5")
	if status, _ := hubGet(t, e, hubQuery([]string{"prices"}, "rewind", "x"), nil); status != http.StatusBadRequest {
		t.Errorf("?rewind=x: status %d, want 400", status)
	}
}
