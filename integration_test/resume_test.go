package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/integration_test/harness"
	"github.com/caddy-realtime/realtime/internal/testredis"
	"github.com/caddy-realtime/realtime/replay"
	"github.com/redis/go-redis/v9"
)

// Issue 5: replay and resume. A client that reconnects with the id of the
// last message it saw gets exactly what it missed, in order, then live
// messages; an id the hub cannot place gets the reset signal, never a
// silent gap. Across transports, nodes (stream-fed channels), restarts
// and reloads.

// resumeSite is one node of a hub fed by a shared Redis. Marker and
// Header let a reload change the config without touching the hub.
const resumeSite = `
:{{.HTTPPort}} {
	{{.Header}}
	realtime /hub* {
		hub
		redis {{.Redis}}
		publish_key {{.PublishKey}}
		heartbeat 10s
		longpoll_timeout 1s
		{{.Replay}}
	}
	respond /other "{{.Marker}}"
}
`

// startResumeNode starts one Caddy node of a hub fed by rd (a new Redis
// when nil), with the given replay block ("" for the defaults).
func startResumeNode(t *testing.T, rd *testredis.Server, replay string) *hubEnv {
	t.Helper()
	if rd == nil {
		rd = testredis.Start(t)
	}
	e := &hubEnv{rd: rd, client: harness.HTTP1Client()}
	e.c = harness.StartCaddy(t, resumeSite,
		harness.Var("Redis", rd.URL()),
		harness.Var("PublishKey", hubPublishKey),
		harness.Var("Replay", replay),
		harness.Var("Header", ""),
		harness.Var("Marker", "one"),
	)
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

// resumeMsg is a message as any transport delivers it.
type resumeMsg struct {
	Channel, ID, Event, Data string
}

func (m resumeMsg) String() string {
	return fmt.Sprintf("{%s id=%s event=%s data=%q}", m.Channel, m.ID, m.Event, m.Data)
}

// resumeClient is one subscription over one transport.
type resumeClient interface {
	// next returns the next message (reset signals included), failing
	// the test if none arrives within hubWait.
	next(t *testing.T) resumeMsg
	// close disconnects.
	close()
}

var resumeTransports = []string{"sse", "ws", "longpoll"}

// subscribeVia subscribes to channels over transport, resuming from
// cursor ("" for none) sent as ?last_event_id=, and returns once the
// subscription is live.
func (e *hubEnv) subscribeVia(t *testing.T, transport string, channels []string, cursor string) resumeClient {
	t.Helper()
	var extra []string
	if cursor != "" {
		extra = []string{"last_event_id", cursor}
	}
	if transport == "longpoll" {
		p := &pollClient{e: e, channels: channels, cursor: cursor}
		if cursor == "" {
			p.cursor = e.firstPoll(t, channels)
		}
		return p
	}
	return e.subscribeWith(t, transport, channels, extra...)
}

// resumeSSE opens an SSE subscription with header and waits for its
// retry line.
func (e *hubEnv) resumeSSE(t *testing.T, query string, header http.Header, channels []string) *sseClient {
	t.Helper()
	u := e.c.URL("/hub?" + query)
	r := harness.OpenSSE(t, e.client, u, header)
	resp := r.ResponseWithin(t, hubWait)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("SSE %s: status %d", u, resp.StatusCode)
	}
	if it := r.Next(t, hubWait); it.Kind != harness.KindRetry {
		t.Fatalf("SSE %s: first item %v, want the retry line", u, it)
	}
	s := &sseClient{r: r, json: len(channels) > 1}
	if len(channels) == 1 {
		s.channel = channels[0]
	}
	return s
}

type sseClient struct {
	r       *harness.SSEReader
	json    bool   // ?format=json: data is the message's JSON form
	channel string // of a one-channel subscription
}

func (s *sseClient) next(t *testing.T) resumeMsg {
	t.Helper()
	it := s.r.NextEvent(t, hubWait)
	m := resumeMsg{Channel: s.channel, ID: it.ID, Event: it.Event, Data: it.Data}
	if s.json {
		var f hubFrame
		if err := json.Unmarshal([]byte(it.Data), &f); err != nil {
			t.Fatalf("SSE format=json data %q: %v", it.Data, err)
		}
		if f.ID != it.ID || f.Event != it.Event {
			t.Errorf("SSE format=json: JSON id %q event %q, SSE id %q event %q", f.ID, f.Event, it.ID, it.Event)
		}
		m.Channel, m.Data = f.Channel, string(f.payload(t))
	}
	return m
}

func (s *sseClient) close() { s.r.Close() }

type wsClient struct{ w *hubWS }

func (c *wsClient) next(t *testing.T) resumeMsg {
	t.Helper()
	f := c.w.nextMessage(t)
	return resumeMsg{Channel: f.Channel, ID: f.ID, Event: f.Event, Data: string(f.payload(t))}
}

func (c *wsClient) close() {
	_ = c.w.conn.Close()
	<-c.w.done
}

// pollClient polls in a loop from its cursor, as a long-poll client does.
type pollClient struct {
	e        *hubEnv
	channels []string
	cursor   string
	first    []string // query pairs of the first poll only (rewind)
	buf      []hubFrame
}

