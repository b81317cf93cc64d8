package sse

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/hubtest"
	"github.com/caddy-realtime/realtime/internal/ssetest"
)

const wait = 5 * time.Second // bound on every wait for an event

// recv waits for a value from c, failing the test after wait.
func recv[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(wait):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestWriterStream(t *testing.T) {
	tests := []struct {
		name         string
		contentType  string
		cacheControl string
		wantCache    string
		implicit     bool // no WriteHeader: the first Write makes the header
	}{
		{name: "plain", contentType: "text/event-stream", wantCache: "no-cache"},
		{name: "parameters and case", contentType: " Text/Event-Stream ; charset=utf-8", wantCache: "no-cache"},
		{name: "cache-control kept", contentType: "text/event-stream", cacheControl: "private, no-store", wantCache: "private, no-store"},
		{name: "implicit 200", contentType: "text/event-stream", wantCache: "no-cache", implicit: true},
	}
	chunks := []string{"data: par", "tial\n", "\n", "id: 2\r\ndata: second\r\n\r\n"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hubtest.CheckGoroutines(t) // first: its check runs last
			next := make(chan string)
			var streams atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				w := NewWriter(rw, Options{Heartbeat: time.Hour, OnStream: func() { streams.Add(1) }})
				defer w.Close()
				w.Header().Set("Content-Type", tc.contentType)
				w.Header().Set("Content-Length", "1000")
				if tc.cacheControl != "" {
					w.Header().Set("Cache-Control", tc.cacheControl)
				}
				if !tc.implicit {
					w.WriteHeader(http.StatusOK)
				}
				for chunk := range next {
					if _, err := io.WriteString(w, chunk); err != nil {
						t.Error(err)
						return
					}
				}
			}))
			defer srv.Close()
			defer srv.Client().CloseIdleConnections()

			type result struct {
				resp *http.Response
				err  error
			}
			got := make(chan result, 1)
			go func() {
				resp, err := srv.Client().Get(srv.URL)
				got <- result{resp, err}
			}()
			if tc.implicit {
				next <- chunks[0] // the header goes with the first write
			}
			// With an explicit WriteHeader, the header reaches the client
			// while the handler has not written a byte yet.
			res := recv(t, got, "response header")
			if res.err != nil {
				t.Fatal(res.err)
			}
			resp := res.resp
			defer resp.Body.Close()
			h := resp.Header
			if h.Get("Cache-Control") != tc.wantCache || h.Get("X-Accel-Buffering") != "no" ||
				h.Get("Content-Length") != "" || resp.ContentLength != -1 {
				t.Fatalf("header %v", h)
			}
			if streams.Load() != 1 {
				t.Fatalf("OnStream called %d times", streams.Load())
			}
			// Each write reaches the client on its own, before the next
			// is even made.
			body := make(chan []byte)
			go func() {
				defer close(body)
				for _, c := range chunks {
					buf := make([]byte, len(c))
					if _, err := io.ReadFull(resp.Body, buf); err != nil {
						return
					}
					body <- buf
				}
			}()
			for i, c := range chunks {
				if i > 0 || !tc.implicit {
					next <- c
				}
				if b := recv(t, body, "chunk "+c); string(b) != c {
					t.Fatalf("read %q, want %q", b, c)
				}
			}
			close(next)
			if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
				t.Fatalf("after the stream: %q, %v", rest, err)
			}
			resp.Body.Close()
			srv.Client().CloseIdleConnections()
			srv.Close()
		})
	}
}

