package integration_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddy-realtime/realtime/integration_test/harness"
	"github.com/caddy-realtime/realtime/internal/testredis"
	"github.com/gorilla/websocket"
)

// Issue 4: the hub. Redis-fed (and HTTP-published) channels delivered live
// over SSE, WebSocket and long-poll by a real Caddy, fed by a real
// redis-server.

// hubWait bounds each wait of these tests for something that should
// happen at once (a message, a readiness signal).
const hubWait = 5 * time.Second

// hubPublishKey is the publish key of the test hubs.
const hubPublishKey = "test-publish-key"

// hubSite serves a hub at /hub* over HTTP/1.1 (http_port) and HTTPS with
// HTTP/2 (https_port), and, at /nokey*, a hub of the same broker without
// a publish key.
const hubSite = `
{
	{{.Globals}}
}

:{{.HTTPPort}}, https://127.0.0.1:{{.HTTPSPort}} {
	realtime /hub* {
		hub
		{{.Redis}}
		publish_key {{.PublishKey}}
		heartbeat {{.Heartbeat}}
		longpoll_timeout {{.LongpollTimeout}}
		{{.Extra}}
	}
	realtime /nokey* {
		hub
		{{.Redis}}
		heartbeat {{.Heartbeat}}
		longpoll_timeout {{.LongpollTimeout}}
	}
}
`

// hubOpts configures hubSite.
type hubOpts struct {
	embedded        bool   // no redis line: the in-process broker
	heartbeat       string // default 10s
	longpollTimeout string // default 1s
	extra           string // more realtime subdirectives of /hub
	globals         string // global options
}

// hubEnv is one Caddy serving a hub, and its Redis (nil when embedded).
type hubEnv struct {
	c      *harness.Caddy
	rd     *testredis.Server
	client *http.Client // HTTP/1.1, for requests and streams
}

