package integration_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/integration_test/harness"
	"github.com/caddy-realtime/realtime/internal/ssetest"
	"github.com/caddy-realtime/realtime/internal/testredis"
	"github.com/gorilla/websocket"
)

// Issue 5: resume. A client that drops and comes back, to the same node
// or another, gets exactly what it missed, in order, then live messages;
// when that is impossible it gets the reset signal.

const cursorSite = `
{
}
:{{.HTTPPort}} {
	realtime /hub* {
		hub
		{{.Redis}}
		publish_key k
		longpoll_timeout 2s
		replay {
			size {{.Size}}
		}
	}
	respond /other "{{.Marker}}"
}
`

func cursorStart(t *testing.T, rd *testredis.Server, size int) *harness.Caddy {
	t.Helper()
	redis := ""
	if rd != nil {
		redis = "redis " + rd.URL()
	}
	return harness.StartCaddy(t, cursorSite,
		harness.Var("Redis", redis), harness.Var("Size", size), harness.Var("Marker", "one"))
}

// sseStream is an open hub SSE subscription read with the sse package's
// WHATWG parser; events arrive on a channel so waits are bounded.
type cursorStream struct {
	resp   *http.Response
	events chan ssetest.Event
	gaps   int // gap signals nextMessage passed over
}

func cursorSSE(t *testing.T, c *harness.Caddy, query string, header http.Header) *cursorStream {
	t.Helper()
	req, _ := http.NewRequest("GET", c.URL("/hub?"+query), nil)
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := harness.HTTP1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		t.Fatalf("subscribe %s: %s", query, resp.Status)
	}
	s := &cursorStream{resp: resp, events: make(chan ssetest.Event, 1000)}
	ready := make(chan struct{})
	p := ssetest.NewParser(resp.Body)
	var once sync.Once
	p.OnRetry = func(time.Duration) { once.Do(func() { close(ready) }) }
	go func() {
		defer close(s.events)
		for {
			ev, err := p.Next()
			if err != nil {
				return
			}
			s.events <- ev
		}
	}()
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("no retry line within 5s")
	}
	t.Cleanup(func() { resp.Body.Close() })
	return s
}

func (s *cursorStream) next(t *testing.T) ssetest.Event {
	t.Helper()
	return nextWithin(t, s, 5*time.Second)
}

// nextWithin is the stream's next event, waiting at most d.
func nextWithin(t *testing.T, s *cursorStream, d time.Duration) (ev ssetest.Event) {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("stream ended")
		}
		return ev
	case <-time.After(d):
		t.Fatalf("no event within %v", d)
	}
	return ev
}

// nextMessage is the stream's next event other than a gap signal,
// waiting at most d for each: after a Redis failover the module tells the
// client that pub/sub messages may have been lost (the reset signal with
// reason gap) before the next message. A reset for any other reason
// fails the test.
func nextMessage(t *testing.T, s *cursorStream, d time.Duration) ssetest.Event {
	t.Helper()
	for {
		ev := nextWithin(t, s, d)
		if ev.Event != "realtime.reset" {
			return ev
		}
		if !strings.Contains(ev.Data, `"reason":"gap"`) {
			t.Fatalf("got the reset signal %s, want a message or a gap signal", ev.Data)
		}
		s.gaps++
	}
}

func (s *cursorStream) close() { s.resp.Body.Close() }

func cursorPost(t *testing.T, c *harness.Caddy, channel, data string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", c.URL("/hub?channel="+channel), strings.NewReader(data))
	req.Header.Set("Authorization", "Bearer k")
	resp, err := harness.HTTP1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ ID string }
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&out) != nil {
		t.Fatalf("publish: %s", resp.Status)
	}
	return out.ID
}

// expectData reads events and checks their data, in order.
func cursorExpect(t *testing.T, s *cursorStream, want ...string) []ssetest.Event {
	t.Helper()
	var got []ssetest.Event
	for _, w := range want {
		ev := s.next(t)
		if ev.Data != w {
			t.Fatalf("got event %q (%s %s), want %q", ev.Data, ev.Event, ev.ID, w)
		}
		got = append(got, ev)
	}
	return got
}

func TestCursorResumePubSub(t *testing.T) {
	rd := testredis.Start(t)
	c := cursorStart(t, rd, 100)
	s := cursorSSE(t, c, "channel=news", nil)
	for _, m := range []string{"one", "two"} {
		if _, err := rd.Do("PUBLISH", "realtime:news", m); err != nil {
			t.Fatal(err)
		}
	}
	evs := cursorExpect(t, s, "one", "two")
	s.close()
	// a lingering subscriber keeps the channel subscribed meanwhile
	keep := cursorSSE(t, c, "channel=news", nil)
	for _, m := range []string{"three", "four", "five"} {
		if _, err := rd.Do("PUBLISH", "realtime:news", m); err != nil {
			t.Fatal(err)
		}
	}
	cursorExpect(t, keep, "three", "four", "five")

	// the Last-Event-ID header wins over ?last_event_id=
	r := cursorSSE(t, c, "channel=news&last_event_id="+url.QueryEscape(evs[0].ID),
		http.Header{"Last-Event-Id": {evs[1].ID}})
	cursorExpect(t, r, "three", "four", "five")
	if _, err := rd.Do("PUBLISH", "realtime:news", "live"); err != nil {
		t.Fatal(err)
	}
	cursorExpect(t, r, "live")

	// the query parameter alone works too (a new EventSource)
	q := cursorSSE(t, c, "channel=news&last_event_id="+url.QueryEscape(evs[0].ID), nil)
	cursorExpect(t, q, "two", "three", "four", "five", "live")
	if !strings.Contains(c.Metrics(t), `realtime_resumes_total{from="cache"} 2`) {
		t.Fatal("resumes from the cache not counted in realtime_resumes_total")
	}
}