func (p *pollClient) next(t *testing.T) resumeMsg {
	t.Helper()
	deadline := time.Now().Add(hubWait)
	for len(p.buf) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("long-poll: no message within %v (cursor %q)", hubWait, p.cursor)
		}
		var res pollResult
		if p.cursor == "" {
			res = p.e.poll(t, hubQuery(p.channels, p.first...))
		} else {
			res = p.e.poll(t, hubQuery(p.channels, "last_event_id", p.cursor))
		}
		if res.status != http.StatusOK {
			t.Fatalf("long-poll: status %d: %s", res.status, res.body)
		}
		p.buf = append(p.buf, res.decoded.Messages...)
		if n := len(res.decoded.Messages); n > 0 && res.cursor() != res.decoded.Messages[n-1].ID {
			t.Errorf("long-poll: last_event_id %q, want the last message's id %q", res.cursor(), res.decoded.Messages[n-1].ID)
		}
		p.cursor = res.cursor()
	}
	f := p.buf[0]
	p.buf = p.buf[1:]
	if f.Type != "" {
		t.Fatalf("long-poll: control object %+v among messages", f)
	}
	return resumeMsg{Channel: f.Channel, ID: f.ID, Event: f.Event, Data: string(f.payload(t))}
}

func (p *pollClient) close() {}

// expectMsgs reads len(want) messages and checks their payloads, in
// order, and that none is a reset. It returns them.
func expectMsgs(t *testing.T, what string, c resumeClient, want ...string) []resumeMsg {
	t.Helper()
	got := make([]resumeMsg, 0, len(want))
	for i, w := range want {
		m := c.next(t)
		got = append(got, m)
		if m.Data != w || m.Event != "message" || m.ID == "" {
			t.Fatalf("%s: message %d is %v, want data %q (all so far: %v)", what, i, m, w, got)
		}
	}
	return got
}

// expectReset reads the next message and checks it is the reset signal
// of channel with reason, in the transport's normal message form.
func expectReset(t *testing.T, what string, c resumeClient, channel, reason string) resumeMsg {
	t.Helper()
	m := c.next(t)
	if m.Event != "realtime.reset" {
		t.Fatalf("%s: got %v, want the reset signal (event realtime.reset)", what, m)
	}
	if m.Channel != channel {
		t.Errorf("%s: reset on channel %q, want %q", what, m.Channel, channel)
	}
	var data map[string]any
	if err := json.Unmarshal([]byte(m.Data), &data); err != nil {
		t.Fatalf("%s: reset data %q is not JSON: %v", what, m.Data, err)
	}
	if len(data) != 2 || data["channel"] != channel || data["reason"] != reason {
		t.Errorf("%s: reset data %s, want {\"channel\":%q,\"reason\":%q}", what, m.Data, channel, reason)
	}
	if m.ID == "" {
		t.Errorf("%s: reset without an id: %v", what, m)
	}
	return m
}

// payloads returns "<prefix><i>" for i in [from, to].
func payloads(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

// publishVia publishes each payload to channel by source: "pubsub"
// (PUBLISH), "stream" (XADD) or "http" (POST to the hub).
func (e *hubEnv) publishVia(t *testing.T, source, channel string, data ...string) {
	t.Helper()
	for _, d := range data {
		switch source {
		case "pubsub":
			e.redisPublish(t, channel, []byte(d))
		case "stream":
			e.redisXAdd(t, channel, []byte(d), "")
		case "http":
			e.mustPublish(t, channel, "", []byte(d))
		default:
			t.Fatalf("unknown source %q", source)
		}
	}
}

// TestResumeStreamIDsLive: XADD-fed messages are delivered live on every
// transport with the stream id as the message id, with their event name.
func TestResumeStreamIDsLive(t *testing.T) {
	t.Parallel()
	e := startResumeNode(t, nil, "")
	for _, tr := range resumeTransports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			ch := "live-" + tr
			c := e.subscribeVia(t, tr, []string{ch}, "")
			defer c.close()
			id1 := e.redisXAdd(t, ch, []byte("first"), "")
			id2 := e.redisXAdd(t, ch, []byte("second"), "update")
			m1, m2 := c.next(t), c.next(t)
			want := []resumeMsg{
				{ch, id1, "message", "first"},
				{ch, id2, "update", "second"},
			}
			if m1 != want[0] || m2 != want[1] {
				t.Fatalf("got %v %v, want %v", m1, m2, want)
			}
		})
	}
}

// TestResumePubSubOneNode: a client of a pub/sub-fed channel that
// reconnects to the same node with the id of the last message it saw
// gets exactly what it missed, in order, then live messages; the cursor
// goes as Last-Event-ID (SSE) or ?last_event_id= (every transport), and
// the header wins when both are present.
func TestResumePubSubOneNode(t *testing.T) {
	t.Parallel()
	e := startResumeNode(t, nil, "")
	tests := []struct {
		name      string
		transport string // of the first connection and the resumed one
		header    bool   // resume with Last-Event-ID
		query     bool   // resume with ?last_event_id=
	}{
		{"sse header", "sse", true, false},
		{"sse query", "sse", false, true},
		{"sse header wins", "sse", true, true},
		{"ws query", "ws", false, true},
		{"longpoll query", "longpoll", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ch := "ps-" + strings.ReplaceAll(tc.name, " ", "-")
			chans := []string{ch}
			c := e.subscribeVia(t, tc.transport, chans, "")
			e.publishVia(t, "pubsub", ch, payloads("m", 1, 3)...)
			seen := expectMsgs(t, "first connection", c, payloads("m", 1, 3)...)
			c.close()

			// missed while disconnected
			e.publishVia(t, "pubsub", ch, payloads("m", 4, 6)...)

			last := seen[2].ID
			var r resumeClient
			switch {
			case tc.transport != "sse":
				r = e.subscribeVia(t, tc.transport, chans, last)
			default:
				var h http.Header
				var extra []string
				if tc.header {
					h = http.Header{"Last-Event-ID": {last}}
				}
				if tc.query {
					q := last
					if tc.header {
						// the query would replay from m1: the header wins
						q = seen[0].ID
					}
					extra = []string{"last_event_id", q}
				}
				r = e.resumeSSE(t, hubQuery(chans, extra...), h, chans)
			}
			defer r.close()
			expectMsgs(t, "resumed", r, payloads("m", 4, 6)...)
			e.publishVia(t, "pubsub", ch, "m7")
			expectMsgs(t, "live after the replay", r, "m7")
		})
	}
}