func startHub(t *testing.T, o hubOpts) *hubEnv {
	t.Helper()
	if o.heartbeat == "" {
		o.heartbeat = "10s"
	}
	if o.longpollTimeout == "" {
		o.longpollTimeout = "1s"
	}
	e := &hubEnv{client: harness.HTTP1Client()}
	redisLine := ""
	if !o.embedded {
		e.rd = testredis.Start(t)
		redisLine = "redis " + e.rd.URL()
	}
	e.c = harness.StartCaddy(t, hubSite,
		harness.Var("Redis", redisLine),
		harness.Var("PublishKey", hubPublishKey),
		harness.Var("Heartbeat", o.heartbeat),
		harness.Var("LongpollTimeout", o.longpollTimeout),
		harness.Var("Extra", o.extra),
		harness.Var("Globals", o.globals),
	)
	// after the streams' own cleanups: idle keep-alive connections would
	// hold up Caddy's graceful stop
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

// hubQuery builds the query of a subscription to channels, plus extra
// key/value pairs.
func hubQuery(channels []string, extra ...string) string {
	q := url.Values{}
	for _, c := range channels {
		q.Add("channel", c)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Add(extra[i], extra[i+1])
	}
	return q.Encode()
}

// openSSE subscribes over SSE and waits for the `retry:` line, the sign
// that the subscription is live.
func (e *hubEnv) openSSE(t *testing.T, query string) *harness.SSEReader {
	t.Helper()
	return openHubSSE(t, e.client, e.c.URL("/hub?"+query))
}

func openHubSSE(t *testing.T, client *http.Client, u string) *harness.SSEReader {
	t.Helper()
	r := harness.OpenSSE(t, client, u, nil)
	resp := r.ResponseWithin(t, hubWait)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("SSE %s: status %d", u, resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("SSE %s: Content-Type %q", u, ct)
	}
	if it := r.Next(t, hubWait); it.Kind != harness.KindRetry {
		t.Fatalf("SSE %s: first item %v, want the retry line", u, it)
	}
	return r
}

// hubFrame is a WebSocket frame or a long-poll message: a message
// (Type "") or a control frame.
type hubFrame struct {
	Type        string   `json:"type"`
	Channels    []string `json:"channels"`
	LastEventID string   `json:"last_event_id"`
	Reason      string   `json:"reason"`

	Channel  string  `json:"channel"`
	ID       string  `json:"id"`
	Event    string  `json:"event"`
	Data     *string `json:"data"`
	Encoding string  `json:"encoding"`
}

// payload returns the message's payload bytes, decoding base64.
func (f hubFrame) payload(t *testing.T) []byte {
	t.Helper()
	if f.Data == nil {
		t.Fatalf("message without data: %+v", f)
	}
	switch f.Encoding {
	case "":
		return []byte(*f.Data)
	case "base64":
		b, err := base64.StdEncoding.DecodeString(*f.Data)
		if err != nil {
			t.Fatalf("message data is not base64: %v", err)
		}
		return b
	}
	t.Fatalf("unknown encoding %q", f.Encoding)
	return nil
}

// hubWS is a hub WebSocket client whose frames are read in the
// background (so that pings are answered).
type hubWS struct {
	conn   *websocket.Conn
	frames chan hubFrame
	done   chan struct{}
	err    error
	pings  atomic.Int64
	sub    hubFrame // the subscribed frame
}

// openWS subscribes over WebSocket and waits for the subscribed frame.
func (e *hubEnv) openWS(t *testing.T, query string) *hubWS {
	t.Helper()
	return openHubWS(t, harness.WSURL(e.c.URL("/hub?"+query)))
}

// openHubWS opens a hub WebSocket at u (ws:// or wss://) and reads its
// subscribed frame.
func openHubWS(t *testing.T, u string) *hubWS {
	t.Helper()
	conn, resp, err := harness.WSDialer().Dial(u, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("websocket %s: %v (status %d)", u, err, status)
	}
	w := &hubWS{conn: conn, frames: make(chan hubFrame, 4096), done: make(chan struct{})}
	t.Cleanup(func() {
		_ = conn.Close()
		<-w.done
	})
	conn.SetPingHandler(func(data string) error {
		w.pings.Add(1)
		return conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	go func() {
		defer close(w.done)
		for {
			typ, msg, err := conn.ReadMessage()
			if err != nil {
				w.err = err
				return
			}
			if typ != websocket.TextMessage {
				w.err = fmt.Errorf("frame of type %d, want text", typ)
				return
			}
			var f hubFrame
			if err := json.Unmarshal(msg, &f); err != nil {
				w.err = fmt.Errorf("frame %q is not JSON: %w", msg, err)
				return
			}
			w.frames <- f
		}
	}()
	w.sub = w.next(t)
	if w.sub.Type != "subscribed" {
		t.Fatalf("websocket: first frame %+v, want type subscribed", w.sub)
	}
	return w
}

// next returns the next frame, failing the test if none arrives in time.
func (w *hubWS) next(t *testing.T) hubFrame {
	t.Helper()
	select {
	case f := <-w.frames:
		return f
	case <-w.done:
		select {
		case f := <-w.frames:
			return f
		default:
		}
		t.Fatalf("websocket: connection ended: %v", w.err)
	case <-time.After(hubWait):
		t.Fatalf("websocket: no frame within %v", hubWait)
	}
	return hubFrame{}
}

// nextMessage returns the next frame and fails if it is a control frame.
func (w *hubWS) nextMessage(t *testing.T) hubFrame {
	t.Helper()
	f := w.next(t)
	if f.Type != "" {
		t.Fatalf("websocket: got control frame %+v, want a message", f)
	}
	return f
}

// pollResult is a long-poll answer.
type pollResult struct {
	status  int
	header  http.Header
	body    []byte
	took    time.Duration
	decoded struct {
		Messages    []hubFrame `json:"messages"`
		LastEventID *string    `json:"last_event_id"`
	}
}

// poll runs one long-poll (no Accept header) and decodes a 200 answer.
func (e *hubEnv) poll(t *testing.T, query string) pollResult {
	t.Helper()
	return hubPoll(t, e.client, e.c.URL("/hub?"+query))
}

func hubPoll(t *testing.T, client *http.Client, u string) pollResult {
	t.Helper()
	res, err := hubPollErr(client, u)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// hubPollErr is hubPoll for a goroutine of its own.
func hubPollErr(client *http.Client, u string) (pollResult, error) {
	var res pollResult
	ctx, cancel := context.WithTimeout(context.Background(), 3*hubWait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return res, err
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return res, fmt.Errorf("long-poll %s: %w", u, err)
	}
	defer resp.Body.Close()
	res.status, res.header = resp.StatusCode, resp.Header
	if res.body, err = io.ReadAll(resp.Body); err != nil {
		return res, fmt.Errorf("long-poll %s: reading body: %w", u, err)
	}
	res.took = time.Since(start)
	if res.status == http.StatusOK {
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			return res, fmt.Errorf("long-poll: Content-Type %q, want application/json", ct)
		}
		if err := json.Unmarshal(res.body, &res.decoded); err != nil {
			return res, fmt.Errorf("long-poll: body %q: %w", res.body, err)
		}
		if res.decoded.LastEventID == nil {
			return res, fmt.Errorf("long-poll: body %q has no last_event_id", res.body)
		}
		if !bytes.Contains(res.body, []byte(`"messages":[`)) {
			return res, fmt.Errorf("long-poll: body %q has no messages list", res.body)
		}
	}
	return res, nil
}

// asyncPoll is an answer of a poll run in its own goroutine.
type asyncPoll struct {
	res pollResult
	err error
}

func goPoll(client *http.Client, u string) <-chan asyncPoll {
	ch := make(chan asyncPoll, 1)
	go func() {
		res, err := hubPollErr(client, u)
		ch <- asyncPoll{res, err}
	}()
	return ch
}

// cursor is the answer's last_event_id.
func (p pollResult) cursor() string { return *p.decoded.LastEventID }

// pollUntil polls from cursor until n messages arrived, and returns them
// and the last cursor.
func (e *hubEnv) pollUntil(t *testing.T, channels []string, cursor string, n int) ([]hubFrame, string) {
	t.Helper()
	var got []hubFrame
	deadline := time.Now().Add(3 * hubWait)
	for len(got) < n {
		if time.Now().After(deadline) {
			t.Fatalf("long-poll: %d of %d messages within %v: %+v", len(got), n, 3*hubWait, got)
		}
		res := e.poll(t, hubQuery(channels, "last_event_id", cursor))
		if res.status != http.StatusOK {
			t.Fatalf("long-poll: status %d: %s", res.status, res.body)
		}
		got = append(got, res.decoded.Messages...)
		cursor = res.cursor()
	}
	if len(got) != n {
		t.Fatalf("long-poll: %d messages, want %d: %+v", len(got), n, got)
	}
	return got, cursor
}

// firstPoll runs a poll without a position, with nothing published
// meanwhile, and returns the position it answers.
func (e *hubEnv) firstPoll(t *testing.T, channels []string) string {
	t.Helper()
	res := e.poll(t, hubQuery(channels))
	if res.status != http.StatusOK {
		t.Fatalf("first long-poll: status %d: %s", res.status, res.body)
	}
	if len(res.decoded.Messages) != 0 {
		t.Fatalf("first long-poll: unexpected messages %s", res.body)
	}
	return res.cursor()
}

// redisPublish runs PUBLISH <prefix><channel> <payload>.
func (e *hubEnv) redisPublish(t *testing.T, channel string, payload []byte) {
	t.Helper()
	if _, err := e.rd.Do("PUBLISH", "realtime:"+channel, payload); err != nil {
		t.Fatalf("PUBLISH: %v", err)
	}
}

// redisXAdd runs XADD <prefix><channel> * data <payload> [event <event>]
// and returns the id.
func (e *hubEnv) redisXAdd(t *testing.T, channel string, payload []byte, event string) string {
	t.Helper()
	args := []any{"XADD", "realtime:" + channel, "*", "data", payload}
	if event != "" {
		args = append(args, "event", event)
	}
	v, err := e.rd.Do(args...)
	if err != nil {
		t.Fatalf("XADD: %v", err)
	}
	return fmt.Sprint(v)
}

// httpPublish POSTs body to channel; key "" sends no Authorization.
// It returns the status and the body of the answer.
func (e *hubEnv) httpPublish(t *testing.T, path, query, key string, body []byte) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hubWait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.c.URL(path+"?"+query), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// mustPublish publishes over HTTP with the right key and returns the id.
func (e *hubEnv) mustPublish(t *testing.T, channel, event string, body []byte) string {
	t.Helper()
	q := url.Values{"channel": {channel}}
	if event != "" {
		q.Set("event", event)
	}
	status, b := e.httpPublish(t, "/hub", q.Encode(), hubPublishKey, body)
	if status != http.StatusOK {
		t.Fatalf("publish: status %d: %s", status, b)
	}
	var ans struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &ans); err != nil || ans.ID == "" {
		t.Fatalf("publish: answer %q, want {\"id\": ...} (%v)", b, err)
	}
	return ans.ID
}

// checkSSEPayload checks that ev carries payload on channel as the README
// documents: as is, or as event realtime.encoded with the JSON form.
func checkSSEPayload(t *testing.T, ev harness.SSEItem, channel, event string, payload []byte) {
	t.Helper()
	if event == "" {
		event = "message"
	}
	if ev.ID == "" {
		t.Errorf("SSE event without id: %v", ev)
	}
	if bytes.IndexByte(payload, '\r') < 0 && utf8.Valid(payload) {
		if ev.Event != event || ev.Data != string(payload) {
			t.Errorf("SSE got event %q data %q, want event %q data %q", ev.Event, ev.Data, event, payload)
		}
		return
	}
	if ev.Event != "realtime.encoded" {
		t.Fatalf("SSE payload %q: event %q, want realtime.encoded", payload, ev.Event)
	}
	var f hubFrame
	if err := json.Unmarshal([]byte(ev.Data), &f); err != nil {
		t.Fatalf("SSE realtime.encoded data %q is not JSON: %v", ev.Data, err)
	}
	checkJSONMessage(t, "SSE realtime.encoded", f, channel, event, payload)
	if f.ID != ev.ID {
		t.Errorf("SSE realtime.encoded: JSON id %q, SSE id %q", f.ID, ev.ID)
	}
}

// checkJSONMessage checks a message in its JSON form.
func checkJSONMessage(t *testing.T, where string, f hubFrame, channel, event string, payload []byte) {
	t.Helper()
	if event == "" {
		event = "message"
	}
	if f.Type != "" || f.Channel != channel || f.Event != event || f.ID == "" {
		t.Errorf("%s: got %+v, want a message on %q with event %q and an id", where, f, channel, event)
	}
	wantEnc := ""
	if !utf8.Valid(payload) {
		wantEnc = "base64"
	}
	if f.Encoding != wantEnc {
		t.Errorf("%s: encoding %q, want %q", where, f.Encoding, wantEnc)
	}
	if got := f.payload(t); !bytes.Equal(got, payload) {
		t.Errorf("%s: payload %q, want %q", where, got, payload)
	}
}

// hubPayloads are payloads every transport must deliver exactly.
var hubPayloads = []struct {
	name string
	data []byte
}{
	{"plain", []byte("hello")},
	{"multi-line", []byte("line one\nline two\n\nline four")},
	{"trailing newline", []byte("ends with a newline\n")},
	{"leading spaces", []byte("  two leading spaces")},
	{"field lookalikes", []byte("data: not a field\nid: 99\nevent: x\n: not a comment\nretry: 1")},
	{"unicode", []byte("héllo wörld — 日本語 🎉 \u2028 \ufeff")},
	{"json", []byte(`{"user":"ann","n":1,"nested":{"a":[1,2,"x\ny"]},"s":"</script>"}`)},
	{"nul", []byte("nul\x00byte")},
	{"carriage return", []byte("carriage\rreturn")},
	{"crlf", []byte("crlf\r\nline\r\n")},
	{"invalid utf-8", []byte("bad \xff\xfe bytes \xc3")},
	{"invalid utf-8 and cr", []byte("\x80\r\n")},
}

func TestHubPayloadsOverEveryTransport(t *testing.T) {
	t.Parallel()
	e := startHub(t, hubOpts{})
	const ch = "payloads"
	chans := []string{ch}
	cursor := e.firstPoll(t, chans)
	sse := e.openSSE(t, hubQuery(chans))
	ws := e.openWS(t, hubQuery(chans))
	for _, p := range hubPayloads {
		e.redisPublish(t, ch, p.data)
	}
	polled, _ := e.pollUntil(t, chans, cursor, len(hubPayloads))
	for i, p := range hubPayloads {
		t.Run(p.name, func(t *testing.T) {
			ev := sse.NextEvent(t, hubWait)
			checkSSEPayload(t, ev, ch, "", p.data)
			f := ws.nextMessage(t)
			checkJSONMessage(t, "websocket", f, ch, "", p.data)
			if f.ID != ev.ID {
				t.Errorf("websocket id %q, SSE id %q: want the same", f.ID, ev.ID)
			}
			checkJSONMessage(t, "long-poll", polled[i], ch, "", p.data)
			if polled[i].ID != ev.ID {
				t.Errorf("long-poll id %q, SSE id %q: want the same", polled[i].ID, ev.ID)
			}
		})
	}
}

// TestHubReadiness publishes right after each readiness signal (the SSE
// retry line, the WebSocket subscribed frame), on a channel new to the
// node, from pub/sub and from a stream: the message is never missed.
func TestHubReadiness(t *testing.T) {
	t.Parallel()
	e := startHub(t, hubOpts{})
	const rounds = 5
	for _, source := range []string{"pubsub", "stream"} {
		t.Run(source, func(t *testing.T) {
			t.Parallel()
			publish := func(ch string, payload []byte) {
				if source == "pubsub" {
					e.redisPublish(t, ch, payload)
				} else {
					e.redisXAdd(t, ch, payload, "")
				}
			}
			for i := 0; i < rounds; i++ {
				ch := fmt.Sprintf("ready-%s-sse-%d", source, i)
				r := e.openSSE(t, hubQuery([]string{ch}))
				publish(ch, []byte("first"))
				if ev := r.NextEvent(t, hubWait); ev.Data != "first" {
					t.Fatalf("round %d: SSE got %v, want data first", i, ev)
				}
				r.Close()

				ch = fmt.Sprintf("ready-%s-ws-%d", source, i)
				w := e.openWS(t, hubQuery([]string{ch}))
				if len(w.sub.Channels) != 1 || w.sub.Channels[0] != ch {
					t.Fatalf("subscribed frame %+v, want channels [%s]", w.sub, ch)
				}
				publish(ch, []byte("first"))
				if f := w.nextMessage(t); string(f.payload(t)) != "first" {
					t.Fatalf("round %d: websocket got %+v, want data first", i, f)
				}
				_ = w.conn.Close()
			}
		})
	}
}

var streamID = regexp.MustCompile(`^\d+-\d+$`)

func TestHubEventNames(t *testing.T) {
	t.Parallel()
	e := startHub(t, hubOpts{})
	const ch = "events"
	chans := []string{ch}
	cursor := e.firstPoll(t, chans)
	sse := e.openSSE(t, hubQuery(chans))
	ws := e.openWS(t, hubQuery(chans))

	type sent struct {
		event, data, id string
	}
	var all []sent
	all = append(all, sent{"price", "from xadd", e.redisXAdd(t, ch, []byte("from xadd"), "price")})
	all = append(all, sent{"", "xadd default", e.redisXAdd(t, ch, []byte("xadd default"), "")})
	all = append(all, sent{"user.joined", "from http", e.mustPublish(t, ch, "user.joined", []byte("from http"))})
	all = append(all, sent{"", "http default", e.mustPublish(t, ch, "", []byte("http default"))})

	polled, _ := e.pollUntil(t, chans, cursor, len(all))
	for i, s := range all {
		if !streamID.MatchString(s.id) {
			t.Errorf("message %d: id %q is not a stream id", i, s.id)
		}
		ev := sse.NextEvent(t, hubWait)
		checkSSEPayload(t, ev, ch, s.event, []byte(s.data))
		if ev.ID != s.id {
			t.Errorf("SSE id %q, want the published id %q", ev.ID, s.id)
		}
		f := ws.nextMessage(t)
		checkJSONMessage(t, "websocket", f, ch, s.event, []byte(s.data))
		if f.ID != s.id {
			t.Errorf("websocket id %q, want %q", f.ID, s.id)
		}
		checkJSONMessage(t, "long-poll", polled[i], ch, s.event, []byte(s.data))
		if polled[i].ID != s.id {
			t.Errorf("long-poll id %q, want %q", polled[i].ID, s.id)
		}
	}
}

func TestHubSSEFormatJSON(t *testing.T) {
	t.Parallel()
	e := startHub(t, hubOpts{})
	const ch = "jsonfmt"
	r := e.openSSE(t, hubQuery([]string{ch}, "format", "json"))
	for _, p := range hubPayloads {
		e.redisPublish(t, ch, p.data)
	}
	id := e.mustPublish(t, ch, "named", []byte("with event"))
	for _, p := range hubPayloads {
		ev := r.NextEvent(t, hubWait)
		if ev.Event != "message" {
			t.Errorf("%s: SSE event %q, want message", p.name, ev.Event)
		}
		var f hubFrame
		if err := json.Unmarshal([]byte(ev.Data), &f); err != nil {
			t.Fatalf("%s: data %q is not one JSON object: %v", p.name, ev.Data, err)
		}
		if strings.Contains(ev.Data, "\n") {
			t.Errorf("%s: data %q is not one line", p.name, ev.Data)
		}
		checkJSONMessage(t, p.name, f, ch, "", p.data)
		if f.ID != ev.ID {
			t.Errorf("%s: JSON id %q, SSE id %q", p.name, f.ID, ev.ID)
		}
	}
	ev := r.NextEvent(t, hubWait)
	if ev.Event != "named" || ev.ID != id {
		t.Errorf("got %v, want event named id %q", ev, id)
	}
	var f hubFrame
	if err := json.Unmarshal([]byte(ev.Data), &f); err != nil {
		t.Fatalf("data %q: %v", ev.Data, err)
	}
	checkJSONMessage(t, "named", f, ch, "named", []byte("with event"))
}

func TestHubMultiChannel(t *testing.T) {
	t.Parallel()
	e := startHub(t, hubOpts{})
	chans := []string{"multi-a", "multi-b"}
	q := hubQuery(chans)
	cursor := e.firstPoll(t, chans)
	plain := e.openSSE(t, q)
	asJSON := e.openSSE(t, hubQuery(chans, "format", "json"))
	ws := e.openWS(t, q)
	if len(ws.sub.Channels) != 2 {
		t.Errorf("subscribed frame %+v, want both channels", ws.sub)
	}
	// messages from every source, each channel's in order
	type sent struct{ channel, data string }
	all := []sent{{"multi-a", "a1"}, {"multi-b", "b1"}, {"multi-a", "a2"}, {"multi-b", "b2"}, {"multi-a", "a3"}}
	for i, s := range all {
		switch i % 3 {
		case 0:
			e.redisPublish(t, s.channel, []byte(s.data))
		case 1:
			e.redisXAdd(t, s.channel, []byte(s.data), "")
		case 2:
			e.mustPublish(t, s.channel, "", []byte(s.data))
		}
	}
	want := map[string][]string{}
	for _, s := range all {
		want[s.channel] = append(want[s.channel], s.data)
	}
	check := func(t *testing.T, where string, got map[string][]string, ids []string) {
		t.Helper()
		for c, w := range want {
			if strings.Join(got[c], ",") != strings.Join(w, ",") {
				t.Errorf("%s: channel %s got %q, want %q", where, c, got[c], w)
			}
		}
		seen := map[string]bool{}
		for _, id := range ids {
			if id == "" || seen[id] {
				t.Errorf("%s: ids %q: each message needs its own", where, ids)
				break
			}
			seen[id] = true
		}
	}
	t.Run("sse json", func(t *testing.T) {
		got, ids := map[string][]string{}, []string(nil)
		for range all {
			ev := asJSON.NextEvent(t, hubWait)
			var f hubFrame
			if err := json.Unmarshal([]byte(ev.Data), &f); err != nil {
				t.Fatalf("data %q: %v", ev.Data, err)
			}
			if f.ID != ev.ID {
				t.Errorf("JSON id %q, SSE id %q", f.ID, ev.ID)
			}
			got[f.Channel] = append(got[f.Channel], string(f.payload(t)))
			ids = append(ids, ev.ID)
		}
		check(t, "sse json", got, ids)
	})
	t.Run("sse plain", func(t *testing.T) {
		var datas, ids []string
		for range all {
			ev := plain.NextEvent(t, hubWait)
			datas, ids = append(datas, ev.Data), append(ids, ev.ID)
		}
		got := map[string][]string{}
		for _, d := range datas {
			c := "multi-a"
			if strings.HasPrefix(d, "b") {
				c = "multi-b"
			}
			got[c] = append(got[c], d)
		}
		check(t, "sse plain", got, ids)
	})
	t.Run("websocket", func(t *testing.T) {
		got, ids := map[string][]string{}, []string(nil)
		for range all {
			f := ws.nextMessage(t)
			got[f.Channel] = append(got[f.Channel], string(f.payload(t)))
			ids = append(ids, f.ID)
		}
		check(t, "websocket", got, ids)
	})
	t.Run("long-poll", func(t *testing.T) {
		msgs, _ := e.pollUntil(t, chans, cursor, len(all))
		got, ids := map[string][]string{}, []string(nil)
		for _, f := range msgs {
			got[f.Channel] = append(got[f.Channel], string(f.payload(t)))
			ids = append(ids, f.ID)
		}
		check(t, "long-poll", got, ids)
	})
}

func TestHubHTTPPublish(t *testing.T) {
	t.Parallel()
	e := startHub(t, hubOpts{extra: "limits {\n\t\t\tmessage_size 1KiB\n\t\t}"})
	const ch = "http-pub"
	r := e.openSSE(t, hubQuery([]string{ch}))

	id := e.mustPublish(t, ch, "", []byte("accepted"))
	ev := r.NextEvent(t, hubWait)
	if ev.Data != "accepted" || ev.ID != id {
		t.Fatalf("got %v, want data accepted with id %q", ev, id)
	}

	tests := []struct {
		name       string
		path       string
		query      string
		key        string
		body       []byte
		wantStatus int
		wantReason string // in the body, case-insensitive
	}{
		{"wrong key", "/hub", "channel=" + ch, "not-the-key", []byte("x"), http.StatusUnauthorized, "key"},
		{"no key", "/hub", "channel=" + ch, "", []byte("x"), http.StatusUnauthorized, "key"},
		{"hub without publish_key", "/nokey", "channel=" + ch, hubPublishKey, []byte("x"), http.StatusForbidden, "publish"},
		{"reserved event", "/hub", "channel=" + ch + "&event=realtime.x", hubPublishKey, []byte("x"), http.StatusBadRequest, "reserved"},
		{"reserved reset event", "/hub", "channel=" + ch + "&event=realtime.reset", hubPublishKey, []byte("x"), http.StatusBadRequest, "reserved"},
		{"body over message_size", "/hub", "channel=" + ch, hubPublishKey, bytes.Repeat([]byte("x"), 1025), http.StatusRequestEntityTooLarge, "message_size"},
		{"bad channel name", "/hub", "channel=" + url.QueryEscape("bad name!"), hubPublishKey, []byte("x"), http.StatusBadRequest, "channel"},
		{"channel name too long", "/hub", "channel=" + strings.Repeat("c", 201), hubPublishKey, []byte("x"), http.StatusBadRequest, "channel"},
		{"missing channel", "/hub", "", hubPublishKey, []byte("x"), http.StatusBadRequest, "channel"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.httpPublish(t, tc.path, tc.query, tc.key, tc.body)
			if status != tc.wantStatus {
				t.Fatalf("status %d (%s), want %d", status, bytes.TrimSpace(body), tc.wantStatus)
			}
			if !strings.Contains(strings.ToLower(string(body)), tc.wantReason) {
				t.Errorf("body %q gives no reason (want it to mention %q)", body, tc.wantReason)
			}
		})
	}

	// exactly message_size is fine; none of the refused ones went out
	limit := bytes.Repeat([]byte("y"), 1024)
	id = e.mustPublish(t, ch, "", limit)
	ev = r.NextEvent(t, hubWait)
	if ev.Data != string(limit) || ev.ID != id {
		t.Fatalf("got %v, want the 1024-byte message %q (a refused publish was delivered?)", ev, id)
	}
}

func TestHubHeartbeats(t *testing.T) {
	t.Parallel()
	e := startHub(t, hubOpts{heartbeat: "300ms"})
	t.Run("sse", func(t *testing.T) {
		t.Parallel()
		r := e.openSSE(t, hubQuery([]string{"hb-sse"}))
		start := time.Now()
		var last time.Time
		for i := 0; i < 3; i++ {
			c := r.NextComment(t, 2*time.Second)
			if c.Text != "heartbeat" {
				t.Fatalf("comment %q, want heartbeat", c.Text)
			}
			if !last.IsZero() && c.At.Sub(last) < 150*time.Millisecond {
				t.Errorf("heartbeats %v apart, want about 300ms", c.At.Sub(last))
			}
			last = c.At
		}
		if took := time.Since(start); took < 600*time.Millisecond {
			t.Errorf("3 heartbeats in %v, want about 900ms", took)
		}
		// the stream still works
		e.redisPublish(t, "hb-sse", []byte("after heartbeats"))
		if ev := r.NextEvent(t, hubWait); ev.Data != "after heartbeats" {
			t.Fatalf("got %v", ev)
		}
	})
	t.Run("websocket", func(t *testing.T) {
		t.Parallel()
		w := e.openWS(t, hubQuery([]string{"hb-ws"}))
		deadline := time.Now().Add(3 * time.Second)
		for w.pings.Load() < 3 {
			if time.Now().After(deadline) {
				t.Fatalf("%d pings within 3s, want 3 at a 300ms heartbeat", w.pings.Load())
			}
			time.Sleep(20 * time.Millisecond)
		}
		e.redisPublish(t, "hb-ws", []byte("after pings"))
		if f := w.nextMessage(t); string(f.payload(t)) != "after pings" {
			t.Fatalf("got %+v", f)
		}
	})
}

// hubTransports are the three ways to subscribe, as far as a refusal is
// concerned: each returns the status and body of the answer.
var hubTransports = []struct {
	name string
	do   func(t *testing.T, e *hubEnv, query string) (int, string)
}{
	{"sse", func(t *testing.T, e *hubEnv, query string) (int, string) {
		return hubGet(t, e, query, http.Header{"Accept": {"text/event-stream"}})
	}},
	{"longpoll", func(t *testing.T, e *hubEnv, query string) (int, string) {
		return hubGet(t, e, query, nil)
	}},
	{"websocket", func(t *testing.T, e *hubEnv, query string) (int, string) {
		conn, resp, err := harness.WSDialer().Dial(harness.WSURL(e.c.URL("/hub?"+query)), nil)
		if err == nil {
			_ = conn.Close()
			return http.StatusSwitchingProtocols, ""
		}
		if resp == nil {
			t.Fatalf("websocket: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}},
}

func hubGet(t *testing.T, e *hubEnv, query string, h http.Header) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hubWait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.c.URL("/hub?"+query), nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b)
}

func TestHubBadChannelNames(t *testing.T) {
	t.Parallel()
	e := startHub(t, hubOpts{})
	tests := []struct {
		name  string
		query string
	}{
		{"missing", ""},
		{"missing with other parameters", "format=json"},
		{"empty", "channel="},
		{"too long", "channel=" + strings.Repeat("a", 201)},
		{"space", "channel=" + url.QueryEscape("a b")},
		{"star", "channel=" + url.QueryEscape("news*")},
		{"non-ascii", "channel=" + url.QueryEscape("nöws")},
		{"hash", "channel=" + url.QueryEscape("a#b")},
		{"newline", "channel=" + url.QueryEscape("a\nb")},
		{"one good one bad", "channel=good&channel=" + url.QueryEscape("b@d?")},
	}
	for _, tr := range hubTransports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					status, body := tr.do(t, e, tc.query)
					if status != http.StatusBadRequest {
						t.Fatalf("status %d (%q), want 400", status, body)
					}
					if !strings.Contains(strings.ToLower(body), "channel") {
						t.Errorf("body %q gives no reason about the channel", body)
					}
				})
			}
		})
	}
	t.Run("longest and every allowed character", func(t *testing.T) {
		t.Parallel()
		long := strings.Repeat("L", 200)
		all := "AZaz09_-.:@/"
		r := e.openSSE(t, hubQuery([]string{long, all}))
		w := e.openWS(t, hubQuery([]string{long, all}))
		e.redisPublish(t, all, []byte("ok"))
		if ev := r.NextEvent(t, hubWait); ev.Data != "ok" {
			t.Errorf("SSE got %v", ev)
		}
		if f := w.nextMessage(t); f.Channel != all || string(f.payload(t)) != "ok" {
			t.Errorf("websocket got %+v", f)
		}
	})
}

