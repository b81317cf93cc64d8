package hub

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"
)

// hijackChunked takes over the connection of an HTTP/1.1 response whose
// header (status 200, chunked transfer encoding, no content coding) has
// been set with WriteHeader: it flushes the header through every
// wrapper of w, then hijacks. It returns nil, having changed nothing the
// stream in place needs, when the response is not one whose body can be
// continued as raw chunks.
func hijackChunked(w http.ResponseWriter, rc *http.ResponseController) net.Conn {
	hdr := w.Header()
	if hdr.Get("Content-Encoding") != "" || hdr.Get("Transfer-Encoding") != "" || hdr.Get("Content-Length") != "" {
		return nil
	}
	// the header must be on the wire, through any wrapper that holds it
	// back, before the connection changes hands
	if err := rc.Flush(); err != nil {
		return nil
	}
	if hdr.Get("Content-Encoding") != "" {
		return nil // a wrapper decided to encode the body after all
	}
	conn, brw, err := rc.Hijack()
	if err != nil {
		return nil
	}
	// net/http's buffers are not used from here on: an idle stream keeps
	// no read or write buffer
	_ = brw
	return conn
}

// chunkRoom is the space left at the start of a buffer for a chunk
// header: up to 8 hex digits and CRLF.
const chunkRoom = 10

// chunkedOut writes a stream as the HTTP/1.1 chunks of a response body
// on a connection taken over from net/http.
type chunkedOut struct {
	conn     net.Conn
	timeout  time.Duration
	deadline time.Time // the write deadline set last
}

func (*chunkedOut) room() int { return chunkRoom }

// write frames b[chunkRoom:] as one chunk and sends it with one write.
func (o *chunkedOut) write(b []byte) error {
	n := len(b) - chunkRoom
	if n <= 0 {
		return nil
	}
	var hex [8]byte
	h := strconv.AppendUint(hex[:0], uint64(n), 16)
	start := chunkRoom - len(h) - 2
	copy(b[start:], h)
	b[chunkRoom-2], b[chunkRoom-1] = '\r', '\n'
	b = append(b, '\r', '\n')
	if o.timeout > 0 {
		// re-arming a deadline costs a timer update: do it at most about
		// once a second per stream, not on every write
		now := time.Now()
		if d := now.Add(o.timeout); d.Sub(o.deadline) > time.Second || o.deadline.Before(now) {
			_ = o.conn.SetWriteDeadline(d)
			o.deadline = d
		}
	}
	_, err := o.conn.Write(b[start:])
	return err
}

// errClientGone ends a detached stream whose client closed the
// connection.
var errClientGone = errors.New("client closed the connection")

// serve runs a detached stream to its end and closes the connection.
// One goroutine reads the connection only to notice the client going
// away (an SSE client sends nothing after its request); it ends the
// stream through the subscriber, so that the writer waits on as few
// channels as possible (each costs an idle stream memory).
func (o *chunkedOut) serve(ss *Session, opts SSEOptions) error {
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		p := make([]byte, 64)
		for {
			if _, err := o.conn.Read(p); err != nil {
				ss.Sub.fail(errClientGone)
				return
			}
		}
	}()
	err := serveSSE(context.Background(), ss, opts, o)
	if errors.Is(err, errClientGone) {
		err = nil
	} else if err == nil || errors.Is(err, ErrSlowConsumer) || errors.Is(err, ErrHubClosed) {
		// the server ends the stream: close the body properly
		_ = o.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = o.conn.Write([]byte("0\r\n\r\n"))
	}
	_ = o.conn.Close()
	<-readDone
	return err
}
