// Package stream writes a hub session to its client: the one writer loop
// of every streaming transport (SSE, WebSocket). The transport says what
// its bytes are (a Framer); where they go is an Out (a response through
// net/http, or a connection taken over from it); this package decides
// when to write them.
//
// Everything pending is written with one write, so a burst costs one
// system call per client, not one per message. A stream on a connection
// taken over from net/http needs no goroutine while it is idle: the hub's
// fan-out writes each message to the socket itself when it can (see
// hub.Sink and rawconn), and a goroutine is started for the rest.
package stream

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-realtime/realtime/internal/hub"
	"github.com/caddy-realtime/realtime/internal/rawconn"
)

// Framer is a transport's wire format.
type Framer interface {
	// Open appends what the client gets first, before any message (SSE's
	// retry line, WebSocket's subscribed frame); replaying says whether
	// retained messages follow.
	Open(buf []byte, replaying bool) []byte
	// Message appends e as the client is to see it. cursor is empty for a
	// session of one channel, which uses e's shared form; for several
	// channels it is the session's cursor, the id the client is to see.
	Message(buf []byte, e *hub.Envelope, cursor string) []byte
	// Shared returns e's wire form shared by every session of one
	// channel, exactly as the fan-out writes it to a connection.
	Shared(e *hub.Envelope) []byte
	// Interrupt runs first in each step with the signals taken and why
	// the hub dropped the session (or nil). When the stream ends here,
	// before any message, it appends its last bytes and reports end,
	// with the error the stream ends with (nil: the client left).
	Interrupt(buf []byte, sig uint32, dropped error) (out []byte, end bool, err error)
	// Control runs after the step's messages: it appends what the
	// signals ask for (a heartbeat, a ping, replies) and reports whether
	// the stream ends after this write (a shutdown).
	Control(buf []byte, sig uint32) (out []byte, end bool)
}

// Options configures a Writer.
type Options struct {
	// Heartbeat is how often hub.SignalHeartbeat is sent; zero or less:
	// never.
	Heartbeat time.Duration
	// HeartbeatWhenBusy sends it even when messages went out meanwhile
	// (a WebSocket ping checks the peer is there); otherwise it only
	// keeps an idle stream alive.
	HeartbeatWhenBusy bool
	// Shutdown, when done, sends hub.SignalShutdown: the server is
	// reloading or stopping.
	Shutdown context.Context
}

// Writer writes one session to its client.
type Writer struct {
	// what a direct delivery reads, first and together
	conn   *rawconn.Conn // not nil: the fan-out may write to it
	f      Framer
	active atomic.Bool // a message went out since the last heartbeat tick

	ss      *hub.Session
	out     Out
	room    int
	opts    Options
	pending []*hub.Envelope
	stops   []func()
}

// New returns the writer of ss in format f to out.
func New(ss *hub.Session, f Framer, out Out, opts Options) *Writer {
	w := new(Writer)
	w.init(ss, f, out, opts)
	return w
}

// init sets up a zero Writer (one may live inside its Out).
func (w *Writer) init(ss *hub.Session, f Framer, out Out, opts Options) {
	w.ss, w.f, w.out, w.room, w.opts = ss, f, out, out.room(), opts
	if c := out.conn(); c != nil && c.Direct() && !ss.Multi() {
		w.conn = c
	}
}

// Serve writes the stream on the calling goroutine until it ends: the
// client leaves (gone is done), the hub drops the session, a write
// fails, or the framer ends it.
func (w *Writer) Serve(gone context.Context) error {
	err := w.start()
	defer w.stop()
	if err != nil {
		return err
	}
	if gone.Done() != nil {
		w.afterFunc(gone, hub.SignalGone)
	}
	for {
		<-w.ss.Ready()
		if end, err := w.step(); end {
			return err
		}
	}
}

// Run writes the stream with no goroutine while it is idle (see
// hub.Session.Run) while read, the caller's reading of the connection,
// goes on; when read returns, the client is gone. finish runs once when
// the writing ends, with its error; it must close the connection, which
// ends read. Run returns that error.
func (w *Writer) Run(read func(), finish func(error)) error {
	var sink hub.Sink
	if w.conn != nil {
		sink = w
	}
	wait := w.ss.Run(sink, w.start, w.step, func(err error) {
		w.stop()
		finish(err)
	})
	read()
	w.ss.Signal(hub.SignalGone) // wakes the writer, if still writing
	return wait()
}