func TestHubEmbeddedBroker(t *testing.T) {
	t.Parallel()
	e := startHub(t, hubOpts{embedded: true})
	const ch = "embedded"
	chans := []string{ch}
	cursor := e.firstPoll(t, chans)
	sse := e.openSSE(t, hubQuery(chans))
	ws := e.openWS(t, hubQuery(chans))
	var ids []string
	for _, p := range hubPayloads {
		ids = append(ids, e.mustPublish(t, ch, "", p.data))
	}
	named := e.mustPublish(t, ch, "named", []byte("named event"))
	polled, _ := e.pollUntil(t, chans, cursor, len(hubPayloads)+1)
	for i, p := range hubPayloads {
		ev := sse.NextEvent(t, hubWait)
		checkSSEPayload(t, ev, ch, "", p.data)
		f := ws.nextMessage(t)
		checkJSONMessage(t, "websocket "+p.name, f, ch, "", p.data)
		checkJSONMessage(t, "long-poll "+p.name, polled[i], ch, "", p.data)
		if ev.ID != ids[i] || f.ID != ids[i] || polled[i].ID != ids[i] {
			t.Errorf("%s: ids sse %q ws %q long-poll %q, want the published %q", p.name, ev.ID, f.ID, polled[i].ID, ids[i])
		}
	}
	if ev := sse.NextEvent(t, hubWait); ev.Event != "named" || ev.ID != named {
		t.Errorf("SSE got %v, want event named", ev)
	}
	checkJSONMessage(t, "websocket named", ws.nextMessage(t), ch, "named", []byte("named event"))
	checkJSONMessage(t, "long-poll named", polled[len(hubPayloads)], ch, "named", []byte("named event"))
	m := e.c.Metrics(t)
	if v := metricValue(m, "realtime_messages_received_total", map[string]string{"source": "http"}); v != float64(len(hubPayloads)+1) {
		t.Errorf("realtime_messages_received_total{source=http} = %v, want %d", v, len(hubPayloads)+1)
	}
}