func TestWriterHeartbeat(t *testing.T) {
	hubtest.CheckGoroutines(t) // first: its check runs last
	const interval = 20 * time.Millisecond
	beats := make(chan bool, 1000)
	step := make(chan string)
	done := make(chan struct{}) // closed by the handler after each write
	writers := make(chan *Writer, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/event-stream")
		w := NewWriter(rw, Options{Heartbeat: interval})
		w.onBeat = func(injected bool) { beats <- injected }
		writers <- w
		defer w.Close()
		w.WriteHeader(http.StatusOK)
		for s := range step {
			if _, err := io.WriteString(w, s); err != nil {
				t.Error(err)
			}
			done <- struct{}{}
		}
	}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	w := recv(t, writers, "writer")

	// write sends s upstream and forgets the beats that ran before it.
	write := func(s string) {
		step <- s
		recv(t, done, "write")
		for len(beats) > 0 {
			<-beats
		}
	}
	// An idle stream at its start gets heartbeats.
	if !recv(t, beats, "heartbeat at the start") {
		t.Fatal("no heartbeat at the start of the stream")
	}
	// Stalled mid-line: beats come, but inject nothing.
	write("data: par")
	for range 2 {
		if recv(t, beats, "beat mid-line") {
			t.Fatal("heartbeat injected mid-line")
		}
	}
	// The line ends: the next beat injects.
	write("tial\n\n")
	if !recv(t, beats, "heartbeat after a line") {
		t.Fatal("no heartbeat after the line ended")
	}
	// Stalled after a CR, which may be half a CRLF: nothing is injected.
	write("data: x\r")
	if recv(t, beats, "beat after CR") {
		t.Fatal("heartbeat injected after a lone CR")
	}
	write("\n\r\n")
	close(step)

	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	// Heartbeats only ever follow an LF (or start the stream), and take
	// nothing from the upstream's bytes.
	const upstream = "data: partial\n\ndata: x\r\n\r\n"
	rest := body
	for i := bytes.Index(rest, heartbeat); i >= 0; i = bytes.Index(rest, heartbeat) {
		if at := len(body) - len(rest) + i; at > 0 && body[at-1] != '\n' {
			t.Fatalf("heartbeat at %d not at a line boundary: %q", at, body)
		}
		rest = rest[i+len(heartbeat):]
	}
	if plain := bytes.ReplaceAll(body, heartbeat, nil); string(plain) != upstream {
		t.Fatalf("client got %q", body)
	}
	p := ssetest.NewParser(bytes.NewReader(body))
	for _, want := range []string{"partial", "x"} {
		if ev, err := p.Next(); err != nil || ev.Data != want || ev.Event != "message" {
			t.Fatalf("client parsed %+v, %v; want the event %q", ev, err, want)
		}
	}
	if ev, err := p.Next(); err == nil {
		t.Fatalf("client parsed an extra event %+v", ev)
	}
	// Close stopped the timer for good: a beat in flight at Close sees
	// it closed and does not re-arm.
	w.mu.Lock()
	stopped := !w.timer.Stop()
	w.mu.Unlock()
	if !stopped {
		t.Fatal("heartbeat timer still armed after Close")
	}
	resp.Body.Close()
	srv.Client().CloseIdleConnections()
	srv.Close()
}

// failWriter is a ResponseWriter that cannot flush and whose body writes
// fail once the client is gone.
type failWriter struct {
	h    http.Header
	gone atomic.Bool
}

func (f *failWriter) Header() http.Header { return f.h }
func (f *failWriter) WriteHeader(int)     {}
func (f *failWriter) Write(p []byte) (int, error) {
	if f.gone.Load() {
		return 0, errors.New("client gone")
	}
	return len(p), nil
}

func TestWriterHeartbeatErrorStops(t *testing.T) {
	fw := &failWriter{h: http.Header{"Content-Type": {"text/event-stream"}}}
	w := NewWriter(fw, Options{Heartbeat: time.Millisecond})
	beats := make(chan bool, 100)
	w.onBeat = func(injected bool) { beats <- injected }
	w.WriteHeader(http.StatusOK) // flushing is not supported: not an error
	if _, err := w.Write([]byte("data: x\n\n")); err != nil {
		t.Fatal(err)
	}
	fw.gone.Store(true)
	for recv(t, beats, "failing heartbeat") {
		// heartbeats that ran before the client went away
	}
	// beat calls onBeat with mu held and returns without re-arming.
	w.mu.Lock()
	armed := w.timer.Stop()
	w.mu.Unlock()
	if armed {
		t.Fatal("timer re-armed after a failed heartbeat")
	}
	w.Close()
}

