package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/fcgi"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// WaitTimeout is the default bound of the harness's waits for something a
// test expects to happen (a request reaching an upstream, an event, a
// cancellation).
const WaitTimeout = 10 * time.Second

// SSEUpstream is a real server on loopback (HTTP or FastCGI) whose test
// decides, per request, what it writes and when. Each request it gets is
// handed to the test as a Stream by Next; the request stays open until
// the test ends it, the client goes away, or the test ends.
type SSEUpstream struct {
	t        testing.TB
	addr     string
	url      string
	requests atomic.Int64
	streams  chan *Stream
	closing  chan struct{}

	mu     sync.Mutex
	header http.Header
}

// Stream is one request to an SSEUpstream, driven by the test. Its
// methods run in the handler's goroutine, so each returns when the bytes
// have been handed to the connection (or the request is gone).
type Stream struct {
	// Request is the request as the upstream received it. Its body must
	// not be read.
	Request *http.Request
	// Received is when the upstream got the request.
	Received time.Time

	t        testing.TB
	cmds     chan streamCmd
	ended    chan struct{} // closed when the handler has returned
	canceled chan struct{} // closed when the request's context is done
	cancelAt atomic.Pointer[time.Time]
}

type streamCmd struct {
	write  []byte
	status int  // WriteHeader(status) if nonzero
	flush  bool // flush after writing
	end    bool
	done   chan error
}

// NewSSEUpstream starts an HTTP upstream; every response has the header
// Content-Type: text/event-stream unless SetHeader says otherwise.
func NewSSEUpstream(t testing.TB) *SSEUpstream {
	t.Helper()
	u := newUpstream(t)
	srv := httptest.NewUnstartedServer(u)
	srv.Config.ErrorLog = nil
	srv.Start()
	u.url, u.addr = srv.URL, srv.Listener.Addr().String()
	t.Cleanup(func() {
		close(u.closing)
		srv.CloseClientConnections()
		srv.Close()
	})
	return u
}

// NewFastCGIUpstream starts an upstream that serves FastCGI on a TCP
// listener (Go's net/http/fcgi), for `reverse_proxy ... { transport
// fastcgi }` and `php_fastcgi`. It is driven as NewSSEUpstream's is. A
// FastCGI request's context is not cancelled when Caddy aborts it, so
// Stream.WaitCancelled does not apply.
func NewFastCGIUpstream(t testing.TB) *SSEUpstream {
	t.Helper()
	u := newUpstream(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = l.Addr().String()
	u.url = "fastcgi://" + u.addr
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = fcgi.Serve(l, u)
	}()
	t.Cleanup(func() {
		close(u.closing)
		_ = l.Close()
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Errorf("fastcgi upstream did not stop within 5s")
		}
	})
	return u
}

func newUpstream(t testing.TB) *SSEUpstream {
	h := http.Header{}
	h.Set("Content-Type", "text/event-stream")
	return &SSEUpstream{
		t:       t,
		streams: make(chan *Stream, 64),
		closing: make(chan struct{}),
		header:  h,
	}
}

// Addr is host:port of the upstream, for `reverse_proxy {{.Upstream}}`.
func (u *SSEUpstream) Addr() string { return u.addr }

// URL is the upstream's base URL (fastcgi:// for a FastCGI upstream).
func (u *SSEUpstream) URL() string { return u.url }

// Requests is the number of requests the upstream has received.
func (u *SSEUpstream) Requests() int { return int(u.requests.Load()) }

// SetHeader sets a header of every later response (Del with value "").
func (u *SSEUpstream) SetHeader(key, value string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if value == "" {
		u.header.Del(key)
		return
	}
	u.header.Set(key, value)
}

// Next waits (WaitTimeout) for the next request the upstream receives.
func (u *SSEUpstream) Next(t testing.TB) *Stream {
	t.Helper()
	return u.NextFor(t, nil)
}

// NextFor is Next for the request of client r: it fails at once, with
// the client's error, if that request ends before reaching the upstream
// (refused, or a TLS or connection error).
func (u *SSEUpstream) NextFor(t testing.TB, r *SSEReader) *Stream {
	t.Helper()
	var ended <-chan struct{}
	if r != nil {
		ended = r.Done()
	}
	timer := time.NewTimer(WaitTimeout)
	defer timer.Stop()
	select {
	case s := <-u.streams:
		s.t = t
		return s
	case <-ended:
		select {
		case s := <-u.streams:
			s.t = t
			return s
		default:
		}
		status := "no response"
		if resp := r.resp; resp != nil {
			status = resp.Status
		}
		t.Fatalf("upstream %s: the client's request ended (%s, error %v) without reaching the upstream", u.addr, status, r.err)
	case <-timer.C:
		t.Fatalf("upstream %s: no request within %v (%d so far)", u.addr, WaitTimeout, u.Requests())
	}
	return nil
}

