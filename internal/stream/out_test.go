package stream

import (
	"bytes"
	"net"
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
