package sse

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/caddy-realtime/realtime/internal/hub"
	"github.com/caddy-realtime/realtime/internal/rawconn"
	"github.com/caddy-realtime/realtime/internal/stream"
)

// EventEncoded carries, on plain SSE, a message whose payload SSE cannot
// carry byte for byte (a CR, or bytes that are not UTF-8): its data is
// the JSON form of the message instead, which says its real event name
// and, for non-UTF-8 bytes, carries them in base64.
const EventEncoded = "realtime.encoded"

// The wire forms of a hub message, computed once per message and shared
// by every stream.
var (
	// plain is the message as an SSE event, or as EventEncoded when
	// plain SSE cannot carry its payload.
	plain = hub.NewEncoding(func(e *hub.Envelope) []byte {
		m := e.Msg
		if Representable(m.Data) {
			return AppendEvent(nil, m.ID, m.Event, m.Data)
		}
		return AppendEvent(nil, m.ID, EventEncoded, e.JSON())
	})
	// asJSON is the message as an SSE event whose data is its JSON form
	// (`?format=json`).
	asJSON = hub.NewEncoding(func(e *hub.Envelope) []byte {
		return AppendEvent(nil, e.Msg.ID, e.Msg.Event, e.JSON())
	})
	// plainChunk and asJSONChunk are those events framed as one HTTP/1.1
	// chunk, for streams that write their own chunked body.
	plainChunk  = hub.NewEncoding(func(e *hub.Envelope) []byte { return stream.AppendChunk(nil, e.Encoded(plain)) })
	asJSONChunk = hub.NewEncoding(func(e *hub.Envelope) []byte { return stream.AppendChunk(nil, e.Encoded(asJSON)) })
)

// StreamOptions configures one hub SSE stream.
type StreamOptions struct {
	// Heartbeat is the interval of comment lines on an idle stream; zero
	// or less: none.
	Heartbeat time.Duration
	// Retry is sent as the `retry:` field once the subscription is live.
	Retry time.Duration
	// JSON sends each message's data as its JSON form (`?format=json`).
	JSON bool
	// Shutdown, when done, ends the stream with a `retry:` hint of a
	// random delay up to ShutdownJitter, so that the clients of a
	// reloading or stopping server come back spread out, not at once.
	Shutdown       context.Context
	ShutdownJitter time.Duration
	// Detach, when set, lets an HTTP/1.1 stream leave its request: once
	// the response header is sent, ServeStream takes the connection over
	// from net/http, calls Detach with the function that serves the rest
	// of the stream, and returns ErrDetached. The caller runs that
	// function on a goroutine of its own (and cleans up after it) and
	// returns from its handler, which frees the request goroutine's deep
	// stack, net/http's buffers and the server's per-request state: an
	// idle stream then costs one small goroutine (that notices the
	// client closing) and a few small objects. A detached stream does
	// not use ctx: it ends when the client closes the connection, on
	// Shutdown, or when the hub drops it. Where the connection cannot be
	// taken over (HTTP/2, HTTP/3, an encoded response), the stream is
	// served in place.
	Detach func(serve func() error)
	// WriteTimeout bounds each write of a detached stream, as the
	// server's write idle timeout bounds the writes of one in place;
	// zero: no bound.
	WriteTimeout time.Duration
	// DirectWrites lets the hub's fan-out write to a detached stream's
	// socket itself while the stream is idle (see rawconn).
	DirectWrites bool
	// BeneathIdle, when set, is the writer beneath the server's idle
	// write timeout, which a stream served in place (HTTP/2, HTTP/3)
	// writes to instead, bounding its writes by IdleTimeout itself at a
	// fraction of the cost (see stream.ResponseBeneathIdle). It needs a
	// Heartbeat.
	BeneathIdle http.ResponseWriter
	IdleTimeout time.Duration
}

// ErrDetached is what ServeStream returns once it handed the stream over
// to StreamOptions.Detach.
var ErrDetached = errors.New("stream detached from its request")

// ServeStream streams session ss to w as Server-Sent Events until the
// client leaves (ctx), the hub drops the session, or a write fails. The
// `retry:` line goes first (the subscription is live), then the replay,
// then live messages.
func ServeStream(ctx context.Context, w http.ResponseWriter, ss *hub.Session, opts StreamOptions) error {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	if hdr.Get("Cache-Control") == "" {
		hdr.Set("Cache-Control", "no-cache")
	}
	hdr.Set("X-Accel-Buffering", "no")
	hdr.Del("Content-Length")
	w.WriteHeader(http.StatusOK)
	// the framer keeps opts for the life of the stream, which must not
	// keep the response it may leave (a detached stream) alive
	beneath := opts.BeneathIdle
	opts.BeneathIdle = nil
	f := &framer{ss: ss, opts: opts}
	wopts := stream.Options{Heartbeat: opts.Heartbeat, Shutdown: opts.Shutdown}
	if opts.Detach != nil {
		if nc := hijackChunked(w); nc != nil {
			conn := rawconn.Own(nc, opts.WriteTimeout, opts.DirectWrites)
			f.chunked = true
			sw := stream.New(ss, f, stream.Chunked(conn), wopts)
			opts.Detach(func() error { return serveDetached(sw, conn) })
			return ErrDetached
		}
	}
	out := stream.Response(w)
	if beneath != nil && opts.Heartbeat > 0 && opts.IdleTimeout > 0 {
		out = stream.ResponseBeneathIdle(beneath, opts.IdleTimeout, opts.Heartbeat)
	}
	return stream.New(ss, f, out, wopts).Serve(ctx)
}

