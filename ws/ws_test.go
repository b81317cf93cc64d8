package ws_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/internal/hub"
	"github.com/caddy-realtime/realtime/internal/hubtest"
	"github.com/caddy-realtime/realtime/replay"
	"github.com/caddy-realtime/realtime/ws"
	"github.com/gorilla/websocket"
)

// wait bounds every wait for an event.
const wait = hubtest.Wait

// config is what a test server varies.
type config struct {
	opts      ws.Options
	queueSize int  // the hub's queue per subscriber (0: its default)
	publish   bool // Options.Publish publishes through the hub
	detach    bool // Options.Detach runs the connection on a goroutine of its own
	// queued turns DirectWrites off: every message then goes through the
	// connection's writer, never straight from the hub's fan-out (which
	// is what the module does by default, and the tests too)
	queued bool
}

// server is a real hub (see hubtest) serving ws.Serve on a real TCP
// listener. Its handler opens the session of the requested channels from
// ?last_event_id=, as the module does, and serves it.
type server struct {
	hub    *hubtest.Hub
	url    string             // ws:// URL of the endpoint
	cancel context.CancelFunc // ends every Serve (the ctx it is given)

	sessions chan *hub.Session // each session, once live
	returns  chan error        // what each ws.Serve returned
	ends     chan error        // what each detached connection's serve returned
}

func newServer(t *testing.T, cfg config) *server {
	t.Helper()
	hubtest.CheckGoroutines(t) // first: its check runs last
	h := hubtest.New(t, hub.Options{QueueSize: cfg.queueSize})
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{
		hub:      h,
		cancel:   cancel,
		sessions: make(chan *hub.Session, 16),
		returns:  make(chan error, 16),
		ends:     make(chan error, 16),
	}
	opts := cfg.opts
	opts.DirectWrites = !cfg.queued
	if cfg.publish {
		opts.Publish = func(ctx context.Context, channel, event string, data []byte) (string, error) {
			return h.Hub.Publish(ctx, channel, event, data, broker.SourceWS)
		}
	}
	var handlers sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers.Add(1)
		defer handlers.Done()
		q := r.URL.Query()
		ss, err := h.Session(r.Context(), q["channel"], "ws", q.Get("last_event_id"))
		if err != nil {
			t.Errorf("subscribing %v: %v", q["channel"], err)
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		detached := false
		defer func() {
			if !detached {
				ss.Close()
			}
		}()
		s.sessions <- ss
		o := opts
		if cfg.detach {
			o.Detach = func(serve func() error) {
				detached = true
				handlers.Add(1)
				go func() {
					defer handlers.Done()
					err := serve()
					ss.Close()
					s.ends <- err
				}()
			}
		}
		s.returns <- ws.Serve(ctx, w, r, ss, o)
	}))
	s.url = "ws" + strings.TrimPrefix(srv.URL, "http")
	t.Cleanup(func() { // before the hub's: registered after
		cancel() // every Serve ends
		srv.Close()
		done := make(chan struct{})
		go func() { handlers.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(wait):
			t.Errorf("handlers still running %v after the test", wait)
		}
	})
	return s
}

// dial connects a gorilla client with query q; the connection is closed
// when the test ends.
func (s *server) dial(t *testing.T, q url.Values) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: wait}
	conn, resp, err := d.Dial(s.url+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake status %d", resp.StatusCode)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// frame is any frame the server sends: a control frame (with a type) or
// a message.
type frame struct {
	Type        string   `json:"type"`
	Channels    []string `json:"channels"`
	LastEventID string   `json:"last_event_id"`
	ID          string   `json:"id"`
	Reason      string   `json:"reason"`
	Channel     string   `json:"channel"`
	Event       string   `json:"event"`
	Data        string   `json:"data"`

	keys []string // the JSON object's keys, sorted
	raw  string
}

// read reads the next data frame, which must be a JSON text frame.
func read(t *testing.T, conn *websocket.Conn) frame {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	typ, data, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	if typ != websocket.TextMessage {
		t.Fatalf("frame of type %d, want a text frame: %q", typ, data)
	}
	var f frame
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		t.Fatalf("frame %q is not a JSON object: %v", data, err)
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("frame %q: %v", data, err)
	}
	for k := range obj {
		f.keys = append(f.keys, k)
	}
	sort.Strings(f.keys)
	f.raw = string(data)
	return f
}

