package stream

import (
	"bytes"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/rawconn"
)

// captureConn is a net.Conn that keeps what is written to it.
type captureConn struct {
	net.Conn
	out bytes.Buffer
}

func (c *captureConn) Write(b []byte) (int, error)      { return c.out.Write(b) }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

func TestChunkedOutFrames(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"short", "data: x\n\n", "9\r\ndata: x\n\n\r\n"},
		{"hex length", string(bytes.Repeat([]byte("a"), 300)), "12c\r\n" + string(bytes.Repeat([]byte("a"), 300)) + "\r\n"},
		{"empty", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &captureConn{}
			o := Chunked(rawconn.Own(c, time.Second, false))
			b := append(make([]byte, o.room(), 512), tc.body...)
			if err := o.write(b); err != nil {
				t.Fatal(err)
			}
			if got := c.out.String(); got != tc.want {
				t.Errorf("wrote %q, want %q", got, tc.want)
			}
			if got := string(AppendChunk(nil, []byte(tc.body))); tc.body != "" && got != tc.want {
				t.Errorf("AppendChunk gave %q, want %q", got, tc.want)
			}
		})
	}
}

// BenchmarkChunkedWrite is one detached SSE delivery's write: a 200-byte
// event in a pooled buffer, framed as a chunk, written.
func BenchmarkChunkedWrite(b *testing.B) {
	o := Chunked(rawconn.Own(&discardConn{}, 10*time.Second, false))
	event := bytes.Repeat([]byte("x"), 200)
	b.ReportAllocs()
	for b.Loop() {
		bp := bufs.Get().(*[]byte)
		buf := append((*bp)[:chunkRoom], event...)
		if err := o.write(buf); err != nil {
			b.Fatal(err)
		}
		putBuf(bp, buf)
	}
}

type discardConn struct{ net.Conn }

func (discardConn) Write(b []byte) (int, error)      { return len(b), nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }

// deadlineWriter records the write deadlines set on it.
type deadlineWriter struct {
	httptest.ResponseRecorder
	deadlines []time.Time
}

func (w *deadlineWriter) SetWriteDeadline(t time.Time) error {
	w.deadlines = append(w.deadlines, t)
	return nil
}

// A stream beneath the idle write timeout sets its write deadline once
// per timeout/2 at most, never a deadline its next write (within gap)
// could pass, and always one that cuts a stuck write within gap+timeout.
func TestResponseBeneathIdleDeadlines(t *testing.T) {
	w := &deadlineWriter{ResponseRecorder: *httptest.NewRecorder()}
	const timeout, gap = time.Hour, time.Minute
	o := ResponseBeneathIdle(w, timeout, gap)
	start := time.Now()
	for range 100 {
		if err := o.write([]byte("data: x\n\n")); err != nil {
			t.Fatal(err)
		}
	}
	if len(w.deadlines) != 1 {
		t.Fatalf("%d deadlines set for 100 writes in a moment, want 1", len(w.deadlines))
	}
	if d := w.deadlines[0].Sub(start); d < gap+timeout/2 || d > gap+timeout+time.Second {
		t.Fatalf("deadline %v ahead, want between gap+timeout/2 and gap+timeout", d)
	}
	// once less than gap+timeout/2 is left, the next write pushes it
	io := o.(*idleResponseOut)
	io.deadline = time.Now().Add(gap + timeout/2 - time.Second)
	if err := o.write([]byte("data: y\n\n")); err != nil {
		t.Fatal(err)
	}
	if len(w.deadlines) != 2 || time.Until(w.deadlines[1]) < gap+timeout-time.Second {
		t.Fatalf("deadlines %v: want a second one gap+timeout ahead", w.deadlines)
	}
	if got := w.Body.String(); got != strings.Repeat("data: x\n\n", 100)+"data: y\n\n" {
		t.Fatalf("body %q", got)
	}
}