func TestHubLongPoll(t *testing.T) {
	t.Parallel()
	e := startHub(t, hubOpts{longpollTimeout: "1s"})
	for _, source := range []string{"pubsub", "stream", "http"} {
		t.Run(source, func(t *testing.T) {
			t.Parallel()
			ch := "lp-" + source
			chans := []string{ch}
			publish := func(payload string) {
				switch source {
				case "pubsub":
					e.redisPublish(t, ch, []byte(payload))
				case "stream":
					e.redisXAdd(t, ch, []byte(payload), "")
				default:
					e.mustPublish(t, ch, "", []byte(payload))
				}
			}
			// a first poll with nothing published waits out the timeout
			first := e.poll(t, hubQuery(chans))
			if first.status != http.StatusOK {
				t.Fatalf("status %d: %s", first.status, first.body)
			}
			if first.took < 900*time.Millisecond || first.took > 4*time.Second {
				t.Errorf("empty poll answered after %v, want about longpoll_timeout (1s)", first.took)
			}
			if len(first.decoded.Messages) != 0 || !bytes.Contains(first.body, []byte(`"messages":[]`)) {
				t.Errorf("empty poll body %s, want an empty messages list", first.body)
			}
			if cc := first.header.Get("Cache-Control"); !strings.Contains(cc, "no-store") && !strings.Contains(cc, "no-cache") {
				t.Errorf("Cache-Control %q: a poll's answer must not be cached", cc)
			}
			cursor := first.cursor()

			// published between polls: the next poll gets them at once
			publish("between 1")
			publish("between 2")
			second := e.poll(t, hubQuery(chans, "last_event_id", cursor))
			if second.status != http.StatusOK {
				t.Fatalf("status %d: %s", second.status, second.body)
			}
			got := second.decoded.Messages
			if second.took > 800*time.Millisecond {
				t.Errorf("poll with messages waiting took %v, want an answer at once", second.took)
			}
			cursor = second.cursor()
			if len(got) < 2 {
				more, c := e.pollUntil(t, chans, cursor, 2-len(got))
				got, cursor = append(got, more...), c
			}
			if len(got) != 2 || string(got[0].payload(t)) != "between 1" || string(got[1].payload(t)) != "between 2" {
				t.Fatalf("second poll: %+v, want between 1, between 2", got)
			}
			if cursor != got[1].ID {
				t.Errorf("last_event_id %q, want the last message's id %q", cursor, got[1].ID)
			}

			// nothing new: wait, then the same position back
			third := e.poll(t, hubQuery(chans, "last_event_id", cursor))
			if third.status != http.StatusOK || len(third.decoded.Messages) != 0 {
				t.Fatalf("third poll: %d %s, want an empty list", third.status, third.body)
			}
			if third.took < 900*time.Millisecond {
				t.Errorf("empty poll answered after %v, want about 1s", third.took)
			}
			if third.cursor() != cursor {
				t.Errorf("empty poll last_event_id %q, want the same %q", third.cursor(), cursor)
			}

			// a message published while a poll waits ends the wait (or,
			// if it comes first, is answered at once from the cursor)
			done := goPoll(e.client, e.c.URL("/hub?"+hubQuery(chans, "last_event_id", cursor)))
			publish("during")
			select {
			case a := <-done:
				res := a.res
				if a.err != nil {
					t.Fatal(a.err)
				}
				if len(res.decoded.Messages) != 1 || string(res.decoded.Messages[0].payload(t)) != "during" {
					t.Fatalf("poll during publish: %s", res.body)
				}
			case <-time.After(3 * hubWait):
				t.Fatal("poll did not answer")
			}
		})
	}
}