// TestResumeStreamAcrossNodes: a stream-fed channel's client subscribes
// on node A, disconnects, and resumes on node B, whose cache never saw
// what it missed: B reads Redis. Then live messages, no duplicates.
func TestResumeStreamAcrossNodes(t *testing.T) {
	t.Parallel()
	rd := testredis.Start(t)
	a := startResumeNode(t, rd, "")
	b := startResumeNode(t, rd, "")
	for _, tr := range resumeTransports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			ch := "nodes-" + tr
			chans := []string{ch}
			c := a.subscribeVia(t, tr, chans, "")
			a.publishVia(t, "stream", ch, payloads("m", 1, 2)...)
			seen := expectMsgs(t, "node A", c, payloads("m", 1, 2)...)
			c.close()
			a.publishVia(t, "stream", ch, payloads("m", 3, 5)...)

			r := b.subscribeVia(t, tr, chans, seen[1].ID)
			defer r.close()
			got := expectMsgs(t, "resumed on node B", r, payloads("m", 3, 5)...)
			a.publishVia(t, "stream", ch, "m6")
			live := expectMsgs(t, "live on node B", r, "m6")
			for _, m := range append(got, live...) {
				if !isStreamID(m.ID) {
					t.Errorf("message %v: id is not a stream id", m)
				}
			}
		})
	}
	// node B's cache holds only the newest of the missed messages (it
	// subscribed the channel meanwhile): what came before is read from
	// Redis all the same
	t.Run("partly cached", func(t *testing.T) {
		t.Parallel()
		ch := "nodes-partly"
		chans := []string{ch}
		c := a.subscribeVia(t, "sse", chans, "")
		a.publishVia(t, "stream", ch, "m1")
		seen := expectMsgs(t, "node A", c, "m1")
		c.close()
		a.publishVia(t, "stream", ch, "m2", "m3")
		other := b.subscribeVia(t, "ws", chans, "")
		defer other.close()
		a.publishVia(t, "stream", ch, "m4", "m5")
		expectMsgs(t, "other client on node B", other, "m4", "m5")

		r := b.subscribeVia(t, "sse", chans, seen[0].ID)
		defer r.close()
		expectMsgs(t, "resumed on node B", r, "m2", "m3", "m4", "m5")
		a.publishVia(t, "stream", ch, "m6")
		expectMsgs(t, "live on node B", r, "m6")
	})
}

func isStreamID(id string) bool {
	ms, seq, ok := strings.Cut(id, "-")
	return ok && ms != "" && seq != "" && strings.Trim(ms+seq, "0123456789") == ""
}

// TestResumeMultiChannel: the cursor of a subscription to several
// channels resumes every one of them, on every transport.
func TestResumeMultiChannel(t *testing.T) {
	t.Parallel()
	e := startResumeNode(t, nil, "")
	for _, source := range []string{"pubsub", "stream"} {
		for _, tr := range resumeTransports {
			t.Run(source+"/"+tr, func(t *testing.T) {
				t.Parallel()
				ca, cb := "multi-a-"+source+"-"+tr, "multi-b-"+source+"-"+tr
				chans := []string{ca, cb}
				c := e.subscribeVia(t, tr, chans, "")
				e.publishVia(t, source, ca, "a1")
				e.publishVia(t, source, cb, "b1")
				seen := expectMsgs(t, "first connection", c, "a1", "b1")
				if seen[0].Channel != ca || seen[1].Channel != cb {
					t.Fatalf("channels %q %q, want %q %q", seen[0].Channel, seen[1].Channel, ca, cb)
				}
				c.close()
				// each published on one channel, then the other: the
				// node receives them in this order
				e.publishVia(t, source, ca, "a2")
				e.publishVia(t, source, cb, "b2")
				e.publishVia(t, source, ca, "a3")

				r := e.subscribeVia(t, tr, chans, seen[1].ID)
				defer r.close()
				got := expectMsgs(t, "resumed", r, "a2", "b2", "a3")
				for i, want := range []string{ca, cb, ca} {
					if got[i].Channel != want {
						t.Errorf("message %v on channel %q, want %q", got[i], got[i].Channel, want)
					}
				}
				e.publishVia(t, source, cb, "b3")
				e.publishVia(t, source, ca, "a4")
				expectMsgs(t, "live", r, "b3", "a4")

				// the cursor of the last replayed message still places
				// both channels
				r.close()
				r2 := e.subscribeVia(t, tr, chans, got[2].ID)
				defer r2.close()
				expectMsgs(t, "resumed again", r2, "b3", "a4")
			})
		}
	}
}