// wantMessage checks that f is a message frame: exactly the keys
// channel, id, event, data, with these values.
func wantMessage(t *testing.T, f frame, channel, id, event, data string) {
	t.Helper()
	if !reflect.DeepEqual(f.keys, []string{"channel", "data", "event", "id"}) {
		t.Fatalf("message frame %s has keys %v, want channel, id, event, data", f.raw, f.keys)
	}
	if f.Channel != channel || f.ID != id || f.Event != event || f.Data != data {
		t.Fatalf("message frame %s, want channel %q id %q event %q data %q", f.raw, channel, id, event, data)
	}
}

// wantSubscribed checks that f is the subscribed control frame.
func wantSubscribed(t *testing.T, f frame, channels []string, lastEventID string) {
	t.Helper()
	if f.Type != "subscribed" || !reflect.DeepEqual(f.Channels, channels) || f.LastEventID != lastEventID {
		t.Fatalf("got %s, want the subscribed frame with channels %v and last_event_id %q", f.raw, channels, lastEventID)
	}
	if !reflect.DeepEqual(f.keys, []string{"channels", "last_event_id", "type"}) {
		t.Fatalf("subscribed frame %s has keys %v", f.raw, f.keys)
	}
}

// expectClose reads until the server's close frame, which must come
// next and carry code; it returns the close reason.
func expectClose(t *testing.T, conn *websocket.Conn, code int) string {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	typ, data, err := conn.ReadMessage()
	if err == nil {
		t.Fatalf("got a frame (type %d) %q, want close %d", typ, data, code)
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("connection ended with %v, want close %d", err, code)
	}
	if ce.Code != code {
		t.Fatalf("closed with %d %q, want %d", ce.Code, ce.Text, code)
	}
	return ce.Text
}

func send(t *testing.T, conn *websocket.Conn, typ int, data string) {
	t.Helper()
	_ = conn.SetWriteDeadline(time.Now().Add(wait))
	if err := conn.WriteMessage(typ, []byte(data)); err != nil {
		t.Fatalf("writing a frame: %v", err)
	}
}

func channels(names ...string) url.Values { return url.Values{"channel": names} }

func TestIsUpgrade(t *testing.T) {
	tests := []struct {
		name   string
		method string
		proto  int
		header http.Header
		want   bool
	}{
		{"plain", "GET", 1, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, true},
		{"case", "GET", 1, http.Header{"Connection": {"UPGRADE"}, "Upgrade": {"WebSocket"}}, true},
		{"token list", "GET", 1, http.Header{"Connection": {"keep-alive, Upgrade"}, "Upgrade": {"websocket"}}, true},
		{"token list spaces", "GET", 1, http.Header{"Connection": {"keep-alive ,  upgrade  "}, "Upgrade": {"websocket"}}, true},
		{"several Connection lines", "GET", 1, http.Header{"Connection": {"keep-alive", "Upgrade"}, "Upgrade": {"websocket"}}, true},
		{"no Connection upgrade", "GET", 1, http.Header{"Connection": {"keep-alive"}, "Upgrade": {"websocket"}}, false},
		{"token is not a substring", "GET", 1, http.Header{"Connection": {"upgraded"}, "Upgrade": {"websocket"}}, false},
		{"other protocol", "GET", 1, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2c"}}, false},
		{"no Upgrade", "GET", 1, http.Header{"Connection": {"Upgrade"}}, false},
		{"no headers", "GET", 1, http.Header{}, false},
		{"extended CONNECT", "CONNECT", 2, http.Header{":protocol": {"websocket"}}, true},
		{"plain CONNECT", "CONNECT", 2, http.Header{}, false},
		{"CONNECT of another protocol", "CONNECT", 2, http.Header{":protocol": {"webtransport"}}, false},
		{":protocol on a GET", "GET", 2, http.Header{":protocol": {"websocket"}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "http://example.com/hub?channel=a", nil)
			r.ProtoMajor = tc.proto
			r.Header = tc.header
			if got := ws.IsUpgrade(r); got != tc.want {
				t.Fatalf("IsUpgrade = %v, want %v", got, tc.want)
			}
		})
	}
}

