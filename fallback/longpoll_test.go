package fallback_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/fallback"
	"github.com/caddy-realtime/realtime/internal/hub"
	"github.com/caddy-realtime/realtime/internal/hubtest"
	"github.com/caddy-realtime/realtime/replay"
)

// wait bounds every wait for an event.
const wait = hubtest.Wait

// result is how one fallback.Serve went.
type result struct {
	err   error
	wrote bool // WriteHeader or Write was called
}

// recorder notes whether anything was written to the response.
type recorder struct {
	http.ResponseWriter
	mu    sync.Mutex
	wrote bool
}

func (r *recorder) WriteHeader(code int) {
	r.mu.Lock()
	r.wrote = true
	r.mu.Unlock()
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	r.wrote = true
	r.mu.Unlock()
	return r.ResponseWriter.Write(b)
}

// server is a real hub (see hubtest) serving fallback.Serve on a real
// TCP listener. Its handler opens the session of the requested channels
// from ?last_event_id=, as the module does, and serves one poll.
type server struct {
	hub      *hubtest.Hub
	url      string
	client   *http.Client
	shutdown context.CancelFunc // ends Options.Shutdown

	sessions chan *hub.Session // each session, once live
	results  chan result       // how each Serve went
}

func newServer(t *testing.T, timeout time.Duration) *server {
	t.Helper()
	hubtest.CheckGoroutines(t) // first: its check runs last
	// the hub's Linger keeps a channel (and its epoch) subscribed between
	// polls, as the module's replay ttl does
	h := hubtest.New(t, hub.Options{})
	shutdown, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := &server{
		hub:      h,
		shutdown: cancel,
		sessions: make(chan *hub.Session, 16),
		results:  make(chan result, 16),
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ss, err := h.Session(r.Context(), q["channel"], "longpoll", q.Get("last_event_id"))
		if err != nil {
			t.Errorf("subscribing %v: %v", q["channel"], err)
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer ss.Close()
		s.sessions <- ss
		rec := &recorder{ResponseWriter: w}
		err = fallback.Serve(r.Context(), rec, ss, fallback.Options{
			Timeout:  timeout,
			Shutdown: shutdown,
		})
		rec.mu.Lock()
		s.results <- result{err: err, wrote: rec.wrote}
		rec.mu.Unlock()
	}))
	s.url = srv.URL
	s.client = srv.Client()
	t.Cleanup(srv.Close) // waits for the handlers; before the hub's: registered after
	return s
}

// message is one message of a poll's answer, with the keys it had.
type message struct {
	Channel string `json:"channel"`
	ID      string `json:"id"`
	Event   string `json:"event"`
	Data    string `json:"data"`
}

// answer is a poll's decoded answer.
type answer struct {
	header   http.Header
	messages []message
	last     string
	elapsed  time.Duration
	err      error // pollAsync: what was wrong
}