// countingSSE reads an SSE stream cheaply (no per-event items): it counts
// data lines and checks that their sequence numbers come in order.
type countingSSE struct {
	count atomic.Int64
	ready chan struct{}
	done  chan struct{}
	err   atomic.Pointer[error]
}

func openCountingSSE(t *testing.T, client *http.Client, u string) *countingSSE {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header.Set("Accept", "text/event-stream")
	c := &countingSSE{ready: make(chan struct{}), done: make(chan struct{})}
	fail := func(err error) { c.err.Store(&err) }
	go func() {
		defer close(c.done)
		resp, err := client.Do(req)
		if err != nil {
			fail(err)
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			fail(fmt.Errorf("status %d", resp.StatusCode))
			return
		}
		br := bufio.NewReaderSize(resp.Body, 64<<10)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				if ctx.Err() == nil {
					fail(fmt.Errorf("stream ended after %d messages: %w", c.count.Load(), err))
				}
				return
			}
			switch {
			case bytes.HasPrefix(line, []byte("retry:")):
				close(c.ready)
			case bytes.HasPrefix(line, []byte("data: ")):
				seq, _, _ := bytes.Cut(line[len("data: "):], []byte("|"))
				n, err := strconv.Atoi(string(seq))
				if want := c.count.Load(); err != nil || int64(n) != want {
					fail(fmt.Errorf("message %q, want sequence number %d", seq, want))
					return
				}
				c.count.Add(1)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-c.done
	})
	return c
}

