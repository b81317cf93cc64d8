package hub

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-realtime/realtime/sse"
)

// DeliveryObserver counts what reaches clients, for metrics. Its
// implementations must be comparable (a Tally tells them apart).
type DeliveryObserver interface {
	// Delivered is called when e was written to n clients: one by a
	// connection's goroutine, or a batch by the hub's fan-out (see Tally).
	Delivered(transport string, e *Envelope, n int)
}

type nopDelivery struct{}

func (nopDelivery) Delivered(string, *Envelope, int) {}

// SSEOptions configures one hub SSE stream.
type SSEOptions struct {
	// Heartbeat is the interval of comment lines on an idle stream; zero
	// or less: none.
	Heartbeat time.Duration
	// Retry is sent as the `retry:` field once the subscription is live.
	Retry time.Duration
	// JSON sends each message's data as its JSON form (`?format=json`).
	JSON     bool
	Observer DeliveryObserver
	// Shutdown, when done, ends the stream with a `retry:` hint of a
	// random delay up to ShutdownJitter, so that the clients of a
	// reloading or stopping server come back spread out, not at once.
	Shutdown       context.Context
	ShutdownJitter time.Duration
	// Detach, when set, lets an HTTP/1.1 stream leave its request: once
	// the response header is sent, ServeSSE takes the connection over
	// from net/http, calls Detach with the function that serves the rest
	// of the stream, and returns ErrDetached. The caller runs that
	// function on a goroutine of its own (and cleans up after it) and
	// returns from its handler, which frees the request goroutine's deep
	// stack, net/http's buffers and the server's per-request state: an
	// idle stream then costs two small goroutines (the writer and one
	// that notices the client closing) and a few small objects. A
	// detached stream does not use ctx: it ends when the client closes
	// the connection, on Shutdown, or when the hub drops it. On a plain
	// TCP connection the hub then writes messages to the socket itself
	// while the stream is idle (see Sink). Where the connection cannot be
	// taken over (HTTP/2, HTTP/3, an encoded response), the stream is
	// served in place.
	Detach func(serve func() error)
	// WriteTimeout bounds each write of a detached stream, as the
	// server's write idle timeout bounds the writes of one in place;
	// zero: no bound.
	WriteTimeout time.Duration
}

// ErrDetached is what ServeSSE returns once it handed a stream over to
// Options.Detach.
var ErrDetached = errors.New("stream detached from its request")

// ServeSSE streams ss to w as Server-Sent Events until the client leaves
// (ctx), the hub drops the subscriber, or a write fails. The `retry:`
// line goes first (the subscription is live), then the replay, then live
// messages.
//
// Everything pending is written with one Write and one Flush, so a burst
// costs one syscall per client, not one per message.
//
// With opts.Detach set, an HTTP/1.1 stream leaves the request: see
// SSEOptions.Detach.
func ServeSSE(ctx context.Context, w http.ResponseWriter, ss *Session, opts SSEOptions) error {
	if opts.Observer == nil {
		opts.Observer = nopDelivery{}
	}
	rc := http.NewResponseController(w)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	if hdr.Get("Cache-Control") == "" {
		hdr.Set("Cache-Control", "no-cache")
	}
	hdr.Set("X-Accel-Buffering", "no")
	hdr.Del("Content-Length")
	w.WriteHeader(http.StatusOK)
	if opts.Detach != nil {
		if conn := hijackChunked(w, rc); conn != nil {
			out := newChunkedOut(conn, opts.WriteTimeout)
			opts.Detach(func() error { return out.serve(ss, opts) })
			return ErrDetached
		}
	}
	return serveSSE(ctx, ss, opts, &responseOut{w: w, rc: rc})
}

// sseOut is where a stream's bytes go: the response (through net/http),
// or a connection taken over from it.
type sseOut interface {
	// room is how many bytes each buffer passed to write starts with,
	// free for framing.
	room() int
	// write sends b[room():] to the client at once, after anything a
	// sink left unsent.
	write(b []byte) error
	// writer is the connection writer the hub may write through while
	// the stream is idle, or nil.
	writer() *ConnWriter
}

type responseOut struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (*responseOut) room() int              { return 0 }
func (o *responseOut) write(b []byte) error { return writeFlush(o.w, o.rc, b) }
func (*responseOut) writer() *ConnWriter    { return nil }

// sseBufs holds stream buffers between bursts, so that an idle stream
// keeps none.
var sseBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// sseStream is one SSE stream's writing side: the first write, then one
// step per wake-up, each writing everything pending at once. On a
// connection the hub may write to itself, it is also the Sink that does
// so (see WriteNow).
type sseStream struct {
	// what a direct delivery reads, first and together
	ss     *Session
	w      *ConnWriter // not nil: a single-channel stream on a direct connection
	json   bool
	active atomic.Bool // a message went out since the last heartbeat tick
	obs    DeliveryObserver

	opts SSEOptions
	out  sseOut
	room int

	pending []*Envelope
	stops   []func()
}

// init sets up a zero sseStream (one may live inside its sseOut).
func (st *sseStream) init(ss *Session, opts SSEOptions, out sseOut) {
	st.ss, st.opts, st.out, st.room = ss, opts, out, out.room()
	st.json, st.obs = opts.JSON, opts.Observer
	if w := out.writer(); w != nil && w.Direct() && !ss.Multi() {
		st.w = w
	}
}