// DESIGN.md, "Hostile clients": a request with `Connection: upgrade` and
// any Upgrade token list that names websocket, in any case, asks for a
// WebSocket (the passthrough's Origin and ticket checks hang on
// IsUpgrade). gorilla's Upgrader, and so a typical upstream, accepts
// these.
func TestIsUpgradeUpgradeTokenList(t *testing.T) {
	tests := []struct {
		name   string
		header http.Header
	}{
		{"websocket last", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2c, websocket"}}},
		{"websocket first", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"WebSocket, h2c"}}},
		{"several Upgrade lines", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2c", "websocket"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "http://example.com/hub?channel=a", nil)
			r.Header = tc.header
			if !ws.IsUpgrade(r) || !ws.SwitchesProtocol(r) {
				t.Fatalf("IsUpgrade %v, SwitchesProtocol %v for %v", ws.IsUpgrade(r), ws.SwitchesProtocol(r), tc.header)
			}
		})
	}
}

// Any protocol switch a proxy would pass on is one; plain requests are
// not.
func TestSwitchesProtocol(t *testing.T) {
	tests := []struct {
		method string
		header http.Header
		want   bool
	}{
		{"GET", http.Header{"Connection": {"keep-alive, Upgrade"}, "Upgrade": {"foo/1"}}, true},
		{"GET", http.Header{"Connection": {"upgrade"}, "Upgrade": {"h2c"}}, true},
		{"CONNECT", http.Header{}, true},
		{"GET", http.Header{"Upgrade": {"websocket"}}, false}, // no Connection: upgrade
		{"GET", http.Header{"Connection": {"Upgrade"}}, false},
		{"GET", http.Header{"Accept": {"*/*"}}, false},
	}
	for _, tc := range tests {
		r := httptest.NewRequest(tc.method, "http://example.com/x", nil)
		r.Header = tc.header
		if got := ws.SwitchesProtocol(r); got != tc.want {
			t.Errorf("%s %v: SwitchesProtocol %v, want %v", tc.method, tc.header, got, tc.want)
		}
	}
}

// The subscribed frame comes first, with the client's position; then
// the replay of what it missed; then live messages, each a JSON text
// frame, whether the hub's fan-out writes them to the socket or the
// connection's writer does. Each is counted once, as ws.
func TestSubscribedThenReplayThenLive(t *testing.T) {
	for _, queued := range []bool{false, true} {
		t.Run(fmt.Sprintf("queued=%v", queued), func(t *testing.T) {
			s := newServer(t, config{queued: queued})
			_, ids := s.hub.History(t, "news", "one", "two")

			q := channels("news")
			q.Set("last_event_id", ids[0])
			conn := s.dial(t, q)
			wantSubscribed(t, read(t, conn), []string{"news"}, ids[0])
			wantMessage(t, read(t, conn), "news", ids[1], "message", "two")

			id3 := s.hub.Publish(t, "news", "update", "three\nlines \"quoted\" ✓")
			wantMessage(t, read(t, conn), "news", id3, "update", "three\nlines \"quoted\" ✓")
			s.hub.Publish(t, "other", "", "not subscribed")
			id4 := s.hub.Publish(t, "news", "", "four")
			wantMessage(t, read(t, conn), "news", id4, "message", "four")

			// a delivery is counted once written, so those before four
			// are; four's may still be on its way
			want := []string{"ws/" + ids[1] + "/1", "ws/" + id3 + "/1"}
			got := s.hub.Observed.Deliveries()
			if len(got) == 3 && got[2] == "ws/"+id4+"/1" {
				got = got[:2]
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("observer got %v, want %v (and four's)", s.hub.Observed.Deliveries(), want)
			}
		})
	}
}

// A payload that is not UTF-8 text goes out in base64, marked so, and
// decodes to the bytes published.
func TestBinaryPayloadIsBase64(t *testing.T) {
	s := newServer(t, config{})
	conn := s.dial(t, channels("bin"))
	read(t, conn) // subscribed
	payload := "\xff\x00\xfe text"
	id := s.hub.Publish(t, "bin", "", payload)
	f := read(t, conn)
	var enc struct{ Encoding string }
	_ = json.Unmarshal([]byte(f.raw), &enc)
	got, err := base64.StdEncoding.DecodeString(f.Data)
	if f.ID != id || enc.Encoding != "base64" || err != nil || string(got) != payload {
		t.Fatalf("got %s, want the payload in base64 with \"encoding\":\"base64\"", f.raw)
	}
}