// TestResumeLongPollSteadyRate: a long-poll client that polls in a loop
// while messages are published every 5ms gets every one of them, in
// order, once.
func TestResumeLongPollSteadyRate(t *testing.T) {
	t.Parallel()
	e := startResumeNode(t, nil, "")
	for _, source := range []string{"pubsub", "stream"} {
		for _, nchans := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/%d channels", source, nchans), func(t *testing.T) {
				t.Parallel()
				var chans []string
				for i := 0; i < nchans; i++ {
					chans = append(chans, fmt.Sprintf("rate-%s-%d-%d", source, nchans, i))
				}
				cursor := e.firstPoll(t, chans)
				rdb := e.rd.Client()

				type pub struct{ channel, data, id string }
				var (
					mu        sync.Mutex
					published []pub
					pubErr    error
				)
				pubDone := make(chan struct{})
				go func() {
					defer close(pubDone)
					tick := time.NewTicker(5 * time.Millisecond)
					defer tick.Stop()
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					end := time.Now().Add(2 * time.Second)
					for i := 0; time.Now().Before(end); i++ {
						<-tick.C
						p := pub{channel: chans[i%nchans], data: fmt.Sprintf("n%d", i)}
						var err error
						if source == "pubsub" {
							err = rdb.Publish(ctx, "realtime:"+p.channel, p.data).Err()
						} else {
							p.id, err = rdb.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:" + p.channel, Values: []any{"data", p.data}}).Result()
						}
						mu.Lock()
						if err != nil {
							pubErr = err
							mu.Unlock()
							return
						}
						published = append(published, p)
						mu.Unlock()
					}
				}()

				var got []pub
				ids := map[string]bool{}
				polls := 0
				deadline := time.Now().Add(20 * time.Second)
				for {
					finished := false
					select {
					case <-pubDone:
						finished = true
					default:
					}
					mu.Lock()
					n, err := len(published), pubErr
					mu.Unlock()
					if err != nil {
						t.Fatalf("publishing: %v", err)
					}
					if finished && len(got) >= n {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("got %d of %d messages within 20s", len(got), n)
					}
					res, err := hubPollErr(e.client, e.c.URL("/hub?"+hubQuery(chans, "last_event_id", cursor)))
					if err != nil {
						t.Fatal(err)
					}
					if res.status != http.StatusOK {
						t.Fatalf("poll %d: status %d: %s", polls, res.status, res.body)
					}
					polls++
					for _, m := range res.decoded.Messages {
						if m.Event != "message" {
							t.Fatalf("poll %d: %+v, want a plain message (a reset means a lost position)", polls, m)
						}
						if ids[m.ID] {
							t.Fatalf("poll %d: id %q twice", polls, m.ID)
						}
						ids[m.ID] = true
						got = append(got, pub{m.Channel, string(m.payload(t)), ""})
					}
					cursor = res.cursor()
					if polls%4 == 0 {
						// a client's think time between polls, so that
						// messages pile up for the next one
						time.Sleep(25 * time.Millisecond)
					}
				}
				mu.Lock()
				defer mu.Unlock()
				if len(published) < 100 {
					t.Fatalf("only %d messages published in 2s", len(published))
				}
				if len(got) != len(published) {
					t.Fatalf("got %d messages, published %d", len(got), len(published))
				}
				checkReceivedOrder(t, got, published, func(p pub) (string, string, string) { return p.channel, p.data, p.id })
				t.Logf("%d messages in %d polls", len(got), polls)
			})
		}
	}
}

// checkReceivedOrder fails the test unless got holds the published
// messages (key gives each one's channel, unique data and stream id, ""
// for pub/sub), each once, in the order published. One exception:
// stream entries of different channels added in the same millisecond
// carry ids that tie (each stream numbers its own entries), so Redis
// itself cannot tell their order, and neither can the hub.
func checkReceivedOrder[P any](t *testing.T, got, published []P, key func(P) (channel, data, id string)) {
	t.Helper()
	at := map[string]int{}
	for i, p := range published {
		_, data, _ := key(p)
		at[data] = i
	}
	last := map[string]int{} // channel -> index of its last message got
	for i, g := range got {
		channel, data, _ := key(g)
		j, ok := at[data]
		if !ok {
			t.Fatalf("message %d: %+v was never published", i, g)
		}
		if k, seen := last[channel]; seen && j <= k {
			t.Fatalf("message %d: %+v after %+v on its channel: duplicated or out of order", i, g, published[k])
		}
		last[channel] = j
		if i == 0 {
			continue
		}
		prevChannel, prevData, _ := key(got[i-1])
		k := at[prevData]
		if k < j {
			continue
		}
		_, _, id := key(published[j])
		_, _, prevID := key(published[k])
		ms, _, _ := strings.Cut(id, "-")
		prevMS, _, _ := strings.Cut(prevID, "-")
		if id == "" || prevChannel == channel || ms != prevMS {
			t.Fatalf("message %d: got %+v after %+v, published the other way round", i, g, got[i-1])
		}
	}
}

// TestResetExpired: an id older than what the replay cache keeps gets
// the reset signal with reason expired, then live delivery; the reset's
// id is a resume point that replays what came after it, without a
// second reset.
// (A stream-fed channel whose messages left the cache but not Redis
// resumes from Redis instead; TestResetTrimmedStream covers a stream
// trimmed in Redis too.)
func TestResetExpired(t *testing.T) {
	t.Parallel()
	e := startResumeNode(t, nil, "replay {\n\t\t\tsize 5\n\t\t}")
	for _, source := range []string{"pubsub", "stream"} {
		for _, tr := range resumeTransports {
			t.Run(source+"/"+tr, func(t *testing.T) {
				t.Parallel()
				ch := "expired-" + source + "-" + tr
				chans := []string{ch}
				// a client that stays: once it has a message, so has the
				// node's replay cache
				watcher := e.subscribeVia(t, "ws", chans, "")
				defer watcher.close()
				c := e.subscribeVia(t, tr, chans, "")
				e.publishVia(t, source, ch, "m1")
				seen := expectMsgs(t, "first connection", c, "m1")
				expectMsgs(t, "watcher", watcher, "m1")
				c.close()
				e.publishVia(t, source, ch, payloads("m", 2, 8)...)
				expectMsgs(t, "watcher", watcher, payloads("m", 2, 8)...)

				r := e.subscribeVia(t, tr, chans, seen[0].ID)
				if source == "stream" {
					// the cache dropped them, Redis still has them: the
					// node reads what was missed from the stream
					expectMsgs(t, "resumed from Redis", r, payloads("m", 2, 8)...)
					e.publishVia(t, source, ch, "m9")
					expectMsgs(t, "live", r, "m9")
					r.close()
					return
				}
				reset := expectReset(t, "resume from a too old id", r, ch, "expired")
				e.publishVia(t, source, ch, "m9")
				expectMsgs(t, "live after the reset", r, "m9")
				r.close()

				r2 := e.subscribeVia(t, tr, chans, reset.ID)
				defer r2.close()
				expectMsgs(t, "resumed from the reset's id", r2, "m9")
				e.publishVia(t, source, ch, "m10")
				expectMsgs(t, "live", r2, "m10")
			})
		}
	}
}