// WriteNow writes a message from the hub's fan-out: the form shared by
// every session, straight to the socket (hub.Sink).
func (w *Writer) WriteNow(e *hub.Envelope) bool {
	w.active.Store(true)
	return w.conn.TryWrite(w.f.Shared(e))
}

// start writes the opening and the replay, and sets up the timers that
// wake the writer: everything goes through the session's signals, so
// that it waits on one thing (or, run by Run, on nothing at all).
func (w *Writer) start() error {
	ss := w.ss
	replayed := ss.TakeReplay()
	bp := bufs.Get().(*[]byte)
	buf := w.f.Open((*bp)[:w.room], len(replayed) > 0)
	for _, e := range replayed {
		buf = w.appendMessage(buf, e)
	}
	err := w.out.write(buf)
	putBuf(bp, buf)
	if err != nil {
		return err
	}
	for _, e := range replayed {
		ss.Delivered(e)
	}
	if hb := w.opts.Heartbeat; hb > 0 {
		w.stops = append(w.stops, every(hb, func() {
			if !w.active.Swap(false) || w.opts.HeartbeatWhenBusy {
				ss.Signal(hub.SignalHeartbeat)
			}
		}))
	}
	if w.opts.Shutdown != nil {
		w.afterFunc(w.opts.Shutdown, hub.SignalShutdown)
	}
	return nil
}

// afterFunc signals the session when ctx is done.
func (w *Writer) afterFunc(ctx context.Context, sig uint32) {
	stop := context.AfterFunc(ctx, func() { w.ss.Signal(sig) })
	w.stops = append(w.stops, func() { stop() })
}

// stop releases the writer's timers.
func (w *Writer) stop() {
	for _, f := range w.stops {
		f()
	}
	w.stops = nil
}

// step writes everything pending: what the sink left unsent, queued
// messages and what the signals ask for. end reports that the stream is
// over, with err saying why (nil: the client left, or a shutdown).
func (w *Writer) step() (end bool, err error) {
	ss := w.ss
	w.pending = ss.Next(w.pending[:0]) // from here on, only this goroutine writes
	sig := ss.TakeSignals()
	bp := bufs.Get().(*[]byte)
	defer func() { clear(w.pending) }()
	buf, end, err := w.f.Interrupt((*bp)[:w.room], sig, ss.Err())
	if end {
		_ = w.out.write(buf) // the last bytes, if the client still reads
		putBuf(bp, buf)
		return true, err
	}
	for _, e := range w.pending {
		buf = w.appendMessage(buf, e)
	}
	if len(w.pending) > 0 {
		w.active.Store(true)
		if !w.opts.HeartbeatWhenBusy {
			sig &^= hub.SignalHeartbeat
		}
	}
	buf, end = w.f.Control(buf, sig)
	err = w.out.write(buf) // also what the sink left unsent
	putBuf(bp, buf)
	if err != nil {
		return true, err
	}
	for _, e := range w.pending {
		ss.Delivered(e)
	}
	return end, nil
}

// appendMessage appends e as the session's client is to see it.
func (w *Writer) appendMessage(buf []byte, e *hub.Envelope) []byte {
	id := w.ss.Advance(e)
	if !w.ss.Multi() {
		return w.f.Message(buf, e, "")
	}
	return w.f.Message(buf, e, id)
}

// bufs holds write buffers between bursts, so that an idle stream keeps
// none.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// putBuf returns a buffer to the pool, unless a burst grew it too big to
// keep.
func putBuf(bp *[]byte, b []byte) {
	if cap(b) > 64<<10 {
		return
	}
	*bp = b[:0]
	bufs.Put(bp)
}

// every calls f every d until stop is called. It uses one runtime timer
// and no goroutine, so that idle connections with heartbeats stay cheap.
func every(d time.Duration, f func()) (stop func()) {
	e := &ticker{d: d, f: f}
	e.mu.Lock()
	e.t = time.AfterFunc(d, e.fire)
	e.mu.Unlock()
	return e.stop
}

type ticker struct {
	d time.Duration
	f func()

	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func (e *ticker) fire() {
	e.f()
	e.mu.Lock()
	if !e.stopped {
		e.t.Reset(e.d)
	}
	e.mu.Unlock()
}

func (e *ticker) stop() {
	e.mu.Lock()
	e.stopped = true
	e.t.Stop()
	e.mu.Unlock()
}