// A first connection (no cursor) is told its position in the subscribed
// frame: resuming from it later misses nothing published meanwhile.
func TestSubscribedPositionIsAResumePoint(t *testing.T) {
	s := newServer(t, config{})
	s.hub.History(t, "news", "old")
	conn := s.dial(t, channels("news"))
	f := read(t, conn)
	wantSubscribed(t, f, []string{"news"}, s.hub.LastID("news"))
	_ = conn.Close()

	id := s.hub.Publish(t, "news", "", "while away")
	q := channels("news")
	q.Set("last_event_id", f.LastEventID)
	conn = s.dial(t, q)
	wantSubscribed(t, read(t, conn), []string{"news"}, f.LastEventID)
	wantMessage(t, read(t, conn), "news", id, "message", "while away")
}

// With several channels, each message's id is the cursor of the whole
// subscription after it.
func TestMultiChannelIDsAreCursors(t *testing.T) {
	s := newServer(t, config{})
	startA, _ := s.hub.History(t, "a")
	startB, _ := s.hub.History(t, "b")
	a1 := s.hub.Publish(t, "a", "", "a1")
	b1 := s.hub.Publish(t, "b", "", "b1")

	start := replay.EncodeCursor([]replay.Position{{Channel: "a", ID: startA}, {Channel: "b", ID: startB}})
	q := channels("a", "b")
	q.Set("last_event_id", start)
	conn := s.dial(t, q)
	wantSubscribed(t, read(t, conn), []string{"a", "b"}, start)
	cursor := func(a, b string) string {
		return replay.EncodeCursor([]replay.Position{{Channel: "a", ID: a}, {Channel: "b", ID: b}})
	}
	wantMessage(t, read(t, conn), "a", cursor(a1, startB), "message", "a1")
	wantMessage(t, read(t, conn), "b", cursor(a1, b1), "message", "b1")
	a2 := s.hub.Publish(t, "a", "", "a2")
	wantMessage(t, read(t, conn), "a", cursor(a2, b1), "message", "a2")
}

// A publish frame is published through Options.Publish and answered with
// an ack carrying the new id; the subscriber gets the message too.
func TestPublishFrameIsAcked(t *testing.T) {
	s := newServer(t, config{publish: true})
	conn := s.dial(t, channels("chat"))
	wantSubscribed(t, read(t, conn), []string{"chat"}, s.hub.LastID("chat"))

	send(t, conn, websocket.TextMessage, `{"type":"publish","channel":"chat","event":"say","data":"hi"}`)
	// the ack and the message itself may come in either order
	var ack, msg frame
	for i := 0; i < 2; i++ {
		f := read(t, conn)
		if f.Type != "" {
			ack = f
		} else {
			msg = f
		}
	}
	if ack.Type != "ack" || ack.ID == "" || !reflect.DeepEqual(ack.keys, []string{"id", "type"}) {
		t.Fatalf("got %s, want {\"type\":\"ack\",\"id\":...}", ack.raw)
	}
	wantMessage(t, msg, "chat", ack.ID, "say", "hi")
	if last := s.hub.LastID("chat"); last != ack.ID {
		t.Fatalf("ack id %q, the channel's last id %q", ack.ID, last)
	}

	// a publish frame without data is refused; the connection goes on
	send(t, conn, websocket.TextMessage, `{"type":"publish","channel":"chat"}`)
	if f := read(t, conn); f.Type != "error" || f.Reason == "" {
		t.Fatalf("publish without data: got %s, want an error frame", f.raw)
	}
	send(t, conn, websocket.TextMessage, `{"type":"publish","channel":"chat","data":""}`)
	ack, msg = frame{}, frame{}
	for i := 0; i < 2; i++ {
		if f := read(t, conn); f.Type != "" {
			ack = f
		} else {
			msg = f
		}
	}
	if ack.Type != "ack" {
		t.Fatalf("publish of empty data: got %s, want an ack", ack.raw)
	}
	wantMessage(t, msg, "chat", ack.ID, "message", "")
}