func (c *countingSSE) failed() error {
	if p := c.err.Load(); p != nil {
		return *p
	}
	return nil
}

// dialStalled opens an SSE subscription over a raw connection with a
// small receive buffer, waits for the retry line and then never reads
// again.
func dialStalled(t *testing.T, addr, path string, overTLS bool) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: harness.DialTimeout, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if overTLS {
		conn = tls.Client(conn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}) //nolint:gosec // the test's own Caddy
	}
	t.Cleanup(func() { _ = conn.Close() })
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", path, addr)
	_ = conn.SetReadDeadline(time.Now().Add(hubWait))
	var got []byte
	buf := make([]byte, 1)
	for !bytes.Contains(got, []byte("retry:")) {
		if _, err := conn.Read(buf); err != nil {
			t.Fatalf("stalled client: before the retry line: %v (got %q)", err, got)
		}
		got = append(got, buf[0])
	}
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 200")) {
		t.Fatalf("stalled client: %q", got)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return conn
}

func TestHubSlowConsumer(t *testing.T) {
	t.Parallel()
	// over TLS with the realtime listener wrapper, the fan-out writes
	// through crypto/tls itself: a client that stops reading must not
	// hold it up either
	cleartextAndTLSSocket(t, testHubSlowConsumer)
}

// socketServers is the global option that puts the realtime listener
// wrapper beneath TLS, as the README shows it.
const socketServers = "listener_wrappers {\n\t\t\trealtime\n\t\t\ttls\n\t\t}"

// cleartextAndTLSSocket runs test over plain HTTP/1.1 and over HTTPS
// with HTTP/1.1 and the realtime listener wrapper, in parallel: the two
// ways the hub's fan-out writes to sockets itself.
func cleartextAndTLSSocket(t *testing.T, test func(t *testing.T, overTLS bool)) {
	t.Helper()
	for _, c := range []struct {
		name    string
		overTLS bool
	}{{"cleartext", false}, {"tls-socket", true}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			test(t, c.overTLS)
		})
	}
}

