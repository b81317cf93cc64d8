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
	// the writer and the stream share one allocation: a delivery from
	// the fan-out then touches one object besides the subscriber
	w    ConnWriter
	st   sseStream
	conn net.Conn
}

func newChunkedOut(conn net.Conn, timeout time.Duration) *chunkedOut {
	o := &chunkedOut{conn: conn}
	o.w.Init(conn, timeout)
	return o
}

func (*chunkedOut) room() int             { return chunkRoom }
func (o *chunkedOut) writer() *ConnWriter { return &o.w }

// write frames b[chunkRoom:] as one chunk and sends it with one write
// (after what a sink left unsent).
func (o *chunkedOut) write(b []byte) error {
	n := len(b) - chunkRoom
	if n <= 0 {
		return o.w.Write(nil)
	}
	var hex [8]byte
	h := strconv.AppendUint(hex[:0], uint64(n), 16)
	start := chunkRoom - len(h) - 2
	copy(b[start:], h)
	b[chunkRoom-2], b[chunkRoom-1] = '\r', '\n'
	b = append(b, '\r', '\n')
	return o.w.Write(b[start:])
}

// errClientGone ends a detached stream whose client closed the
// connection.
var errClientGone = errors.New("client closed the connection")

// serve runs a detached stream to its end and closes the connection.
//
// The calling goroutine only reads the connection, to notice the client
// going away (an SSE client sends nothing after its request). Writing
// needs no goroutine while the stream is idle: the hub writes messages
// to the socket itself when it can (see Sink), and a goroutine is started
// for the rest (see Subscriber.ServeWrites) and ends once it is written.
func (o *chunkedOut) serve(ss *Session, opts SSEOptions) error {
	st := &o.st
	st.init(ss, opts, o)
	wait := ss.Sub.ServeWrites(st.sink(), func() error { return st.start(context.Background()) }, st.step, func(err error) {
		st.stop()
		if err == nil || errors.Is(err, ErrSlowConsumer) || errors.Is(err, ErrHubClosed) {
			// the server ends the stream: close the body properly
			_ = o.conn.SetWriteDeadline(time.Now().Add(time.Second))
			_ = o.w.Write([]byte("0\r\n\r\n")) // after what a sink left unsent
		}
		_ = o.w.Close() // ends the reader below
	})
	p := make([]byte, 64)
	for {
		if _, err := o.conn.Read(p); err != nil {
			break
		}
	}
	ss.Sub.fail(errClientGone) // wakes the writer, which ends the stream
	if err := wait(); !errors.Is(err, errClientGone) {
		return err
	}
	return nil
}