// TestResetUnknownID: an id the hub cannot place, that has the shape of
// one, gets the reset signal with reason unknown-id, then live delivery;
// resuming from the reset's id works.
func TestResetUnknownID(t *testing.T) {
	t.Parallel()
	e := startResumeNode(t, nil, "")
	cursors := []struct {
		name, cursor string
	}{
		{"node id of another epoch", "p.zzzzzzzz.3"},
		{"stream id after the last", "99999999999999-0"},
		{"printable non-id", "not-an-id"},
	}
	for _, cc := range cursors {
		for _, tr := range resumeTransports {
			t.Run(cc.name+"/"+tr, func(t *testing.T) {
				t.Parallel()
				ch := "unknown-" + strings.ReplaceAll(cc.name, " ", "-") + "-" + tr
				chans := []string{ch}
				// the channel has a stream (so a stream id can be
				// compared with it) and is fed by pub/sub as well
				e.publishVia(t, "stream", ch, "before")

				r := e.subscribeVia(t, tr, chans, cc.cursor)
				reset := expectReset(t, "resume from "+cc.cursor, r, ch, "unknown-id")
				e.publishVia(t, "pubsub", ch, "live1")
				expectMsgs(t, "live after the reset", r, "live1")
				r.close()

				r2 := e.subscribeVia(t, tr, chans, reset.ID)
				defer r2.close()
				expectMsgs(t, "resumed from the reset's id", r2, "live1")
				e.publishVia(t, "stream", ch, "live2")
				expectMsgs(t, "live", r2, "live2")
			})
		}
	}
	// with Last-Event-ID, the header form of the cursor
	t.Run("sse header", func(t *testing.T) {
		t.Parallel()
		ch := "unknown-header"
		r := e.resumeSSE(t, hubQuery([]string{ch}), http.Header{"Last-Event-ID": {"p.zzzzzzzz.3"}}, []string{ch})
		defer r.close()
		expectReset(t, "Last-Event-ID p.zzzzzzzz.3", r, ch, "unknown-id")
		e.publishVia(t, "pubsub", ch, "live")
		expectMsgs(t, "live after the reset", r, "live")
	})
}

// TestResumeUndecodableCursor: a cursor that cannot be an id (not
// printable ASCII, or longer than 8 KiB) is a 400 with a reason, on every
// transport and in the header.
func TestResumeUndecodableCursor(t *testing.T) {
	t.Parallel()
	e := startResumeNode(t, nil, "")
	bad := []struct{ name, cursor string }{
		{"space", "p.abc 1"},
		{"control byte", "p.abc.\x01"},
		{"non-ascii", "p.é.1"},
		{"too long", strings.Repeat("a", 9000)},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			q := "/hub?" + hubQuery([]string{"bad"}, "last_event_id", b.cursor)
			for _, tr := range resumeTransports {
				status, body := resumeGet(t, e, tr, q, nil)
				if status != http.StatusBadRequest {
					t.Errorf("%s: status %d, want 400 (%s)", tr, status, body)
				} else if !strings.Contains(body, "last event id") {
					t.Errorf("%s: body %q, want a reason", tr, body)
				}
			}
			if strings.ContainsAny(b.cursor, "\x01") {
				return // net/http refuses to send such a header
			}
			status, body := resumeGet(t, e, "sse", "/hub?channel=bad", http.Header{"Last-Event-ID": {b.cursor}})
			if status != http.StatusBadRequest {
				t.Errorf("Last-Event-ID: status %d, want 400 (%s)", status, body)
			}
		})
	}
}