// ServeHTTP hands the request to the test and carries out its commands.
func (u *SSEUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.requests.Add(1)
	s := &Stream{
		Request:  r,
		Received: time.Now(),
		t:        u.t,
		cmds:     make(chan streamCmd),
		ended:    make(chan struct{}),
		canceled: make(chan struct{}),
	}
	defer close(s.ended)
	var once sync.Once
	markCancelled := func() {
		once.Do(func() {
			now := time.Now()
			s.cancelAt.Store(&now)
			close(s.canceled)
		})
	}
	// noted while the handler runs; the server cancels every request's
	// context after its handler returns, which does not count
	stop := context.AfterFunc(r.Context(), markCancelled)
	defer stop()
	u.mu.Lock()
	for k, v := range u.header {
		w.Header()[k] = append([]string(nil), v...)
	}
	u.mu.Unlock()
	select {
	case u.streams <- s:
	default:
		u.t.Errorf("upstream %s: more than %d requests not taken by Next", u.addr, cap(u.streams))
		return
	}
	rc := http.NewResponseController(w)
	for {
		select {
		case <-r.Context().Done():
			markCancelled() // stop may win the race with AfterFunc
			return
		case <-u.closing:
			return
		case c := <-s.cmds:
			var err error
			if c.status != 0 {
				w.WriteHeader(c.status)
			}
			if c.write != nil {
				_, err = w.Write(c.write)
			}
			if err == nil && c.flush {
				err = rc.Flush()
			}
			c.done <- err
			if c.end {
				return
			}
		}
	}
}

var errStreamGone = errors.New("the request has ended")

func (s *Stream) do(c streamCmd) error {
	c.done = make(chan error, 1)
	select {
	case s.cmds <- c:
	case <-s.ended:
		return errStreamGone
	case <-time.After(WaitTimeout):
		return fmt.Errorf("upstream handler busy for %v", WaitTimeout)
	}
	select {
	case err := <-c.done:
		return err
	case <-time.After(WaitTimeout):
		return fmt.Errorf("write not done within %v", WaitTimeout)
	}
}

// Send writes data and flushes it; it fails the test if it cannot.
func (s *Stream) Send(data string) {
	s.t.Helper()
	if err := s.TrySend(data); err != nil {
		s.t.Fatalf("upstream: sending %q: %v", data, err)
	}
}

// TrySend writes data and flushes it, and returns the error.
func (s *Stream) TrySend(data string) error {
	return s.do(streamCmd{write: []byte(data), flush: true})
}

// Buffer writes data without flushing.
func (s *Stream) Buffer(data string) {
	s.t.Helper()
	if err := s.do(streamCmd{write: []byte(data)}); err != nil {
		s.t.Fatalf("upstream: writing %q: %v", data, err)
	}
}

// WriteHeader sends the status line and headers, and flushes them, with
// no body byte.
func (s *Stream) WriteHeader(status int) {
	s.t.Helper()
	if err := s.do(streamCmd{status: status, flush: true}); err != nil {
		s.t.Fatalf("upstream: writing header: %v", err)
	}
}

// End ends the response (the handler returns). Ending an ended stream
// does nothing.
func (s *Stream) End() {
	s.t.Helper()
	if err := s.do(streamCmd{end: true}); err != nil && !errors.Is(err, errStreamGone) {
		s.t.Fatalf("upstream: ending response: %v", err)
	}
	s.WaitEnded(s.t)
}

// Ended is closed when the handler has returned.
func (s *Stream) Ended() <-chan struct{} { return s.ended }

// WaitEnded waits (WaitTimeout) until the handler has returned.
func (s *Stream) WaitEnded(t testing.TB) {
	t.Helper()
	select {
	case <-s.ended:
	case <-time.After(WaitTimeout):
		t.Fatalf("upstream: request not ended within %v", WaitTimeout)
	}
}

// Cancelled is closed when the request's context is done: the client
// (Caddy) went away.
func (s *Stream) Cancelled() <-chan struct{} { return s.canceled }

// WaitCancelled waits up to within for the request's context to be done
// and returns when that happened; it fails the test if it was not.
func (s *Stream) WaitCancelled(t testing.TB, within time.Duration) time.Time {
	t.Helper()
	select {
	case <-s.canceled:
		return *s.cancelAt.Load()
	case <-time.After(within):
		t.Fatalf("upstream: request not cancelled within %v", within)
		return time.Time{}
	}
}
