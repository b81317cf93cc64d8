package webhook

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

type recorded struct {
	status int
	events []Event
	sig    string
	body   []byte
}

// server answers each request with the next status of statuses (200
// once they run out) and records it.
func server(t *testing.T, statuses ...int) (*httptest.Server, func() []recorded) {
	var mu sync.Mutex
	var got []recorded
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var b struct{ Events []Event }
		_ = json.Unmarshal(body, &b)
		mu.Lock()
		status := 200
		if len(got) < len(statuses) {
			status = statuses[len(got)]
		}
		got = append(got, recorded{status, b.Events, r.Header.Get(SignatureHeader), body})
		mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []recorded {
		mu.Lock()
		defer mu.Unlock()
		return append([]recorded(nil), got...)
	}
}

func waitRequests(t *testing.T, get func() []recorded, n int) []recorded {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(get()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests, want %d", len(get()), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return get()
}

// Events are batched (at most Batch, within Linger) and each body is
// signed with the key.
func TestBatchedAndSigned(t *testing.T) {
	srv, got := server(t)
	s := New(srv.URL, []byte("key"), Options{Batch: 3, Linger: 50 * time.Millisecond})
	defer s.Close()
	for i := range 4 {
		s.Send(Event{ID: fmt.Sprint(i), Type: "member_added", Channel: "c", Sub: "u"})
	}
	reqs := waitRequests(t, got, 2)
	if len(reqs[0].events) != 3 || len(reqs[1].events) != 1 || reqs[1].events[0].ID != "3" {
		t.Fatalf("batches %+v, want 3 then 1, in order", reqs)
	}
	for _, r := range reqs {
		if r.sig != Sign([]byte("key"), r.body) || r.sig[:7] != "sha256=" {
			t.Fatalf("signature %q does not match the body", r.sig)
		}
	}
}

// A 5xx is retried with the same events; a 4xx is not.
func TestRetries(t *testing.T) {
	srv, got := server(t, 503, 500, 200, 400)
	s := New(srv.URL, []byte("k"), Options{Linger: time.Millisecond})
	defer s.Close()
	s.Send(Event{ID: "a"})
	reqs := waitRequests(t, got, 3)
	for _, r := range reqs {
		if len(r.events) != 1 || r.events[0].ID != "a" {
			t.Fatalf("retry sent %+v, want event a again", r.events)
		}
	}
	s.Send(Event{ID: "b"}) // refused with 400: not retried
	waitRequests(t, got, 4)
	s.Send(Event{ID: "c"}) // the next batch goes on
	reqs = waitRequests(t, got, 5)
	if reqs[3].events[0].ID != "b" || reqs[4].events[0].ID != "c" {
		t.Fatalf("after a 400: %+v %+v, want b once, then c", reqs[3].events, reqs[4].events)
	}
}

// A batch is given up once RetryFor has passed: the next one goes on.
func TestGivesUp(t *testing.T) {
	srv, got := server(t, 500, 500)
	s := New(srv.URL, nil, Options{Linger: time.Millisecond, RetryFor: 700 * time.Millisecond})
	defer s.Close()
	s.Send(Event{ID: "x"})
	waitRequests(t, got, 2) // at 0 and 500ms; the next backoff (1s) is past RetryFor
	s.Send(Event{ID: "y"})
	reqs := waitRequests(t, got, 3)
	if reqs[2].events[0].ID != "y" || len(reqs[2].events) != 1 {
		t.Fatalf("after giving up on x: %+v, want y alone", reqs[2].events)
	}
}