// resumeGet sends one subscription request and returns the status and
// (short) body of a refusal; 200 answers are not read.
func resumeGet(t *testing.T, e *hubEnv, transport, pathQuery string, h http.Header) (int, string) {
	t.Helper()
	if transport == "ws" {
		conn, resp, err := harness.WSDialer().Dial(harness.WSURL(e.c.URL(pathQuery)), h)
		if err == nil {
			_ = conn.Close()
			return http.StatusSwitchingProtocols, ""
		}
		if resp == nil {
			t.Fatalf("websocket: %v", err)
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, string(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hubWait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.c.URL(pathQuery), nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if transport == "sse" {
		req.Header.Set("Accept", "text/event-stream")
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", transport, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, ""
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b)
}

// TestResetAfterRestart: a restarted node has lost its replay cache: a
// pub/sub-fed id from before the restart gets the reset signal (not a
// silent gap) on every transport, then live messages; a stream-fed id
// still resumes without loss, from Redis.
func TestResetAfterRestart(t *testing.T) {
	t.Parallel()
	e := startResumeNode(t, nil, "")
	const ps, st = "restart-pubsub", "restart-stream"
	c := e.subscribeVia(t, "sse", []string{ps}, "")
	e.publishVia(t, "pubsub", ps, "m1")
	psID := expectMsgs(t, "before the restart", c, "m1")[0].ID
	c.close()
	c = e.subscribeVia(t, "sse", []string{st}, "")
	e.publishVia(t, "stream", st, "s1")
	stID := expectMsgs(t, "before the restart", c, "s1")[0].ID
	c.close()

	e.c.Restart(t)
	e.publishVia(t, "stream", st, "s2", "s3")

	var resumed []resumeClient
	for _, tr := range resumeTransports {
		r := e.subscribeVia(t, tr, []string{ps}, psID)
		defer r.close()
		reset := expectReset(t, tr+" after the restart", r, ps, "unknown-id")
		if reset.ID == psID {
			t.Errorf("%s: reset id %q is the old id", tr, reset.ID)
		}
		resumed = append(resumed, r)

		rs := e.subscribeVia(t, tr, []string{st}, stID)
		defer rs.close()
		expectMsgs(t, tr+" stream-fed after the restart", rs, "s2", "s3")
		resumed = append(resumed, rs)
	}
	e.publishVia(t, "pubsub", ps, "m2")
	e.publishVia(t, "stream", st, "s4")
	for i, r := range resumed {
		want := "m2"
		if i%2 == 1 {
			want = "s4"
		}
		expectMsgs(t, resumeTransports[i/2]+" live after the restart", r, want)
	}
}

// TestResumeAcrossReload: a reload between a client's disconnect and its
// resume, with the same or a slightly different Caddyfile (the hub's
// configuration kept), loses nothing: the replay cache lives on.
func TestResumeAcrossReload(t *testing.T) {
	t.Parallel()
	reloads := []struct{ name, caddyfile string }{
		{"same config", resumeSite},
		{"other route changed", strings.Replace(resumeSite, "{{.Marker}}", "two", 1)},
		{"header added", strings.Replace(resumeSite, "{{.Header}}", "header X-Reloaded yes", 1)},
	}
	for _, rl := range reloads {
		t.Run(rl.name, func(t *testing.T) {
			t.Parallel()
			e := startResumeNode(t, nil, "")
			for _, source := range []string{"pubsub", "stream"} {
				for _, tr := range resumeTransports {
					ch := "reload-" + source + "-" + tr
					c := e.subscribeVia(t, tr, []string{ch}, "")
					e.publishVia(t, source, ch, "m1")
					seen := expectMsgs(t, source+"/"+tr+" before the reload", c, "m1")
					c.close()
					e.publishVia(t, source, ch, "m2")

					e.c.Reload(t, rl.caddyfile)
					e.publishVia(t, source, ch, "m3")

					r := e.subscribeVia(t, tr, []string{ch}, seen[0].ID)
					expectMsgs(t, source+"/"+tr+" resumed after the reload", r, "m2", "m3")
					e.publishVia(t, source, ch, "m4")
					expectMsgs(t, source+"/"+tr+" live after the reload", r, "m4")
					r.close()
				}
			}
		})
	}

	// an SSE stream open during the reload ends with a retry hint; the
	// client resumes from its last id and misses nothing
	t.Run("open sse stream", func(t *testing.T) {
		t.Parallel()
		e := startResumeNode(t, nil, "")
		const ch = "reload-open"
		s := e.resumeSSE(t, hubQuery([]string{ch}), nil, []string{ch})
		e.publishVia(t, "pubsub", ch, "m1")
		last := expectMsgs(t, "before the reload", s, "m1")[0].ID
		e.c.Reload(t, strings.Replace(resumeSite, "{{.Marker}}", "two", 1))
		rest, _ := s.r.WaitEnd(t, hubWait)
		retry := false
		for _, it := range rest {
			switch it.Kind {
			case harness.KindRetry:
				retry = true
			case harness.KindEvent:
				t.Fatalf("event after the reload on the old stream: %v", it)
			}
		}
		if !retry {
			t.Errorf("stream ended by the reload without a retry hint: %v", rest)
		}
		e.publishVia(t, "pubsub", ch, "m2")
		r := e.resumeSSE(t, hubQuery([]string{ch}), http.Header{"Last-Event-ID": {last}}, []string{ch})
		defer r.close()
		expectMsgs(t, "resumed", r, "m2")
		e.publishVia(t, "pubsub", ch, "m3")
		expectMsgs(t, "live", r, "m3")
	})
}

// TestReloadKeepsHubWebSockets: hub WebSocket connections stay open,
// and keep receiving, across a reload that keeps the hub's
// configuration.
func TestReloadKeepsHubWebSockets(t *testing.T) {
	t.Parallel()
	reloads := []struct{ name, caddyfile string }{
		{"other route changed", strings.Replace(resumeSite, "{{.Marker}}", "two", 1)},
		{"header added", strings.Replace(resumeSite, "{{.Header}}", "header X-Reloaded yes", 1)},
		{"another site", resumeSite + "\nhttp://other.localhost:{{.HTTPPort}} {\n\trespond \"other site\"\n}\n"},
	}
	for _, rl := range reloads {
		t.Run(rl.name, func(t *testing.T) {
			t.Parallel()
			e := startResumeNode(t, nil, "")
			const ch = "ws-reload"
			multi := []string{ch, "ws-reload-b"}
			w1 := e.subscribeVia(t, "ws", []string{ch}, "").(*wsClient)
			w2 := e.subscribeVia(t, "ws", multi, "").(*wsClient)
			e.publishVia(t, "pubsub", ch, "before")
			expectMsgs(t, "before the reload", w1, "before")
			expectMsgs(t, "before the reload", w2, "before")

			e.c.Reload(t, rl.caddyfile)
			if rl.name == "other route changed" {
				// the new config is in effect
				checkMarker(t, e, "two")
			}
			e.publishVia(t, "pubsub", ch, "after 1")
			e.publishVia(t, "http", ch, "after 2")
			e.publishVia(t, "stream", "ws-reload-b", "after 3")
			expectMsgs(t, "one channel, after the reload", w1, "after 1", "after 2")
			expectMsgs(t, "two channels, after the reload", w2, "after 1", "after 2", "after 3")
			for _, w := range []*wsClient{w1, w2} {
				select {
				case <-w.w.done:
					t.Fatalf("websocket closed: %v", w.w.err)
				default:
				}
			}
		})
	}
}

// checkMarker checks what /other answers (which config is loaded).
func checkMarker(t *testing.T, e *hubEnv, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hubWait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.c.URL("/other"), nil)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if string(b) != want {
		t.Fatalf("/other answers %q, want %q", b, want)
	}
}

// TestResumeSubscribedPosition: the position a WebSocket's subscribed
// frame carries resumes a client that left before its first message.
func TestResumeSubscribedPosition(t *testing.T) {
	t.Parallel()
	e := startResumeNode(t, nil, "")
	for _, source := range []string{"pubsub", "stream"} {
		for _, n := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/%d channels", source, n), func(t *testing.T) {
				t.Parallel()
				var chans []string
				for i := 0; i < n; i++ {
					chans = append(chans, fmt.Sprintf("subpos-%s-%d-%d", source, n, i))
				}
				w := e.subscribeVia(t, "ws", chans, "").(*wsClient)
				pos := w.w.sub.LastEventID
				if pos == "" {
					t.Fatalf("subscribed frame %+v without last_event_id", w.w.sub)
				}
				w.close()
				for _, ch := range chans {
					e.publishVia(t, source, ch, ch+"/1")
				}
				r := e.subscribeVia(t, "ws", chans, pos)
				defer r.close()
				var want []string
				for _, ch := range chans {
					want = append(want, ch+"/1")
				}
				expectMsgs(t, "resumed from the subscribed position", r, want...)
				e.publishVia(t, source, chans[0], "live")
				expectMsgs(t, "live", r, "live")
			})
		}
	}
}

