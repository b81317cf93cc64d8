package integration_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/testredis"
	"github.com/redis/go-redis/v9"
)

// Hostile clients: event names are 1 to 64 printable ASCII characters
// without spaces, and names starting "realtime." are the module's. Over
// HTTP a bad one is a 400, over WebSocket an error frame; a Redis entry
// with one is not delivered (so no subscriber sees a forged reset), is
// counted as a bad_request refusal and is logged once per channel.
func TestEventNamesChecked(t *testing.T) {
	t.Parallel()
	rs := testredis.Start(t)
	rdb := rs.Client()
	c := startAuthSite(t, authConfig{Hub: "redis " + rs.URL() + "\n\t\tpublish_key backend-key\n\t\t" + ticketBlock("secret "+jwtSecret)}).c
	tq := func(claims string) string { return "&ticket=" + url.QueryEscape(redisTicket(t, rdb, claims)) }
	sse := subscribe(t, c, "/hub?channel=chat:1"+tq(claimsReader), sseHeader())
	key := http.Header{"Authorization": {"Bearer backend-key"}}
	r := do(t, "POST", c.URL("/hub?channel=chat:1"), key, "before")
	expect(t, "a message before", r, 200, "")
	var first struct{ ID string }
	if err := json.Unmarshal([]byte(r.body), &first); err != nil || first.ID == "" {
		t.Fatalf("publish answer %q: %v", r.body, err)
	}
	if ev := sse.NextEvent(t, authWait); ev.Data != "before" {
		t.Fatalf("SSE subscriber got %+v, want the first message", ev)
	}
	bad := []string{"a\nb", "a\rb", "nul\x00", "sp ace", "tab\t", "ü", "\xff", strings.Repeat("e", 65), "realtime.reset", "realtime.closed"}

	for _, ev := range bad {
		r := do(t, "POST", c.URL("/hub?channel=chat:1&event="+url.QueryEscape(ev)), key, "forged")
		expect(t, "HTTP publish with event "+strconv.Quote(ev), r, 400, "event")
	}
	conn := dialHub(t, c, "/hub?channel=chat:1"+tq(claimsUser), nil)
	for _, ev := range bad {
		if err := conn.WriteJSON(map[string]string{"type": "publish", "channel": "chat:1", "event": ev, "data": "forged"}); err != nil {
			t.Fatal(err)
		}
		if f := readFrame(t, conn); f["type"] != "error" || !strings.Contains(f["reason"].(string), "event") {
			t.Fatalf("WebSocket publish with event %q: frame %v, want an error naming the event", ev, f)
		}
	}
	before := badRequestRefusals(t, c.Metrics(t))
	ctx := context.Background()
	for _, ev := range bad {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:chat:1", Values: []any{"event", ev, "data", "forged"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	r = do(t, "POST", c.URL("/hub?channel=chat:1&event=chat.message-1"), key, "good")
	expect(t, "a good event name", r, 200, "")
	// the first thing either subscriber sees is the good message
	if ev := sse.NextEvent(t, authWait); ev.Event != "chat.message-1" || ev.Data != "good" {
		t.Fatalf("SSE subscriber got %+v, want the good message first", ev)
	}
	if f := readFrame(t, conn); f["event"] != "chat.message-1" || f["data"] != "good" {
		t.Fatalf("WebSocket subscriber got %v, want the good message first", f)
	}
	if got := badRequestRefusals(t, c.Metrics(t)) - before; got != len(bad) {
		t.Fatalf("bad_request refusals grew by %d, want %d (one per bad Redis entry)", got, len(bad))
	}
	// logged once for the channel, however many bad entries it had (the
	// logs are read from Caddy's output as it comes: wait for the line,
	// and for the good message's publish log after it)
	deadline := time.Now().Add(authWait)
	for strings.Count(c.Logs(), "bad event name") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(c.Logs(), "bad event name"); n != 1 {
		t.Fatalf("%d log lines about bad event names, want 1", n)
	}
	// a client resuming from before them on another node, which reads
	// them from Redis, does not get them either
	c2 := startAuthSite(t, authConfig{Hub: "redis " + rs.URL() + "\n\t\t" + ticketBlock("secret "+jwtSecret)}).c
	resumed := subscribe(t, c2, "/hub?channel=chat:1&last_event_id="+url.QueryEscape(first.ID)+tq(claimsReader), sseHeader())
	if ev := resumed.NextEvent(t, authWait); ev.Event != "chat.message-1" || ev.Data != "good" {
		t.Fatalf("a resume on another node got %+v first, want the good message", ev)
	}
}

var badRequestMetric = regexp.MustCompile(`(?m)^realtime_refusals_total\{reason="bad_request"\} (\d+)`)

// badRequestRefusals reads realtime_refusals_total{reason="bad_request"}.
func badRequestRefusals(t *testing.T, metrics string) int {
	t.Helper()
	m := badRequestMetric.FindStringSubmatch(metrics)
	if m == nil {
		return 0
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return n
}