func testHubSlowConsumer(t *testing.T, overTLS bool) {
	// The hub drops a subscriber that falls behind at once; its
	// connection ends when the write blocked on it times out: Caddy's
	// write_idle (default 1m), shortened here.
	servers := "timeouts {\n\t\t\twrite_idle 2s\n\t\t}"
	if overTLS {
		servers = socketServers + "\n\t\t" + servers
	}
	e := startHub(t, hubOpts{globals: "servers {\n\t\t" + servers + "\n\t}"})
	const (
		ch       = "firehose"
		fast     = 49
		size     = 2048
		batch    = 100
		maxSent  = 6000
		promptly = 3 * time.Second
	)
	client := harness.HTTP1Client()
	t.Cleanup(client.CloseIdleConnections)
	u, port := e.c.URL("/hub?"+hubQuery([]string{ch})), e.c.Ports().HTTP
	if overTLS {
		u, port = e.c.HTTPSURL("/hub?"+hubQuery([]string{ch})), e.c.Ports().HTTPS
	}
	readers := make([]*countingSSE, fast)
	for i := range readers {
		readers[i] = openCountingSSE(t, client, u)
	}
	for i, r := range readers {
		select {
		case <-r.ready:
		case <-r.done:
			t.Fatalf("reader %d: %v", i, r.failed())
		case <-time.After(hubWait):
			t.Fatalf("reader %d: no retry line within %v", i, hubWait)
		}
	}
	stalled := dialStalled(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), "/hub?"+hubQuery([]string{ch}), overTLS)
	defer stalled.Close()
	waitMetric(t, e.c, "realtime_connections", map[string]string{"transport": "sse"}, func(v float64) bool { return v == fast+1 })

	rc := e.rd.Client()
	pad := strings.Repeat("x", size)
	sent := 0
	slowSeen := false
	for sent < maxSent {
		ctx, cancel := context.WithTimeout(context.Background(), hubWait)
		pipe := rc.Pipeline()
		for i := 0; i < batch; i++ {
			payload := fmt.Sprintf("%06d|", sent+i)
			pipe.Publish(ctx, "realtime:"+ch, payload+pad[len(payload):])
		}
		_, err := pipe.Exec(ctx)
		cancel()
		if err != nil {
			t.Fatalf("publishing: %v", err)
		}
		at := time.Now()
		sent += batch
		// every fast reader has the whole batch, promptly
		for i, r := range readers {
			for r.count.Load() < int64(sent) {
				if err := r.failed(); err != nil {
					t.Fatalf("fast reader %d: %v", i, err)
				}
				if time.Since(at) > promptly {
					t.Fatalf("fast reader %d has %d of %d messages %v after the batch was published", i, r.count.Load(), sent, promptly)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
		if metricValue(e.c.Metrics(t), "realtime_slow_consumer_disconnects_total", nil) >= 1 {
			slowSeen = true
			break
		}
	}
	if !slowSeen {
		t.Fatalf("no slow consumer disconnect after %d messages of %d bytes", sent, size)
	}
	t.Logf("stalled subscriber dropped after %d messages", sent)
	// the stalled subscription ends on the server (the fast ones stay)
	waitMetric(t, e.c, "realtime_connections", map[string]string{"transport": "sse"}, func(v float64) bool { return v == fast })
	if v := metricValue(e.c.Metrics(t), "realtime_slow_consumer_disconnects_total", nil); v != 1 {
		t.Errorf("realtime_slow_consumer_disconnects_total = %v, want 1 (only the stalled reader)", v)
	}
	// and the fast ones still get messages
	e.redisPublish(t, ch, []byte(fmt.Sprintf("%06d|last", sent)))
	for i, r := range readers {
		deadline := time.Now().Add(hubWait)
		for r.count.Load() < int64(sent+1) {
			if err := r.failed(); err != nil || time.Now().After(deadline) {
				t.Fatalf("fast reader %d after the drop: %d messages, %v", i, r.count.Load(), err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func TestHubMetrics(t *testing.T) {
	t.Parallel()
	e := startHub(t, hubOpts{longpollTimeout: "10s"})
	const ch = "metrics"
	chans := []string{ch}
	sse := e.openSSE(t, hubQuery(chans))
	ws := e.openWS(t, hubQuery(chans))
	polled := goPoll(e.client, e.c.URL("/hub?"+hubQuery(chans)))
	// a poll counts as a connection once its subscription is live
	for _, tr := range []string{"sse", "ws", "longpoll"} {
		waitMetric(t, e.c, "realtime_connections", map[string]string{"transport": tr}, func(v float64) bool { return v == 1 })
	}
	e.redisPublish(t, ch, []byte("from pubsub"))
	e.redisXAdd(t, ch, []byte("from stream"), "")
	e.mustPublish(t, ch, "", []byte("from http"))
	for i := 0; i < 3; i++ {
		sse.NextEvent(t, hubWait)
		ws.nextMessage(t)
	}
	select {
	case a := <-polled:
		if a.err != nil || a.res.status != http.StatusOK {
			t.Fatalf("poll: %v %d %s", a.err, a.res.status, a.res.body)
		}
	case <-time.After(3 * hubWait):
		t.Fatal("poll did not answer")
	}
	m := e.c.Metrics(t)
	for _, src := range []string{"pubsub", "stream", "http"} {
		if v := metricValue(m, "realtime_messages_received_total", map[string]string{"source": src}); v != 1 {
			t.Errorf("realtime_messages_received_total{source=%q} = %v, want 1", src, v)
		}
	}
	// a delivery is counted once its write returned on the server, which
	// can be a moment after the client read it
	for _, tr := range []string{"sse", "ws"} {
		waitMetric(t, e.c, "realtime_deliveries_total", map[string]string{"transport": tr}, func(v float64) bool { return v == 3 })
	}
	waitMetric(t, e.c, "realtime_deliveries_total", map[string]string{"transport": "longpoll"}, func(v float64) bool { return v >= 1 })
	// every delivery is timed, the fan-out's batches included
	m = e.c.Metrics(t)
	if n, want := metricValue(m, "realtime_delivery_seconds_count", nil), metricValue(m, "realtime_deliveries_total", nil); n != want || n < 7 {
		t.Errorf("realtime_delivery_seconds_count = %v, want realtime_deliveries_total = %v (at least 7)", n, want)
	}
	if !strings.Contains(m, "realtime_slow_consumer_disconnects_total") {
		t.Errorf("no realtime_slow_consumer_disconnects_total in /metrics")
	}
	sse.Close()
	_ = ws.conn.Close()
	for _, tr := range []string{"sse", "ws", "longpoll"} {
		waitMetric(t, e.c, "realtime_connections", map[string]string{"transport": tr}, func(v float64) bool { return v == 0 })
	}
}

func TestHubHTTP2ManyStreams(t *testing.T) {
	t.Parallel()
	e := startHub(t, hubOpts{})
	client := harness.HTTP2Client()
	tr := client.Transport.(*http.Transport)
	var dials atomic.Int64
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dial(ctx, network, addr)
	}
	t.Cleanup(client.CloseIdleConnections)
	const n = 8
	var streams []*harness.SSEReader
	for i := 0; i < n; i++ {
		q := hubQuery([]string{"page", fmt.Sprintf("page-%d", i)})
		if i%2 == 1 {
			q = hubQuery([]string{"page"}, "format", "json")
		}
		r := openHubSSE(t, client, e.c.HTTPSURL("/hub?"+q))
		if resp := r.Response(t); resp.ProtoMajor != 2 {
			t.Fatalf("stream %d over %s, want HTTP/2", i, resp.Proto)
		}
		streams = append(streams, r)
	}
	// a long-poll shares the connection too
	cursor := ""
	{
		res := hubPoll(t, client, e.c.HTTPSURL("/hub?"+hubQuery([]string{"page"})))
		if res.status != http.StatusOK {
			t.Fatalf("poll: %d", res.status)
		}
		cursor = res.cursor()
	}
	e.redisPublish(t, "page", []byte("to every tab"))
	for i, r := range streams {
		ev := r.NextEvent(t, hubWait)
		if !strings.Contains(ev.Data, "to every tab") {
			t.Errorf("stream %d got %v", i, ev)
		}
	}
	res := hubPoll(t, client, e.c.HTTPSURL("/hub?"+hubQuery([]string{"page"}, "last_event_id", cursor)))
	if len(res.decoded.Messages) != 1 {
		t.Errorf("poll over HTTP/2: %s", res.body)
	}
	if d := dials.Load(); d != 1 {
		t.Errorf("%d connections for %d streams, want 1", d, n)
	}
}

// Over TLS, WebSocket and SSE over HTTP/1.1 leave their requests like
// their cleartext forms, but only their own goroutines write them (the
// fan-out cannot write a TLS connection without risking a wait): small
// and large messages, one at a time and in bursts, arrive in order, byte
// for byte.
func TestHubDetachedOverTLS(t *testing.T) {
	t.Parallel()
	t.Run("socket", func(t *testing.T) {
		// the fan-out seals and writes messages itself
		t.Parallel()
		testHubDetachedOverTLS(t, "servers {\n\t\t"+socketServers+"\n\t}")
	})
	t.Run("goroutine", func(t *testing.T) {
		t.Parallel()
		testHubDetachedOverTLS(t, "")
	})
	t.Run("wrapper-after-tls", func(t *testing.T) {
		// where it sees TLS connections the wrapper does nothing, and
		// says so
		t.Parallel()
		e := testHubDetachedOverTLS(t, "servers {\n\t\tlistener_wrappers {\n\t\t\trealtime\n\t\t}\n\t}")
		// once per configuration loaded (the start and one reload),
		// not per connection
		const warning = "the realtime listener wrapper comes after tls"
		deadline := time.Now().Add(hubWait)
		for strings.Count(e.c.Logs(), warning) < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("%d %q warnings in Caddy's log within %v, want one per config loaded (2)", strings.Count(e.c.Logs(), warning), warning, hubWait)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if n := strings.Count(e.c.Logs(), warning); n != 2 {
			t.Errorf("the warning was logged %d times, want once per config loaded (2)", n)
		}
	})
}

func testHubDetachedOverTLS(t *testing.T, globals string) *hubEnv {
	e := startHub(t, hubOpts{globals: globals})
	const ch = "tls"
	client := harness.HTTP1Client()
	t.Cleanup(client.CloseIdleConnections)
	sse := openHubSSE(t, client, e.c.HTTPSURL("/hub?"+hubQuery([]string{ch})))
	if resp := sse.Response(t); resp.ProtoMajor != 1 || resp.TLS == nil {
		t.Fatalf("SSE over %s (TLS %v), want HTTP/1.1 with TLS", resp.Proto, resp.TLS != nil)
	}
	ws := openHubWS(t, harness.WSURL(e.c.HTTPSURL("/hub?"+hubQuery([]string{ch}))))
	// small and large payloads (a large one spans TLS records), one at a
	// time and in bursts
	var payloads [][]byte
	for i := range 60 {
		size := 100
		if i%7 == 3 {
			size = 20 << 10
		}
		p := []byte(fmt.Sprintf("%03d:", i))
		for len(p) < size {
			p = append(p, byte('a'+i%26))
		}
		payloads = append(payloads, p)
	}
	for i, p := range payloads {
		e.redisPublish(t, ch, p)
		if i < 20 {
			// one at a time: each goes out before the next is published
			checkSSEPayload(t, sse.NextEvent(t, hubWait), ch, "", p)
			checkJSONMessage(t, "websocket", ws.nextMessage(t), ch, "", p)
		}
	}
	for _, p := range payloads[20:] {
		checkSSEPayload(t, sse.NextEvent(t, hubWait), ch, "", p)
		checkJSONMessage(t, "websocket", ws.nextMessage(t), ch, "", p)
	}
	// a reload that keeps the hub's configuration keeps its WebSockets
	// open (and what lies beneath them); new ones come through the new
	// configuration's listener
	e.c.Reload(t, e.c.Caddyfile())
	ws2 := openHubWS(t, harness.WSURL(e.c.HTTPSURL("/hub?"+hubQuery([]string{ch}))))
	after := []byte("after the reload")
	e.redisPublish(t, ch, after)
	checkJSONMessage(t, "websocket kept over the reload", ws.nextMessage(t), ch, "", after)
	checkJSONMessage(t, "websocket opened after the reload", ws2.nextMessage(t), ch, "", after)
	return e
}

func TestHubGoroutinesBaseline(t *testing.T) {
	t.Parallel()
	e := startHub(t, hubOpts{longpollTimeout: "10s"})
	chans := [][]string{{"g1"}, {"g2"}, {"g1", "g2"}}

	// warm up every path once, so that lazily started goroutines (the
	// broker's, the channels') are in the baseline
	round := func(nSSE, nWS, nPoll int, check func()) {
		var sses []*harness.SSEReader
		var wss []*hubWS
		for i := 0; i < nSSE; i++ {
			sses = append(sses, e.openSSE(t, hubQuery(chans[i%len(chans)])))
		}
		for i := 0; i < nWS; i++ {
			wss = append(wss, e.openWS(t, hubQuery(chans[i%len(chans)])))
		}
		var polls []<-chan asyncPoll
		for i := 0; i < nPoll; i++ {
			polls = append(polls, goPoll(e.client, e.c.URL("/hub?"+hubQuery(chans[i%len(chans)]))))
		}
		waitMetric(t, e.c, "realtime_connections", map[string]string{"transport": "longpoll"}, func(v float64) bool { return v == float64(nPoll) })
		if check != nil {
			check()
		}
		// every subscription is live: one message each answers the polls
		e.redisPublish(t, "g1", []byte("m"))
		e.redisPublish(t, "g2", []byte("m"))
		for i, p := range polls {
			select {
			case a := <-p:
				if a.err != nil || len(a.res.decoded.Messages) == 0 {
					t.Fatalf("poll %d: %v %s", i, a.err, a.res.body)
				}
			case <-time.After(3 * hubWait):
				t.Fatalf("poll %d not answered", i)
			}
		}
		for _, r := range sses {
			r.NextEvent(t, hubWait)
			r.Close()
		}
		for _, w := range wss {
			w.nextMessage(t)
			_ = w.conn.Close()
		}
		for _, tr := range []string{"sse", "ws", "longpoll"} {
			waitMetric(t, e.c, "realtime_connections", map[string]string{"transport": tr}, func(v float64) bool { return v == 0 })
		}
		e.client.CloseIdleConnections()
	}
	round(3, 3, 3, nil)
	baseline := stableGoroutines(t, e.c)

	round(30, 30, 15, func() {
		n := e.c.Goroutines(t)
		if n < baseline+30 {
			t.Errorf("%d goroutines with 75 clients, baseline %d: is the count right?", n, baseline)
		}
		t.Logf("goroutines: baseline %d, with 75 clients %d", baseline, n)
	})
	const slack = 5
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := e.c.Goroutines(t)
		if n <= baseline+slack {
			break
		}
		if time.Now().After(deadline) {
			_, prof := e.c.Admin(t, http.MethodGet, "/debug/pprof/goroutine?debug=1", nil)
			t.Fatalf("%d goroutines 10s after the clients left, baseline %d\n%s", n, baseline, prof)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stableGoroutines returns Caddy's goroutine count once the goroutines of
// the connections just closed have exited. Nothing signals that (the
// server's per-connection goroutines outlive the realtime_connections
// gauge), so it waits until stableReads reads in a row give the same count,
// and fails the test if the count is still moving after 10s (a baseline
// taken then would be a guess).
func stableGoroutines(t *testing.T, c *harness.Caddy) int {
	t.Helper()
	const stableReads = 8 // 25ms apart: the count held for ~200ms
	deadline := time.Now().Add(10 * time.Second)
	prev, same := c.Goroutines(t), 1
	for same < stableReads {
		if time.Now().After(deadline) {
			_, prof := c.Admin(t, http.MethodGet, "/debug/pprof/goroutine?debug=1", nil)
			t.Fatalf("goroutine count still changing 10s after the clients left (last %d)\n%s", prev, prof)
		}
		time.Sleep(25 * time.Millisecond)
		if n := c.Goroutines(t); n == prev {
			same++
		} else {
			prev, same = n, 1
		}
	}
	return prev
}

// metricValue returns the value of the sample of name whose labels
// include labels, summed over the samples that match; 0 if none.
func metricValue(text, name string, labels map[string]string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		series, value := line[:sp], line[sp+1:]
		metric, rawLabels, _ := strings.Cut(series, "{")
		if metric != name {
			continue
		}
		have := map[string]string{}
		for _, kv := range strings.Split(strings.TrimSuffix(rawLabels, "}"), ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				have[k] = strings.Trim(v, `"`)
			}
		}
		match := true
		for k, v := range labels {
			if have[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		f, err := strconv.ParseFloat(value, 64)
		if err == nil {
			sum += f
		}
	}
	return sum
}

// waitMetric polls /metrics until ok holds for the metric's value.
func waitMetric(t *testing.T, c *harness.Caddy, name string, labels map[string]string, ok func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v := metricValue(c.Metrics(t), name, labels)
		if ok(v) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v after 10s", name, labels, v)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
