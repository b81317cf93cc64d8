// Package webhook sends lifecycle events to an app: batched (within a
// second, at most 100 per request), signed with an HMAC of the body, and
// retried with backoff for a minute after a 5xx, a timeout or a network
// error. Delivery is at least once: an app drops a repeat by the event's
// id.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Event is one lifecycle event.
type Event struct {
	ID      string    `json:"id"`
	Type    string    `json:"type"`
	Channel string    `json:"channel"`
	Sub     string    `json:"sub"`
	Time    time.Time `json:"time"`
}

// NewID returns a fresh event id.
func NewID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// SignatureHeader carries "sha256=<hex HMAC-SHA256 of the body>".
const SignatureHeader = "X-Realtime-Signature"

// Sign returns the value of SignatureHeader for body.
func Sign(key, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Options configures a Sender. Zero values take the defaults.
type Options struct {
	// Batch is the most events in one request (default 100); Linger is
	// how long the first event of a batch waits for others (default 1s).
	Batch  int
	Linger time.Duration
	// Timeout bounds one request (default 5s); RetryFor is how long a
	// batch is retried after a 5xx or a timeout (default 1m), with
	// backoff from 500ms doubling up to 10s.
	Timeout  time.Duration
	RetryFor time.Duration
	// Queue bounds the events waiting to be sent (default 10,000);
	// past it, new events are dropped and logged.
	Queue  int
	Client *http.Client
	Logger *zap.Logger
	// OnResult, when set, is told what became of n events: "delivered",
	// "refused", "failed" or "dropped" (for metrics).
	OnResult func(result string, n int)
	// Hold, when set, is called before each attempt at a batch, and
	// Release once the batch is done with (delivered, refused, or given
	// up on): an outbox that keeps the events until then (see package
	// presence) hands those of a sender that went away to another.
	Hold, Release func([]Event)
}

// Sender posts the events of one URL, one batch at a time, in order.
type Sender struct {
	url  string
	key  []byte
	opts Options

	queue    chan Event
	done     chan struct{}
	wg       sync.WaitGroup
	dropMu   sync.Mutex
	dropping bool
}

// New starts a sender of events to url, signed with key. Close stops it.
func New(url string, key []byte, opts Options) *Sender {
	if opts.Batch <= 0 {
		opts.Batch = 100
	}
	if opts.Linger <= 0 {
		opts.Linger = time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.RetryFor <= 0 {
		opts.RetryFor = time.Minute
	}
	if opts.Queue <= 0 {
		opts.Queue = 10000
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: opts.Timeout}
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.OnResult == nil {
		opts.OnResult = func(string, int) {}
	}
	if opts.Hold == nil {
		opts.Hold = func([]Event) {}
	}
	if opts.Release == nil {
		opts.Release = func([]Event) {}
	}
	s := &Sender{url: url, key: key, opts: opts, queue: make(chan Event, opts.Queue), done: make(chan struct{})}
	s.wg.Add(1)
	go s.run()
	return s
}

// Send queues e without waiting.
func (s *Sender) Send(e Event) {
	select {
	case s.queue <- e:
		s.setDropping(false)
	default:
		s.opts.OnResult("dropped", 1)
		if !s.setDropping(true) {
			s.opts.Logger.Warn("webhook queue full: dropping events until the app catches up", zap.String("url", s.url))
		}
	}
}

// setDropping sets the dropping state and returns the previous one.
func (s *Sender) setDropping(v bool) bool {
	s.dropMu.Lock()
	defer s.dropMu.Unlock()
	was := s.dropping
	s.dropping = v
	return was
}

// Close stops the sender; events not sent yet are dropped.
func (s *Sender) Close() {
	close(s.done)
	s.wg.Wait()
}

func (s *Sender) run() {
	defer s.wg.Done()
	for {
		var batch []Event
		select {
		case e := <-s.queue:
			batch = append(batch, e)
		case <-s.done:
			return
		}
		linger := time.NewTimer(s.opts.Linger)
	fill:
		for len(batch) < s.opts.Batch {
			select {
			case e := <-s.queue:
				batch = append(batch, e)
			case <-linger.C:
				break fill
			case <-s.done:
				linger.Stop()
				return
			}
		}
		linger.Stop()
		s.deliver(batch)
	}
}

// deliver posts batch until the app takes it (2xx), refuses it for good
// (another 4xx... any status below 500 that is not 2xx), or RetryFor has
// passed.
func (s *Sender) deliver(batch []Event) {
	body, _ := json.Marshal(struct {
		Events []Event `json:"events"`
	}{batch})
	sig := Sign(s.key, body)
	give := time.Now().Add(s.opts.RetryFor)
	backoff := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		s.opts.Hold(batch)
		status, err := s.post(body, sig)
		switch {
		case err == nil && status/100 == 2:
			s.opts.Release(batch)
			s.opts.OnResult("delivered", len(batch))
			return
		case err == nil && status < 500:
			s.opts.Release(batch)
			s.opts.OnResult("refused", len(batch))
			s.opts.Logger.Warn("webhook refused by the app; not retried",
				zap.String("url", s.url), zap.Int("status", status), zap.Int("events", len(batch)))
			return
		}
		if time.Now().Add(backoff).After(give) {
			s.opts.Release(batch)
			s.opts.OnResult("failed", len(batch))
			s.opts.Logger.Error("webhook not delivered; giving up",
				zap.String("url", s.url), zap.Int("attempts", attempt), zap.Int("events", len(batch)),
				zap.Int("status", status), zap.Error(err))
			return
		}
		select {
		case <-time.After(backoff):
		case <-s.done:
			return
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (s *Sender) post(body []byte, sig string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(SignatureHeader, sig)
	resp, err := s.opts.Client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("posting to %s: %w", s.url, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}