// TestResumeChannelSetChange: a client may change its channel set and
// keep its cursor: channels it added start live, positions of channels
// it left are ignored.
func TestResumeChannelSetChange(t *testing.T) {
	t.Parallel()
	e := startResumeNode(t, nil, "")
	for _, tr := range resumeTransports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			a, b, c := "set-a-"+tr, "set-b-"+tr, "set-c-"+tr
			// one channel, then a channel added: a's missed messages
			// are replayed, b starts live
			s := e.subscribeVia(t, tr, []string{a}, "")
			e.publishVia(t, "pubsub", a, "a1")
			id := expectMsgs(t, "one channel", s, "a1")[0].ID
			s.close()
			e.publishVia(t, "pubsub", a, "a2")
			e.publishVia(t, "pubsub", b, "b-before")
			s = e.subscribeVia(t, tr, []string{a, b}, id)
			got := expectMsgs(t, "channel added", s, "a2")
			e.publishVia(t, "pubsub", b, "b1")
			got = append(got, expectMsgs(t, "channel added, live", s, "b1")...)
			s.close()

			// two channels, then one left and another added
			e.publishVia(t, "pubsub", a, "a3")
			e.publishVia(t, "pubsub", b, "b2")
			s = e.subscribeVia(t, tr, []string{b, c}, got[1].ID)
			defer s.close()
			expectMsgs(t, "channel left and one added", s, "b2")
			e.publishVia(t, "pubsub", c, "c1")
			e.publishVia(t, "pubsub", a, "a4") // not subscribed any more
			e.publishVia(t, "pubsub", b, "b3")
			expectMsgs(t, "live", s, "c1", "b3")
		})
	}
}

// TestResetMultiChannelPartly: in a cursor of several channels, only
// the channel whose position cannot be placed gets the reset signal; the
// others resume.
func TestResetMultiChannelPartly(t *testing.T) {
	t.Parallel()
	e := startResumeNode(t, nil, "")
	for _, tr := range resumeTransports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			a, b := "partly-a-"+tr, "partly-b-"+tr
			chans := []string{a, b}
			s := e.subscribeVia(t, tr, []string{a}, "")
			e.publishVia(t, "pubsub", a, "a1")
			id := expectMsgs(t, "one channel", s, "a1")[0].ID
			s.close()
			e.publishVia(t, "pubsub", a, "a2")
			cursor := replay.EncodeCursor([]replay.Position{{Channel: a, ID: id}, {Channel: b, ID: "p.zzzzzzzz.3"}})
			r := e.subscribeVia(t, tr, chans, cursor)
			defer r.close()
			// the reset and a2 may come in either order
			m1, m2 := r.next(t), r.next(t)
			if m1.Event == "realtime.reset" {
				m1, m2 = m2, m1
			}
			if m1.Data != "a2" || m1.Channel != a {
				t.Fatalf("got %v and %v, want a2 on %s and a reset on %s", m1, m2, a, b)
			}
			if m2.Event != "realtime.reset" || m2.Channel != b || !strings.Contains(m2.Data, `"reason":"unknown-id"`) {
				t.Fatalf("got %v, want the reset signal of %s (unknown-id)", m2, b)
			}
			e.publishVia(t, "pubsub", b, "b1")
			e.publishVia(t, "pubsub", a, "a3")
			got := expectMsgs(t, "live", r, "b1", "a3")
			r.close()

			// the cursor of the last message places both
			e.publishVia(t, "pubsub", b, "b2")
			r2 := e.subscribeVia(t, tr, chans, got[1].ID)
			defer r2.close()
			expectMsgs(t, "resumed", r2, "b2")
		})
	}
}