// What Options.Publish refuses comes back as an error frame with its
// reason.
func TestPublishErrorIsReported(t *testing.T) {
	var got struct {
		sync.Mutex
		channel, event, data string
	}
	s := newServer(t, config{opts: ws.Options{
		Publish: func(_ context.Context, channel, event string, data []byte) (string, error) {
			got.Lock()
			got.channel, got.event, got.data = channel, event, string(data)
			got.Unlock()
			return "", errors.New("ticket does not allow publishing to \"x\"")
		},
	}})
	conn := s.dial(t, channels("chat"))
	read(t, conn) // subscribed
	send(t, conn, websocket.TextMessage, `{"type":"publish","channel":"x","event":"e","data":"d"}`)
	f := read(t, conn)
	if f.Type != "error" || f.Reason != "ticket does not allow publishing to \"x\"" || !reflect.DeepEqual(f.keys, []string{"reason", "type"}) {
		t.Fatalf("got %s, want the error frame with Publish's error", f.raw)
	}
	got.Lock()
	defer got.Unlock()
	if got.channel != "x" || got.event != "e" || got.data != "d" {
		t.Fatalf("Publish called with %q %q %q", got.channel, got.event, got.data)
	}
}

// Without Options.Publish, publish frames are refused; other frames get
// their answers and the connection stays open.
func TestFramesWithoutPublish(t *testing.T) {
	s := newServer(t, config{})
	conn := s.dial(t, channels("chat"))
	read(t, conn) // subscribed
	before := s.hub.LastID("chat")
	for _, tc := range []struct{ in, typ, reason string }{
		{`{"type":"publish","channel":"chat","data":"hi"}`, "error", "not allowed"},
		{`not json`, "error", "invalid JSON"},
		{`{"type":"bogus"}`, "error", "bogus"},
		{`{"type":"ping"}`, "pong", ""},
	} {
		send(t, conn, websocket.TextMessage, tc.in)
		f := read(t, conn)
		keys := []string{"reason", "type"}
		if tc.reason == "" {
			keys = []string{"type"}
		}
		if f.Type != tc.typ || !strings.Contains(f.Reason, tc.reason) || !reflect.DeepEqual(f.keys, keys) {
			t.Fatalf("sent %s: got %s, want type %q with a reason containing %q", tc.in, f.raw, tc.typ, tc.reason)
		}
	}
	if last := s.hub.LastID("chat"); last != before {
		t.Fatalf("something was published: last id %q, was %q", last, before)
	}
	// still subscribed
	id := s.hub.Publish(t, "chat", "", "after")
	wantMessage(t, read(t, conn), "chat", id, "message", "after")
}