func TestWriterPassthrough(t *testing.T) {
	tests := []struct {
		name, contentType, encoding string
		status                      int
		wantStream, wantTimer       bool
	}{
		{name: "json", contentType: "application/json", status: 200},
		{name: "no content type", status: 200},
		{name: "event-stream lookalike", contentType: "text/event-streams", status: 200},
		{name: "event-stream 204", contentType: "text/event-stream", status: 204},
		{name: "event-stream 304", contentType: "text/event-stream", status: 304},
		{name: "event-stream 500", contentType: "text/event-stream", status: 500, wantStream: true, wantTimer: true},
		{name: "compressed event-stream", contentType: "text/event-stream", encoding: "gzip", status: 200, wantStream: true},
		{name: "identity event-stream", contentType: "text/event-stream", encoding: "identity", status: 200, wantStream: true, wantTimer: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			streams := 0
			w := NewWriter(rec, Options{Heartbeat: time.Hour, OnStream: func() { streams++ }})
			defer w.Close()
			if w.Unwrap() != rec {
				t.Fatal("Unwrap does not return the underlying writer")
			}
			if tc.contentType != "" {
				w.Header().Set("Content-Type", tc.contentType)
			}
			if tc.encoding != "" {
				w.Header().Set("Content-Encoding", tc.encoding)
			}
			w.Header().Set("Content-Length", "5")
			w.WriteHeader(tc.status)
			if w.stream != tc.wantStream || (streams == 1) != tc.wantStream || (w.timer != nil) != tc.wantTimer {
				t.Fatalf("stream %v, OnStream calls %d, timer %v", w.stream, streams, w.timer != nil)
			}
			if tc.wantStream {
				if !rec.Flushed || rec.Header().Get("Content-Length") != "" || rec.Header().Get("X-Accel-Buffering") != "no" {
					t.Fatalf("stream header not prepared: %v, flushed %v", rec.Header(), rec.Flushed)
				}
				return
			}
			if rec.Flushed || rec.Header().Get("Content-Length") != "5" || rec.Header().Get("X-Accel-Buffering") != "" ||
				rec.Header().Get("Cache-Control") != "" || rec.Code != tc.status {
				t.Fatalf("non-stream response touched: %v, flushed %v", rec.Header(), rec.Flushed)
			}
			if tc.status == 200 {
				if n, err := w.Write([]byte("hello")); n != 5 || err != nil {
					t.Fatal(n, err)
				}
				if rec.Flushed {
					t.Fatal("non-stream write flushed")
				}
			}
			w.Flush()
			if !rec.Flushed {
				t.Fatal("Flush not passed through")
			}
		})
	}
}

func TestWriterFlushWritesHeader(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Type", "text/event-stream")
	w := NewWriter(rec, Options{})
	defer w.Close()
	if err := w.FlushError(); err != nil || !w.stream || !rec.Flushed {
		t.Fatalf("FlushError before any write: %v, stream %v, flushed %v", err, w.stream, rec.Flushed)
	}
	if err := http.NewResponseController(w).Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestWriterInformational(t *testing.T) {
	var got1xx []int
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w := NewWriter(rw, Options{})
		defer w.Close()
		w.Header().Set("Link", "</app.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "data: x\n\n")
	}))
	defer srv.Close()
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
		got1xx = append(got1xx, code)
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "GET", srv.URL, nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if len(got1xx) != 1 || got1xx[0] != 103 || resp.StatusCode != 200 ||
		resp.Header.Get("X-Accel-Buffering") != "no" || string(body) != "data: x\n\n" {
		t.Fatalf("1xx %v, status %d, header %v, body %q", got1xx, resp.StatusCode, resp.Header, body)
	}
}

// TestWriterHijack checks that http.ResponseController reaches the
// server's writer through Unwrap, as reverse_proxy's upgrades need.
func TestWriterHijack(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w := NewWriter(rw, Options{Heartbeat: time.Millisecond})
		defer w.Close()
		rc := http.NewResponseController(w)
		if err := rc.SetWriteDeadline(time.Now().Add(wait)); err != nil {
			t.Error(err)
		}
		conn, brw, err := rc.Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		_ = brw.Flush()
	}))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if body, _ := io.ReadAll(resp.Body); string(body) != "hijacked" {
		t.Fatalf("body %q", body)
	}
}