// TestResetTrimmedStream: a stream-fed id older than what Redis still
// retains, resumed on a node that never cached the channel, gets the
// reset signal with reason expired, then live messages.
func TestResetTrimmedStream(t *testing.T) {
	t.Parallel()
	rd := testredis.Start(t)
	a := startResumeNode(t, rd, "")
	b := startResumeNode(t, rd, "")
	for _, tr := range resumeTransports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			ch := "trimmed-" + tr
			c := a.subscribeVia(t, tr, []string{ch}, "")
			a.publishVia(t, "stream", ch, "m1")
			id := expectMsgs(t, "node A", c, "m1")[0].ID
			c.close()
			a.publishVia(t, "stream", ch, payloads("m", 2, 6)...)
			if _, err := rd.Do("XTRIM", "realtime:"+ch, "MAXLEN", "2"); err != nil {
				t.Fatal(err)
			}
			r := b.subscribeVia(t, tr, []string{ch}, id)
			defer r.close()
			expectReset(t, "resumed on node B", r, ch, "expired")
			a.publishVia(t, "stream", ch, "m7")
			expectMsgs(t, "live", r, "m7")
		})
	}
}

// TestResetReloadNewReplayConfig: a reload that changes the replay
// configuration starts a new replay cache: a pub/sub-fed id from before
// gets the reset signal, never a silent gap.
func TestResetReloadNewReplayConfig(t *testing.T) {
	t.Parallel()
	e := startResumeNode(t, nil, "")
	const ch = "newconfig"
	c := e.subscribeVia(t, "sse", []string{ch}, "")
	e.publishVia(t, "pubsub", ch, "m1")
	id := expectMsgs(t, "before the reload", c, "m1")[0].ID
	c.close()
	e.c.Reload(t, strings.Replace(resumeSite, "{{.Replay}}", "replay {\n\t\t\tsize 50\n\t\t}", 1))
	e.publishVia(t, "pubsub", ch, "m2")
	for _, tr := range resumeTransports {
		r := e.subscribeVia(t, tr, []string{ch}, id)
		defer r.close()
		expectReset(t, tr+" after the reload", r, ch, "unknown-id")
	}
}

// TestResumeReconnectLoop: a client that keeps dropping and resuming
// while messages are published every 5ms gets every one of them, in
// order, once: pub/sub-fed on one node, stream-fed alternating between
// two nodes.
func TestResumeReconnectLoop(t *testing.T) {
	t.Parallel()
	rd := testredis.Start(t)
	nodes := []*hubEnv{startResumeNode(t, rd, ""), startResumeNode(t, rd, "")}
	for _, source := range []string{"pubsub", "stream"} {
		for _, tr := range resumeTransports {
			t.Run(source+"/"+tr, func(t *testing.T) {
				t.Parallel()
				ch := "loop-" + source + "-" + tr
				chans := []string{ch}
				rdb := rd.Client()
				c := nodes[0].subscribeVia(t, tr, chans, "")

				var published []string
				pubErr := make(chan error, 1)
				go func() {
					tick := time.NewTicker(5 * time.Millisecond)
					defer tick.Stop()
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					end := time.Now().Add(2 * time.Second)
					for i := 0; ; i++ {
						<-tick.C
						data := fmt.Sprintf("n%d", i)
						if !time.Now().Before(end) {
							data = "end"
						}
						var err error
						if source == "pubsub" {
							err = rdb.Publish(ctx, "realtime:"+ch, data).Err()
						} else {
							err = rdb.Do(ctx, "XADD", "realtime:"+ch, "*", "data", data).Err()
						}
						if err == nil {
							published = append(published, data)
						}
						if err != nil || data == "end" {
							pubErr <- err
							return
						}
					}
				}()

				var got []resumeMsg
				ids := map[string]bool{}
				reconnects := 0
				for len(got) == 0 || got[len(got)-1].Data != "end" {
					// stay for a few messages, then drop and resume
					for k := 0; k < 3+reconnects%17; k++ {
						m := c.next(t)
						if m.Event != "message" || ids[m.ID] {
							tail := got
							if len(tail) > 5 {
								tail = tail[len(tail)-5:]
							}
							t.Fatalf("after %d reconnects: %v (a reset, or an id seen before); last ones before: %v", reconnects, m, tail)
						}
						ids[m.ID] = true
						got = append(got, m)
						if m.Data == "end" {
							break
						}
					}
					c.close()
					reconnects++
					node := nodes[0]
					if source == "stream" {
						node = nodes[reconnects%2]
					}
					c = node.subscribeVia(t, tr, chans, got[len(got)-1].ID)
				}
				c.close()
				if err := <-pubErr; err != nil {
					t.Fatalf("publishing: %v", err)
				}
				if len(got) != len(published) {
					t.Fatalf("got %d messages, published %d", len(got), len(published))
				}
				for i := range got {
					if got[i].Data != published[i] {
						t.Fatalf("message %d: got %v, published %q", i, got[i], published[i])
					}
				}
				t.Logf("%d messages, %d reconnects", len(got), reconnects)
			})
		}
	}
}