// A client's ping is answered with a pong carrying its data.
func TestClientPingIsPonged(t *testing.T) {
	s := newServer(t, config{})
	conn := s.dial(t, channels("c"))
	read(t, conn) // subscribed
	pongs := make(chan string, 1)
	conn.SetPongHandler(func(data string) error { pongs <- data; return nil })
	if err := conn.WriteControl(websocket.PingMessage, []byte("abc"), time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	// the server reads frames in order and answers them in order: the
	// pong comes before the answer to a ping frame sent after
	send(t, conn, websocket.TextMessage, `{"type":"ping"}`)
	if f := read(t, conn); f.Type != "pong" {
		t.Fatalf("got %s, want a pong frame", f.raw)
	}
	if got := hubtest.Recv(t, pongs, "the pong"); got != "abc" {
		t.Fatalf("pong data %q, want abc", got)
	}
}

func TestBinaryFrameClosesWith1003(t *testing.T) {
	s := newServer(t, config{})
	conn := s.dial(t, channels("c"))
	read(t, conn) // subscribed
	send(t, conn, websocket.BinaryMessage, `{"type":"ping"}`)
	expectClose(t, conn, websocket.CloseUnsupportedData)
	_ = conn.Close() // the server waits (bounded) for the client to close first
	if err := hubtest.Recv(t, s.returns, "Serve to return"); err != nil {
		t.Fatalf("Serve returned %v", err)
	}
}

func TestOversizedFrameClosesWith1009(t *testing.T) {
	var limited atomic.Int32
	s := newServer(t, config{opts: ws.Options{MessageSize: 32, OnLimit: func() { limited.Add(1) }}})
	conn := s.dial(t, channels("c"))
	read(t, conn) // subscribed
	ping := `{"type":"ping"}`
	send(t, conn, websocket.TextMessage, ping+strings.Repeat(" ", 32-len(ping))) // exactly the limit
	if f := read(t, conn); f.Type != "pong" {
		t.Fatalf("frame of MessageSize bytes: got %s, want a pong", f.raw)
	}
	if n := limited.Load(); n != 0 {
		t.Fatalf("OnLimit called %d times within the limit", n)
	}
	send(t, conn, websocket.TextMessage, ping+strings.Repeat(" ", 33-len(ping)))
	if reason := expectClose(t, conn, websocket.CloseMessageTooBig); reason == "" {
		t.Fatal("close 1009 without a reason")
	}
	_ = conn.Close() // the server waits (bounded) for the client to close first
	if n := limited.Load(); n != 1 {
		t.Fatalf("OnLimit called %d times, want 1", n)
	}
	if err := hubtest.Recv(t, s.returns, "Serve to return"); err != nil {
		t.Fatalf("Serve returned %v", err)
	}
}

func TestFrameRateClosesWith1008(t *testing.T) {
	var limited atomic.Int32
	// a rate so low that no token comes back during the test
	s := newServer(t, config{opts: ws.Options{FrameRate: 0.001, FrameBurst: 3, OnLimit: func() { limited.Add(1) }}})
	conn := s.dial(t, channels("c"))
	read(t, conn) // subscribed
	for i := 0; i < 3; i++ {
		send(t, conn, websocket.TextMessage, `{"type":"ping"}`)
		if f := read(t, conn); f.Type != "pong" {
			t.Fatalf("frame %d of the burst: got %s, want a pong", i, f.raw)
		}
	}
	if n := limited.Load(); n != 0 {
		t.Fatalf("OnLimit called %d times within the burst", n)
	}
	send(t, conn, websocket.TextMessage, `{"type":"ping"}`)
	expectClose(t, conn, websocket.ClosePolicyViolation)
	if n := limited.Load(); n != 1 {
		t.Fatalf("OnLimit called %d times, want 1", n)
	}
}

// DESIGN.md, "Hostile clients": every inbound frame counts against the
// frame rate, control frames (ping, pong) included; over it the
// connection closes with 1008.
func TestControlFramesCountAgainstFrameRate(t *testing.T) {
	for _, kind := range []int{websocket.PingMessage, websocket.PongMessage} {
		t.Run(strconv.Itoa(kind), func(t *testing.T) {
			var limited atomic.Int32
			s := newServer(t, config{opts: ws.Options{FrameRate: 0.001, FrameBurst: 3, OnLimit: func() { limited.Add(1) }}})
			conn := s.dial(t, channels("c"))
			read(t, conn) // subscribed
			for i := 0; i < 10; i++ {
				if err := conn.WriteControl(kind, nil, time.Now().Add(wait)); err != nil {
					break // closed meanwhile
				}
			}
			// the pongs are read (and dropped) on the way to the close
			expectClose(t, conn, websocket.ClosePolicyViolation)
			if n := limited.Load(); n != 1 {
				t.Fatalf("OnLimit called %d times, want 1", n)
			}
		})
	}
}

var errEnough = errors.New("enough pings")

// The server pings every Heartbeat.
func TestHeartbeatPings(t *testing.T) {
	const hb = 30 * time.Millisecond
	s := newServer(t, config{opts: ws.Options{Heartbeat: hb}})
	start := time.Now()
	conn := s.dial(t, channels("c"))
	read(t, conn) // subscribed
	pings := 0
	conn.SetPingHandler(func(data string) error {
		if err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(wait)); err != nil {
			return err
		}
		if pings++; pings == 3 {
			return errEnough // ends the read below
		}
		return nil
	})
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	_, data, err := conn.ReadMessage()
	if !errors.Is(err, errEnough) {
		t.Fatalf("got %q, %v; want three pings within %v", data, err, wait)
	}
	// each ping is armed once the previous one went out
	if elapsed := time.Since(start); elapsed < 3*hb {
		t.Fatalf("three pings within %v, heartbeat %v", elapsed, hb)
	}
}

// Ending Serve's context closes the connection with 1001.
func TestContextCancelClosesWith1001(t *testing.T) {
	s := newServer(t, config{})
	conn := s.dial(t, channels("c"))
	read(t, conn) // subscribed
	s.cancel()
	expectClose(t, conn, websocket.CloseGoingAway)
	if err := hubtest.Recv(t, s.returns, "Serve to return"); err != nil {
		t.Fatalf("Serve returned %v", err)
	}
}