// sink is the stream as the hub's Sink, or nil when the hub may not
// write to its connection.
func (st *sseStream) sink() Sink {
	if st.w == nil {
		return nil
	}
	return st
}

// WriteNow writes a single-channel message from the hub's fan-out: the
// chunk shared by every stream, straight to the socket.
func (st *sseStream) WriteNow(e *Envelope, t *Tally) bool {
	if !st.ss.Accept(e) {
		return true
	}
	st.ss.Advance(e)
	st.active.Store(true)
	done := st.w.TryWrite(e.SSEChunk(st.json))
	t.Add(st.obs, "sse")
	return done
}

// start writes the `retry:` line, the position or the replay, and sets
// up what wakes the stream: everything goes through its subscriber, so
// that it waits on one channel (or, detached, on nothing at all).
func (st *sseStream) start(ctx context.Context) error {
	ss, opts := st.ss, st.opts
	s := ss.Sub
	bp := sseBufs.Get().(*[]byte)
	buf := sse.AppendRetry((*bp)[:st.room], int(opts.Retry/time.Millisecond))
	if cur := ss.Cursor(); cur != "" && len(ss.Replay) == 0 {
		// an event with only an id sets the client's last event id
		// without dispatching anything: a client that drops before the
		// first message still resumes from here
		buf = append(buf, "id: "...)
		buf = append(buf, cur...)
		buf = append(buf, "\n\n"...)
	}
	for _, e := range ss.Replay {
		buf = appendSSE(buf, ss, e, opts.JSON)
	}
	err := st.out.write(buf)
	putBuf(bp, buf)
	if err != nil {
		return err
	}
	for _, e := range ss.Replay {
		opts.Observer.Delivered("sse", e, 1)
	}
	ss.Replay = nil

	if opts.Heartbeat > 0 {
		st.stops = append(st.stops, Every(opts.Heartbeat, func() {
			if !st.active.Swap(false) {
				s.Signal(SignalHeartbeat)
			}
		}))
	}
	if opts.Shutdown != nil {
		st.afterFunc(opts.Shutdown, SignalShutdown)
	}
	if ctx.Done() != nil {
		st.afterFunc(ctx, SignalGone)
	}
	return nil
}

// afterFunc signals the subscriber when ctx is done.
func (st *sseStream) afterFunc(ctx context.Context, sig uint32) {
	stop := context.AfterFunc(ctx, func() { st.ss.Sub.Signal(sig) })
	st.stops = append(st.stops, func() { stop() })
}

// stop releases the stream's timers.
func (st *sseStream) stop() {
	for _, f := range st.stops {
		f()
	}
	st.stops = nil
}

// step writes everything pending: queued messages, what a sink left
// unsent, a heartbeat or the shutdown hint. end reports that the stream
// is over, with err saying why (nil: the client left, or shutdown).
func (st *sseStream) step() (end bool, err error) {
	ss, opts := st.ss, st.opts
	s := ss.Sub
	st.pending = ss.Next(st.pending[:0]) // from here on, only this goroutine writes
	sig := s.TakeSignals()
	if sig&SignalGone != 0 {
		return true, nil
	}
	if err := s.Err(); err != nil {
		return true, err
	}
	bp := sseBufs.Get().(*[]byte)
	buf := (*bp)[:st.room]
	for _, e := range st.pending {
		buf = appendSSE(buf, ss, e, opts.JSON)
	}
	shutdown := sig&SignalShutdown != 0
	switch {
	case shutdown:
		ms := opts.Retry.Milliseconds()
		if j := opts.ShutdownJitter.Milliseconds(); j > 0 {
			ms += rand.Int64N(j)
		}
		buf = sse.AppendRetry(buf, int(ms))
	case len(st.pending) > 0:
		st.active.Store(true)
	case sig&SignalHeartbeat != 0:
		buf = sse.AppendComment(buf, "heartbeat")
	}
	err = st.out.write(buf) // also what a sink left unsent
	putBuf(bp, buf)
	if err != nil {
		return true, err
	}
	for _, e := range st.pending {
		opts.Observer.Delivered("sse", e, 1)
	}
	clear(st.pending)
	return shutdown, nil
}

// serveSSE serves a stream in place, on the request's goroutine.
func serveSSE(ctx context.Context, ss *Session, opts SSEOptions, out sseOut) error {
	st := new(sseStream)
	st.init(ss, opts, out)
	err := st.start(ctx)
	defer st.stop()
	if err != nil {
		return err
	}
	for {
		<-ss.Sub.Ready()
		if end, err := st.step(); end {
			return err
		}
	}
}

// putBuf returns a stream buffer to the pool, unless a burst grew it
// too big to keep.
func putBuf(bp *[]byte, b []byte) {
	if cap(b) > 64<<10 {
		return
	}
	*bp = b[:0]
	sseBufs.Put(bp)
}

// appendSSE appends e as the session's client is to see it: the shared
// encoding, or for a multi-channel session, one with its own cursor id.
func appendSSE(buf []byte, ss *Session, e *Envelope, asJSON bool) []byte {
	id := ss.Advance(e)
	if !ss.Multi() {
		if asJSON {
			return append(buf, e.SSEJSON()...)
		}
		return append(buf, e.SSE()...)
	}
	return e.AppendSSEWithID(buf, id, asJSON)
}

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