// serveDetached runs a detached stream to its end and closes the
// connection. The calling goroutine only reads the connection, to notice
// the client going away (an SSE client sends nothing after its request).
func serveDetached(sw *stream.Writer, conn *rawconn.Conn) error {
	return sw.Run(func() {
		p := make([]byte, 64)
		for {
			if _, err := conn.Read(p); err != nil {
				return
			}
		}
	}, func(err error) {
		if err == nil || errors.Is(err, hub.ErrSlowConsumer) || errors.Is(err, hub.ErrHubClosed) || errors.Is(err, hub.ErrDisconnected) {
			// the server ends the stream: close the body properly
			_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = conn.Write([]byte(stream.LastChunk))
		}
		_ = conn.Close() // ends the reader
	})
}

// hijackChunked takes over the connection of an HTTP/1.1 response whose
// header (status 200, chunked transfer encoding, no content coding) has
// been set with WriteHeader: it flushes the header through every
// wrapper of w, then hijacks. It returns nil, having changed nothing the
// stream in place needs, when the response is not one whose body can be
// continued as raw chunks.
func hijackChunked(w http.ResponseWriter) net.Conn {
	hdr := w.Header()
	if hdr.Get("Content-Encoding") != "" || hdr.Get("Transfer-Encoding") != "" || hdr.Get("Content-Length") != "" {
		return nil
	}
	rc := http.NewResponseController(w)
	// the header must be on the wire, through any wrapper that holds it
	// back, before the connection changes hands
	if err := rc.Flush(); err != nil {
		return nil
	}
	if hdr.Get("Content-Encoding") != "" {
		return nil // a wrapper decided to encode the body after all
	}
	conn, _, err := rc.Hijack()
	if err != nil {
		return nil
	}
	// net/http's buffers are not used from here on: an idle stream keeps
	// no read or write buffer
	return conn
}

// framer is the SSE wire format of one stream (stream.Framer).
type framer struct {
	ss      *hub.Session
	opts    StreamOptions
	chunked bool // the shared form is the chunk the fan-out writes
}

func (f *framer) Open(buf []byte, replaying bool) []byte {
	buf = AppendRetry(buf, int(f.opts.Retry/time.Millisecond))
	if cur := f.ss.Cursor(); cur != "" && !replaying {
		// an event with only an id sets the client's last event id
		// without dispatching anything: a client that drops before the
		// first message still resumes from here
		buf = append(buf, "id: "...)
		buf = append(buf, cur...)
		buf = append(buf, "\n\n"...)
	}
	return buf
}

func (f *framer) Message(buf []byte, e *hub.Envelope, cursor string) []byte {
	if cursor == "" {
		if f.opts.JSON {
			return append(buf, e.Encoded(asJSON)...)
		}
		return append(buf, e.Encoded(plain)...)
	}
	m := e.Msg
	switch {
	case f.opts.JSON:
		return AppendEvent(buf, cursor, m.Event, hub.AppendJSON(nil, m, cursor))
	case Representable(m.Data):
		return AppendEvent(buf, cursor, m.Event, m.Data)
	}
	return AppendEvent(buf, cursor, EventEncoded, hub.AppendJSON(nil, m, cursor))
}

func (f *framer) Shared(e *hub.Envelope) []byte {
	switch {
	case !f.chunked && f.opts.JSON:
		return e.Encoded(asJSON)
	case !f.chunked:
		return e.Encoded(plain)
	case f.opts.JSON:
		return e.Encoded(asJSONChunk)
	}
	return e.Encoded(plainChunk)
}

func (f *framer) Interrupt(buf []byte, sig uint32, dropped error) ([]byte, bool, error) {
	if sig&hub.SignalGone != 0 {
		return buf, true, nil
	}
	if data, ok := hub.ClosedData(dropped); ok {
		// no id: the client's position stays that of its last message
		buf = AppendEvent(buf, "", hub.EventClosed, data)
	}
	return buf, dropped != nil, dropped
}

func (f *framer) Control(buf []byte, sig uint32) ([]byte, bool) {
	switch {
	case sig&hub.SignalShutdown != 0:
		ms := f.opts.Retry.Milliseconds()
		if j := f.opts.ShutdownJitter.Milliseconds(); j > 0 {
			ms += rand.Int64N(j)
		}
		return AppendRetry(buf, int(ms)), true
	case sig&hub.SignalHeartbeat != 0:
		return AppendComment(buf, "heartbeat"), false
	}
	return buf, false
}