// TestWriterBOM covers a heartbeat sent before the upstream's first byte:
// the upstream's BOM must then go, as a client drops one only at the very
// start, however the BOM is split across writes.
func TestWriterBOM(t *testing.T) {
	tests := []struct {
		name   string
		writes []string // "HB" asks for a heartbeat
		want   string
	}{
		{name: "BOM after heartbeat", writes: []string{"HB", "\xEF\xBB\xBFdata: x\n\n"}, want: ": heartbeat\ndata: x\n\n"},
		{name: "split BOM", writes: []string{"HB", "\xEF", "\xBB", "HB", "\xBFdata: x\n\n"}, want: ": heartbeat\n: heartbeat\ndata: x\n\n"},
		{name: "not a BOM", writes: []string{"HB", "\xEF\xBB", "x\n\n"}, want: ": heartbeat\n\xEF\xBBx\n\n"},
		{name: "ends inside a BOM", writes: []string{"HB", "\xEF\xBB"}, want: ": heartbeat\n\xEF\xBB"},
		{name: "no heartbeat first: BOM kept", writes: []string{"\xEF\xBB\xBFdata: x\n\n", "HB"}, want: "\xEF\xBB\xBFdata: x\n\n: heartbeat\n"},
		{name: "second BOM kept", writes: []string{"HB", "\xEF\xBB\xBF\xEF\xBB\xBF"}, want: ": heartbeat\n\xEF\xBB\xBF"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			rec.Header().Set("Content-Type", "text/event-stream")
			w := NewWriter(rec, Options{})
			w.WriteHeader(http.StatusOK)
			var upstream string
			for _, s := range tc.writes {
				if s == "HB" {
					w.mu.Lock()
					_, err := w.heartbeat()
					w.mu.Unlock()
					if err != nil {
						t.Fatal(err)
					}
					continue
				}
				upstream += s
				if n, err := io.WriteString(w, s); n != len(s) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			w.Close()
			if got := rec.Body.String(); got != tc.want {
				t.Fatalf("client got %q, want %q", got, tc.want)
			}
			if a, b := ssetest.Reference([]byte(upstream)), ssetest.Reference([]byte(tc.want)); !ssetest.Equal(a, b, false) {
				t.Fatalf("events differ: %v vs %v", a, b)
			}
		})
	}
}

func BenchmarkWriterPassthrough(b *testing.B) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Type", "application/json")
	p := []byte(`{"ok":true}`)
	b.ReportAllocs()
	for b.Loop() {
		rec.Body.Reset()
		w := NewWriter(rec, Options{})
		_, _ = w.Write(p)
		w.Close()
	}
}

func BenchmarkWriterStreamWrite(b *testing.B) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Type", "text/event-stream")
	w := NewWriter(rec, Options{Heartbeat: time.Hour})
	defer w.Close()
	p := []byte("data: {\"ok\":true}\n\n")
	b.ReportAllocs()
	for b.Loop() {
		rec.Body.Reset()
		_, _ = w.Write(p)
	}
}

// A Gate that refuses an event stream drops the upstream's header and
// body: the client gets Refuse's answer only, and the writes that follow
// fail, so that the proxy stops. Answers that are no event stream never
// ask the Gate.
func TestWriterGate(t *testing.T) {
	errNo := errors.New("no ticket")
	for _, tc := range []struct {
		name        string
		contentType string
		gate        error
		wantStatus  int
		wantBody    string
		wantGated   bool
	}{
		{"stream refused", "text/event-stream", errNo, http.StatusUnauthorized, "refused: no ticket", true},
		{"stream admitted", "text/event-stream", nil, http.StatusOK, "data: secret\n\n", true},
		{"not a stream", "text/html", errNo, http.StatusOK, "data: secret\n\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gated := false
			rec := httptest.NewRecorder()
			w := NewWriter(rec, Options{
				Gate: func() error { gated = true; return tc.gate },
				Refuse: func(w http.ResponseWriter, err error) {
					w.WriteHeader(http.StatusUnauthorized)
					_, _ = io.WriteString(w, "refused: "+err.Error())
				},
			})
			w.Header().Set("Content-Type", tc.contentType)
			w.Header().Set("Set-Cookie", "upstream=1")
			w.WriteHeader(http.StatusOK)
			_, werr := w.Write([]byte("data: secret\n\n"))
			ferr := w.FlushError()
			w.Close()
			if gated != tc.wantGated || rec.Code != tc.wantStatus || rec.Body.String() != tc.wantBody {
				t.Fatalf("gated %v, status %d, body %q; want %v, %d, %q", gated, rec.Code, rec.Body.String(), tc.wantGated, tc.wantStatus, tc.wantBody)
			}
			refused := tc.gate != nil && tc.wantGated
			if w.Refused() != refused || errors.Is(werr, ErrRefused) != refused || errors.Is(ferr, ErrRefused) != refused {
				t.Fatalf("Refused %v, Write error %v, Flush error %v; want refused %v", w.Refused(), werr, ferr, refused)
			}
			if refused && rec.Header().Get("Set-Cookie") != "" {
				t.Fatal("the upstream's header reached the refused client")
			}
		})
	}
}