// poll sends one poll and checks the answer's form (see fetch).
func (s *server) poll(t *testing.T, q url.Values) answer {
	t.Helper()
	a, err := s.fetch(q)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// pollAsync sends one poll from a goroutine of its own; its answer (or
// what was wrong with it) comes on the channel returned.
func (s *server) pollAsync(q url.Values) <-chan answer {
	c := make(chan answer, 1)
	go func() {
		a, err := s.fetch(q)
		a.err = err
		c <- a
	}()
	return c
}

// fetch sends one poll and checks the answer's form: 200, JSON, not
// cached, exactly {"messages": [...], "last_event_id": "..."}, each
// message exactly {channel, id, event, data}.
func (s *server) fetch(q url.Values) (answer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var a answer
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"?"+q.Encode(), nil)
	if err != nil {
		return a, err
	}
	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return a, fmt.Errorf("poll: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return a, fmt.Errorf("reading the answer: %w", err)
	}
	a.header, a.elapsed = resp.Header, time.Since(start)
	if resp.StatusCode != http.StatusOK {
		return a, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		return a, fmt.Errorf("Content-Type %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		return a, fmt.Errorf("Cache-Control %q", cc)
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(body)) {
		return a, fmt.Errorf("Content-Length %q for %d bytes", cl, len(body))
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return a, fmt.Errorf("answer %s: %w", body, err)
	}
	if len(top) != 2 || top["messages"] == nil || top["last_event_id"] == nil {
		return a, fmt.Errorf("answer %s: want exactly messages and last_event_id", body)
	}
	if err := json.Unmarshal(top["last_event_id"], &a.last); err != nil {
		return a, fmt.Errorf("last_event_id in %s: %w", body, err)
	}
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(top["messages"], &raw); err != nil || raw == nil {
		return a, fmt.Errorf("messages in %s: want a list (%v)", body, err)
	}
	for _, m := range raw {
		var keys []string
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if !reflect.DeepEqual(keys, []string{"channel", "data", "event", "id"}) {
			return a, fmt.Errorf("message with keys %v in %s, want channel, id, event, data", keys, body)
		}
	}
	if err := json.Unmarshal(top["messages"], &a.messages); err != nil {
		return a, fmt.Errorf("messages in %s: %w", body, err)
	}
	return a, nil
}

// await waits for an answer of pollAsync.
func await(t *testing.T, c <-chan answer) answer {
	t.Helper()
	a := hubtest.Recv(t, c, "the answer")
	if a.err != nil {
		t.Fatal(a.err)
	}
	return a
}

// wantServed checks that the last Serve returned nil having answered.
func (s *server) wantServed(t *testing.T) {
	t.Helper()
	r := hubtest.Recv(t, s.results, "Serve to return")
	if r.err != nil || !r.wrote {
		t.Fatalf("Serve returned %v, wrote %v", r.err, r.wrote)
	}
}

func channels(names ...string) url.Values { return url.Values{"channel": names} }

func resume(q url.Values, cursor string) url.Values {
	q.Set("last_event_id", cursor)
	return q
}

// A poll whose client missed messages answers at once with them and the
// position after the last.
func TestReplayAnswersAtOnce(t *testing.T) {
	s := newServer(t, time.Minute)
	_, ids := s.hub.History(t, "news", "one", "two", "three\n\"quoted\" ✓")
	s.hub.Publish(t, "other", "", "elsewhere")

	a := s.poll(t, resume(channels("news"), ids[0]))
	want := []message{
		{Channel: "news", ID: ids[1], Event: "message", Data: "two"},
		{Channel: "news", ID: ids[2], Event: "message", Data: "three\n\"quoted\" ✓"},
	}
	if !reflect.DeepEqual(a.messages, want) || a.last != ids[2] {
		t.Fatalf("got %+v and last_event_id %q, want %+v and %q", a.messages, a.last, want, ids[2])
	}
	if a.elapsed >= time.Minute {
		t.Fatalf("answered after %v: waited for the timeout", a.elapsed)
	}
	s.wantServed(t)
	wantObs := []string{"longpoll/" + ids[1] + "/1", "longpoll/" + ids[2] + "/1"}
	if got := s.hub.Observed.Deliveries(); !reflect.DeepEqual(got, wantObs) {
		t.Fatalf("observer got %v, want %v", got, wantObs)
	}
}

// A poll with nothing to replay waits, and answers with a message
// published meanwhile.
func TestWaitingPollGetsLiveMessage(t *testing.T) {
	s := newServer(t, time.Minute)
	_, ids := s.hub.History(t, "news", "old")

	answers := s.pollAsync(resume(channels("news"), ids[0]))
	hubtest.Recv(t, s.sessions, "the poll's session")
	id := s.hub.Publish(t, "news", "update", "live")
	a := await(t, answers)
	want := []message{{Channel: "news", ID: id, Event: "update", Data: "live"}}
	if !reflect.DeepEqual(a.messages, want) || a.last != id {
		t.Fatalf("got %+v and last_event_id %q, want %+v and %q", a.messages, a.last, want, id)
	}
	s.wantServed(t)
}

// With nothing published, a poll answers after the timeout with no
// messages and the position it was given (or, on a first poll, the
// position it started from).
func TestPollTimesOutWithSamePosition(t *testing.T) {
	const timeout = 50 * time.Millisecond
	s := newServer(t, timeout)
	start, ids := s.hub.History(t, "news", "old")
	if start == ids[0] {
		t.Fatal("history did not move the channel's position")
	}

	a := s.poll(t, resume(channels("news"), ids[0]))
	if len(a.messages) != 0 || a.last != ids[0] {
		t.Fatalf("got %+v and last_event_id %q, want none and %q", a.messages, a.last, ids[0])
	}
	if a.elapsed < timeout {
		t.Fatalf("answered after %v, before the timeout %v", a.elapsed, timeout)
	}
	s.wantServed(t)

	a = s.poll(t, channels("news")) // first poll: no cursor
	if len(a.messages) != 0 || a.last != ids[0] {
		t.Fatalf("first poll: got %+v and last_event_id %q, want none and %q", a.messages, a.last, ids[0])
	}
	s.wantServed(t)
}

// A first poll's position, polled from next, misses nothing published
// between the polls.
func TestNothingFallsBetweenPolls(t *testing.T) {
	s := newServer(t, 50*time.Millisecond)
	s.hub.History(t, "news")
	a := s.poll(t, channels("news"))
	if len(a.messages) != 0 || a.last == "" {
		t.Fatalf("first poll: got %+v and last_event_id %q", a.messages, a.last)
	}
	s.wantServed(t)
	id := s.hub.Publish(t, "news", "", "between")
	b := s.poll(t, resume(channels("news"), a.last))
	want := []message{{Channel: "news", ID: id, Event: "message", Data: "between"}}
	if !reflect.DeepEqual(b.messages, want) || b.last != id {
		t.Fatalf("second poll: got %+v and last_event_id %q, want %+v and %q", b.messages, b.last, want, id)
	}
	s.wantServed(t)
}

// Closing Options.Shutdown answers a waiting poll at once, with its
// position; a poll that comes after answers at once too.
func TestShutdownAnswersAtOnce(t *testing.T) {
	s := newServer(t, time.Minute)
	_, ids := s.hub.History(t, "news", "old")

	answers := s.pollAsync(resume(channels("news"), ids[0]))
	hubtest.Recv(t, s.sessions, "the poll's session")
	s.shutdown()
	a := await(t, answers)
	if len(a.messages) != 0 || a.last != ids[0] {
		t.Fatalf("got %+v and last_event_id %q, want none and %q", a.messages, a.last, ids[0])
	}
	s.wantServed(t)

	a = s.poll(t, resume(channels("news"), ids[0]))
	if len(a.messages) != 0 || a.last != ids[0] || a.elapsed >= time.Minute {
		t.Fatalf("after shutdown: got %+v and last_event_id %q after %v", a.messages, a.last, a.elapsed)
	}
	s.wantServed(t)
}

// A poll whose subscriber the hub drops (here: the hub closes) answers
// at once with its position.
func TestDroppedSubscriberAnswers(t *testing.T) {
	s := newServer(t, time.Minute)
	_, ids := s.hub.History(t, "news", "old")
	answers := s.pollAsync(resume(channels("news"), ids[0]))
	hubtest.Recv(t, s.sessions, "the poll's session")
	s.hub.Close()
	a := await(t, answers)
	if len(a.messages) != 0 || a.last != ids[0] {
		t.Fatalf("got %+v and last_event_id %q, want none and %q", a.messages, a.last, ids[0])
	}
	s.wantServed(t)
}

// A client that leaves a waiting poll ends it without an answer.
func TestClientGoneWritesNothing(t *testing.T) {
	s := newServer(t, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"?channel=news", nil)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 1)
	go func() {
		resp, err := s.client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errs <- err
	}()
	hubtest.Recv(t, s.sessions, "the poll's session")
	cancel()
	if err := hubtest.Recv(t, errs, "the client to give up"); !errors.Is(err, context.Canceled) {
		t.Fatalf("client got %v, want its cancellation", err)
	}
	r := hubtest.Recv(t, s.results, "Serve to return")
	if r.err != nil || r.wrote {
		t.Fatalf("Serve returned %v, wrote %v; want nil, nothing written", r.err, r.wrote)
	}
	if got := s.hub.Observed.Deliveries(); len(got) != 0 {
		t.Fatalf("observer got %v", got)
	}
}