// A hub that closes drops its subscribers: their connections close with
// 1001.
func TestHubCloseClosesWith1001(t *testing.T) {
	s := newServer(t, config{})
	conn := s.dial(t, channels("c"))
	read(t, conn) // subscribed
	s.hub.Close()
	expectClose(t, conn, websocket.CloseGoingAway)
	if err := hubtest.Recv(t, s.returns, "Serve to return"); !errors.Is(err, hub.ErrHubClosed) {
		t.Fatalf("Serve returned %v, want %v", err, hub.ErrHubClosed)
	}
}

// A subscriber whose queue overflows (the client does not read, and a
// burst outpaces its writer) is dropped: the client gets what was
// written, in order, then close 1013 telling it to resume.
func TestSlowConsumerClosesWith1013(t *testing.T) {
	s := newServer(t, config{queueSize: 4})
	conn := s.dial(t, channels("c"))
	read(t, conn) // subscribed
	ss := hubtest.Recv(t, s.sessions, "the session")
	payload := strings.Repeat("x", 32<<10)
	var ids []string
	deadline := time.Now().Add(wait)
publish:
	for {
		select {
		case <-ss.Done():
			break publish
		default:
		}
		if time.Now().After(deadline) || len(ids) == 100000 {
			t.Fatalf("subscriber not dropped after %d messages", len(ids))
		}
		ids = append(ids, s.hub.Publish(t, "c", "", payload))
	}
	if !errors.Is(ss.Err(), hub.ErrSlowConsumer) {
		t.Fatalf("session dropped with %v", ss.Err())
	}
	received := 0
	for {
		_ = conn.SetReadDeadline(time.Now().Add(wait))
		_, data, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseTryAgainLater || !strings.Contains(ce.Text, "last_event_id") {
				t.Fatalf("after %d messages: %v, want close 1013 asking to resume", received, err)
			}
			break
		}
		var f frame
		if err := json.Unmarshal(data, &f); err != nil || received >= len(ids) || f.ID != ids[received] || f.Data != payload {
			t.Fatalf("message %d of %d: %.80q", received, len(ids), data)
		}
		received++
	}
	if received >= len(ids) {
		t.Fatalf("got all %d messages before close 1013", len(ids))
	}
	if err := hubtest.Recv(t, s.returns, "Serve to return"); !errors.Is(err, hub.ErrSlowConsumer) {
		t.Fatalf("Serve returned %v, want %v", err, hub.ErrSlowConsumer)
	}
}

// A client's close is answered with the same code, and Serve returns.
func TestClientCloseIsEchoed(t *testing.T) {
	s := newServer(t, config{})
	conn := s.dial(t, channels("c"))
	read(t, conn) // subscribed
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")
	if err := conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	expectClose(t, conn, websocket.CloseNormalClosure)
	if err := hubtest.Recv(t, s.returns, "Serve to return"); err != nil {
		t.Fatalf("Serve returned %v", err)
	}
}

// A client that breaks the protocol (an unmasked frame) is closed with
// 1002 by this package's writer, not by gorilla's.
func TestProtocolErrorClosesWith1002(t *testing.T) {
	s := newServer(t, config{})
	conn := s.dial(t, channels("c"))
	read(t, conn) // subscribed
	// a client's frames must be masked: this one is not
	if _, err := conn.NetConn().Write([]byte{0x81, 2, 'h', 'i'}); err != nil {
		t.Fatal(err)
	}
	if reason := expectClose(t, conn, websocket.CloseProtocolError); reason == "" {
		t.Fatal("close 1002 without a reason")
	}
	_ = conn.Close() // the server waits (bounded) for the client to close first
	hubtest.Recv(t, s.returns, "Serve to return")
}

// With Options.Detach, Serve hands the connection over and returns
// ErrDetached; the connection goes on without its request.
func TestDetach(t *testing.T) {
	s := newServer(t, config{detach: true})
	conn := s.dial(t, channels("c"))
	if err := hubtest.Recv(t, s.returns, "Serve to return"); !errors.Is(err, ws.ErrDetached) {
		t.Fatalf("Serve returned %v, want ErrDetached", err)
	}
	wantSubscribed(t, read(t, conn), []string{"c"}, s.hub.LastID("c"))
	id := s.hub.Publish(t, "c", "", "detached")
	wantMessage(t, read(t, conn), "c", id, "message", "detached")
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if err := conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	expectClose(t, conn, websocket.CloseNormalClosure)
	if err := hubtest.Recv(t, s.ends, "the detached connection to end"); err != nil {
		t.Fatalf("detached serve returned %v", err)
	}
}
