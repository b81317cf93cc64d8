package stream

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/caddy-realtime/realtime/internal/rawconn"
)

// Out is where a stream's bytes go. Each write sends one buffer at once;
// the buffers start with room() free bytes for the Out's own framing.
//
// A response written through net/http (Response) works over every
// protocol: HTTP/1.1, HTTP/2, HTTP/3, TLS or not. A connection taken over
// from net/http (Chunked, Frames) costs far less per idle stream, and on
// plain TCP lets the fan-out write to the socket itself; TLS, HTTP/2 and
// HTTP/3 streams cannot be taken over and stay with Response.
type Out interface {
	room() int
	// write sends b[room():] to the client at once, after anything the
	// fan-out left unsent.
	write(b []byte) error
	// conn is the connection the fan-out may write to, or nil.
	conn() *rawconn.Conn
}

// Response writes to w and flushes after every write.
func Response(w http.ResponseWriter) Out {
	return &responseOut{w: w, rc: http.NewResponseController(w)}
}

type responseOut struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (*responseOut) room() int              { return 0 }
func (*responseOut) conn() *rawconn.Conn    { return nil }
func (o *responseOut) write(b []byte) error { return writeFlush(o.w, o.rc, b) }

func writeFlush(w http.ResponseWriter, rc *http.ResponseController, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// ResponseBeneathIdle is Response for a writer that lies beneath the
// server's idle write timeout (Caddy's IdleTimeoutWriter, which sets a
// write deadline before every write and, over HTTP/2, clears it after:
// two round trips to the connection's serve goroutine per message). It
// bounds writes itself, with one deadline update per timeout/2 at most:
// each write makes sure the deadline lies at least gap+timeout/2 ahead,
// pushing it to gap+timeout, where gap is the longest the stream stays
// silent (its heartbeat). A stream that keeps writing never reaches its
// deadline; a write the client does not take is cut within gap+timeout.
func ResponseBeneathIdle(w http.ResponseWriter, timeout, gap time.Duration) Out {
	return &idleResponseOut{responseOut: responseOut{w: w, rc: http.NewResponseController(w)}, timeout: timeout, gap: gap}
}

type idleResponseOut struct {
	responseOut
	timeout, gap time.Duration
	deadline     time.Time
}

func (o *idleResponseOut) write(b []byte) error {
	if now := time.Now(); o.deadline.Sub(now) < o.gap+o.timeout/2 {
		o.deadline = now.Add(o.gap + o.timeout)
		if err := o.rc.SetWriteDeadline(o.deadline); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
	}
	return writeFlush(o.w, o.rc, b)
}

// Frames writes each buffer to c as it is (WebSocket frames).
func Frames(c *rawconn.Conn) Out { return framesOut{c} }

type framesOut struct{ c *rawconn.Conn }

func (framesOut) room() int             { return 0 }
func (o framesOut) conn() *rawconn.Conn { return o.c }
func (o framesOut) write(b []byte) error {
	_, err := o.c.Write(b)
	return err
}

// chunkRoom is the space left at the start of a buffer for a chunk
// header: up to 8 hex digits and CRLF.
const chunkRoom = 10

// Chunked writes each buffer to c as one chunk of an HTTP/1.1 response
// body whose header net/http has sent.
func Chunked(c *rawconn.Conn) Out { return chunkedOut{c} }

type chunkedOut struct{ c *rawconn.Conn }

func (chunkedOut) room() int             { return chunkRoom }
func (o chunkedOut) conn() *rawconn.Conn { return o.c }

// write frames b[chunkRoom:] as one chunk and sends it with one write.
func (o chunkedOut) write(b []byte) error {
	n := len(b) - chunkRoom
	if n <= 0 {
		_, err := o.c.Write(nil)
		return err
	}
	var hex [8]byte
	h := strconv.AppendUint(hex[:0], uint64(n), 16)
	start := chunkRoom - len(h) - 2
	copy(b[start:], h)
	b[chunkRoom-2], b[chunkRoom-1] = '\r', '\n'
	b = append(b, '\r', '\n')
	_, err := o.c.Write(b[start:])
	return err
}

// AppendChunk appends body as one HTTP/1.1 chunk, for a shared form that
// the fan-out writes to chunked streams.
func AppendChunk(dst, body []byte) []byte {
	dst = strconv.AppendUint(dst, uint64(len(body)), 16)
	dst = append(dst, '\r', '\n')
	dst = append(dst, body...)
	return append(dst, '\r', '\n')
}

// LastChunk ends a chunked response body.
const LastChunk = "0\r\n\r\n"