// With several channels, each message's id is the cursor of the whole
// subscription after it, and so is the answer's position.
func TestMultiChannelIDsAreCursors(t *testing.T) {
	s := newServer(t, 50*time.Millisecond)
	startA, _ := s.hub.History(t, "a")
	startB, _ := s.hub.History(t, "b")
	a1 := s.hub.Publish(t, "a", "", "a1")
	b1 := s.hub.Publish(t, "b", "ev", "b1")
	a2 := s.hub.Publish(t, "a", "", "a2")
	cursor := func(a, b string) string {
		return replay.EncodeCursor([]replay.Position{{Channel: "a", ID: a}, {Channel: "b", ID: b}})
	}

	got := s.poll(t, resume(channels("a", "b"), cursor(startA, startB)))
	want := []message{
		{Channel: "a", ID: cursor(a1, startB), Event: "message", Data: "a1"},
		{Channel: "b", ID: cursor(a1, b1), Event: "ev", Data: "b1"},
		{Channel: "a", ID: cursor(a2, b1), Event: "message", Data: "a2"},
	}
	if !reflect.DeepEqual(got.messages, want) || got.last != cursor(a2, b1) {
		t.Fatalf("got %+v and last_event_id %q, want %+v and %q", got.messages, got.last, want, cursor(a2, b1))
	}
	s.wantServed(t)

	// nothing new: the same cursor back
	got = s.poll(t, resume(channels("a", "b"), cursor(a2, b1)))
	if len(got.messages) != 0 || got.last != cursor(a2, b1) {
		t.Fatalf("got %+v and last_event_id %q, want none and the same cursor", got.messages, got.last)
	}
	s.wantServed(t)
}