func TestCursorResumeStreamAcrossNodes(t *testing.T) {
	rd := testredis.Start(t)
	a := cursorStart(t, rd, 100)
	b := cursorStart(t, rd, 100)
	s := cursorSSE(t, a, "channel=orders", nil)
	if _, err := rd.Do("XADD", "realtime:orders", "*", "data", "first", "event", "created"); err != nil {
		t.Fatal(err)
	}
	first := s.next(t)
	if first.Data != "first" || first.Event != "created" || !strings.Contains(first.ID, "-") {
		t.Fatalf("first event %+v", first)
	}
	s.close()
	var ids []string
	for i := 0; i < 3; i++ {
		id, err := rd.Do("XADD", "realtime:orders", "*", "data", fmt.Sprint("missed ", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id.(string))
	}
	// node b never saw the channel: it reads what was missed from Redis
	r := cursorSSE(t, b, "channel=orders", http.Header{"Last-Event-Id": {first.ID}})
	got := cursorExpect(t, r, "missed 0", "missed 1", "missed 2")
	if !strings.Contains(b.Metrics(t), `realtime_resumes_total{from="redis"} 1`) {
		t.Fatal("resume from Redis not counted in realtime_resumes_total")
	}
	for i, ev := range got {
		if ev.ID != ids[i] {
			t.Fatalf("id %s on node b, stream id %s", ev.ID, ids[i])
		}
	}
	if _, err := rd.Do("XADD", "realtime:orders", "*", "data", "live"); err != nil {
		t.Fatal(err)
	}
	cursorExpect(t, r, "live")
}

func TestCursorMultiChannelWebSocket(t *testing.T) {
	c := cursorStart(t, nil, 100)
	dial := func(q string) *websocket.Conn {
		conn, _, err := websocket.DefaultDialer.Dial(harness.WSURL(c.URL("/hub?"+q)), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	type msg struct{ Type, Channel, ID, Data, LastEventID string }
	read := func(conn *websocket.Conn) msg {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		var m msg
		if err := conn.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	keep := dial("channel=a&channel=b") // keeps both channels live
	read(keep)
	conn := dial("channel=a&channel=b")
	if m := read(conn); m.Type != "subscribed" {
		t.Fatalf("first frame %+v", m)
	}
	cursorPost(t, c, "a", "a1")
	cursorPost(t, c, "b", "b1")
	read(conn)
	last := read(conn)
	conn.Close()
	cursorPost(t, c, "b", "b2")
	cursorPost(t, c, "a", "a2")
	cursorPost(t, c, "b", "b3")
	r := dial("channel=a&channel=b&last_event_id=" + url.QueryEscape(last.ID))
	if m := read(r); m.Type != "subscribed" {
		t.Fatalf("first frame %+v", m)
	}
	var got []string
	for i := 0; i < 3; i++ {
		got = append(got, read(r).Data)
	}
	if strings.Join(got, ",") != "b2,a2,b3" {
		t.Fatalf("resumed with %v, want b2,a2,b3", got)
	}
}

func TestCursorLongPollSteadyRate(t *testing.T) {
	c := cursorStart(t, nil, 1000)
	// the first poll gives the position to continue from
	poll := func(cursor string) ([]string, string) {
		u := c.URL("/hub?channel=tick")
		if cursor != "" {
			u += "&last_event_id=" + url.QueryEscape(cursor)
		}
		resp, err := harness.HTTP1Client().Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Messages    []struct{ Data string }
			LastEventID string `json:"last_event_id"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("poll: %s, %v", resp.Status, err)
		}
		var data []string
		for _, m := range out.Messages {
			data = append(data, m.Data)
		}
		return data, out.LastEventID
	}
	keep := cursorSSE(t, c, "channel=tick", nil) // the channel stays live
	_ = keep
	_, cursor := poll("")
	if cursor == "" {
		t.Fatal("first poll gave no position")
	}
	const total = 300
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for i := 0; i < total; i++ {
			<-tk.C
			cursorPost(t, c, "tick", fmt.Sprint(i))
		}
	}()
	var got []string
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < total && time.Now().Before(deadline) {
		var data []string
		data, cursor = poll(cursor)
		got = append(got, data...)
	}
	<-done
	if len(got) != total {
		t.Fatalf("got %d messages, want %d", len(got), total)
	}
	for i, d := range got {
		if d != fmt.Sprint(i) {
			t.Fatalf("message %d is %q: lost or out of order", i, d)
		}
	}
}

func TestCursorResets(t *testing.T) {
	c := cursorStart(t, nil, 5)
	keep := cursorSSE(t, c, "channel=r", nil)
	old := cursorPost(t, c, "r", "old")
	for i := 0; i < 10; i++ {
		cursorPost(t, c, "r", fmt.Sprint(i))
	}
	cursorExpect(t, keep, "old", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9")

	checkReset := func(s *cursorStream, reason string) ssetest.Event {
		t.Helper()
		ev := s.next(t)
		var data struct{ Channel, Reason string }
		if ev.Event != "realtime.reset" || json.Unmarshal([]byte(ev.Data), &data) != nil ||
			data.Channel != "r" || data.Reason != reason {
			t.Fatalf("got %s %q, want a reset (%s)", ev.Event, ev.Data, reason)
		}
		return ev
	}
	// too old: trimmed by replay size
	s := cursorSSE(t, c, "channel=r", http.Header{"Last-Event-Id": {old}})
	reset := checkReset(s, "expired")
	cursorPost(t, c, "r", "live")
	cursorExpect(t, s, "live")
	// resuming from the reset's id: no second reset, what followed it
	s2 := cursorSSE(t, c, "channel=r", http.Header{"Last-Event-Id": {reset.ID}})
	cursorExpect(t, s2, "live")
	// an id of an epoch this node never had
	s3 := cursorSSE(t, c, "channel=r", http.Header{"Last-Event-Id": {"p.zzzzzzzz.3"}})
	checkReset(s3, "unknown-id")
	cursorPost(t, c, "r", "after")
	cursorExpect(t, s3, "after")
	// undecodable: 400 with a reason
	resp, err := harness.HTTP1Client().Get(c.URL("/hub?channel=r&last_event_id=%01%02"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("undecodable cursor: %s", resp.Status)
	}
}

func TestCursorNodeRestartResets(t *testing.T) {
	rd := testredis.Start(t)
	c := cursorStart(t, rd, 100)
	s := cursorSSE(t, c, "channel=p", nil)
	if _, err := rd.Do("PUBLISH", "realtime:p", "before"); err != nil {
		t.Fatal(err)
	}
	ev := s.next(t)
	s.close()
	c.Restart(t)
	r := cursorSSE(t, c, "channel=p", http.Header{"Last-Event-Id": {ev.ID}})
	got := r.next(t)
	if got.Event != "realtime.reset" || !strings.Contains(got.Data, `"unknown-id"`) {
		t.Fatalf("after a restart got %s %q, want the reset signal", got.Event, got.Data)
	}
	if _, err := rd.Do("PUBLISH", "realtime:p", "after"); err != nil {
		t.Fatal(err)
	}
	cursorExpect(t, r, "after")
}

func TestCursorReloadLosesNothing(t *testing.T) {
	c := cursorStart(t, nil, 100)
	s := cursorSSE(t, c, "channel=rl", nil)
	cursorPost(t, c, "rl", "1")
	ev := s.next(t)
	s.close()
	cursorPost(t, c, "rl", "2") // the channel lingers for replay ttl
	c.Reload(t, strings.Replace(cursorSite, "{{.Marker}}", "two", 1))
	cursorPost(t, c, "rl", "3")
	r := cursorSSE(t, c, "channel=rl", http.Header{"Last-Event-Id": {ev.ID}})
	cursorExpect(t, r, "2", "3")
}

// TestCursorReloadWhilePublishing: messages published steadily through a
// config reload all reach an SSE client that resumes with its last id
// when the reload ends its stream: none lost, none twice, in order.
func TestCursorReloadWhilePublishing(t *testing.T) {
	// the backend publishes to Redis, which a reload does not interrupt
	rd := testredis.Start(t)
	c := cursorStart(t, rd, 1000)
	const total = 200
	done := make(chan struct{})
	s := cursorSSE(t, c, "channel=steady", nil)
	go func() {
		defer close(done)
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for i := 0; i < total; i++ {
			<-tk.C
			if _, err := rd.Do("XADD", "realtime:steady", "*", "data", fmt.Sprint(i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var got []string
	last := ""
	reloaded := false
	deadline := time.After(30 * time.Second)
	for len(got) < total {
		select {
		case ev, ok := <-s.events:
			if !ok {
				// the reload ended the stream: resume from the last id
				s = cursorSSE(t, c, "channel=steady", http.Header{"Last-Event-Id": {last}})
				continue
			}
			got = append(got, ev.Data)
			last = ev.ID
			if len(got) == total/4 && !reloaded {
				reloaded = true
				go c.Reload(t, strings.Replace(cursorSite, "{{.Marker}}", "two", 1))
			}
		case <-deadline:
			t.Fatalf("got %d of %d messages", len(got), total)
		}
	}
	<-done
	for i, d := range got {
		if d != fmt.Sprint(i) {
			t.Fatalf("message %d is %q: lost, duplicated or out of order", i, d)
		}
	}
	if !reloaded {
		t.Fatal("no reload happened")
	}
}
