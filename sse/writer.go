package sse

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Options configures a Writer.
type Options struct {
	// Heartbeat is how long an event stream may stay silent before a
	// comment line is injected; zero or less: no heartbeats.
	Heartbeat time.Duration
	// OnStream, if set, is called once when the response turns out to be
	// an event stream, before its header is written; the caller lifts
	// write timeouts there.
	OnStream func()
	// Gate, if set, is asked once when the response turns out to be an
	// event stream, before anything of it is written: a non-nil error
	// refuses the stream. The upstream's header and body are then
	// dropped, Refuse answers the client instead, and every later write
	// fails with ErrRefused, so that the proxy stops and cancels the
	// upstream request. The passthrough checks a request there when it
	// did not ask for an event stream (no Accept: text/event-stream) but
	// got one.
	Gate   func() error
	Refuse func(w http.ResponseWriter, err error)
	// Logger receives debug logs; nil: none.
	Logger *zap.Logger
}

// ErrRefused is what writes to a Writer return once its Gate refused the
// stream.
var ErrRefused = errors.New("event stream refused")

// nopLogger is shared so that a Writer costs one allocation.
var nopLogger = zap.NewNop()

// heartbeat is the comment line injected into an idle stream.
var heartbeat = []byte(": heartbeat\n")

// bom is the UTF-8 byte order mark, which a client drops from the start
// of a stream.
var bom = []byte("\xEF\xBB\xBF")

// Writer wraps the ResponseWriter handed to a proxied handler. A response
// whose Content-Type is text/event-stream is made a live stream: its
// header carries `Cache-Control: no-cache` (unless set) and
// `X-Accel-Buffering: no` and loses Content-Length, the header and every
// write are flushed to the client at once, and after Heartbeat of silence
// a heartbeat comment is injected at the next line boundary of the
// upstream's bytes (see LineTracker). Any other response passes through
// untouched, at the cost of one allocation and a branch per call.
//
// The stream is recognised by the final status's header (any status that
// allows a body, not only 200). A stream the upstream sent with a
// Content-Encoding other than identity is flushed but gets no heartbeats:
// plain text spliced into compressed bytes would corrupt them. One that
// Caddy's encode compresses on its way out gets them, through the
// compressor, flushed.
//
// Heartbeats need no goroutine: one timer per stream fires at most once
// per Heartbeat, at the time the stream would have been silent that long;
// a write only notes its time. A heartbeat that fails to write (the client
// is gone) stops the heartbeats; one due while the upstream is mid-line is
// retried a Heartbeat later.
//
// WriteHeader with a 1xx code other than 101 (an informational response
// such as 103 Early Hints) is passed through untouched and does not count
// as the response's header, as in net/http.
//
// Unwrap gives http.ResponseController the underlying writer, so Hijack
// (WebSocket upgrades through reverse_proxy), SetWriteDeadline and the like
// reach the server's own writer. Call Close when the handler returns.
type Writer struct {
	rw          http.ResponseWriter
	opts        Options
	wroteHeader bool
	stream      bool // set once, before the heartbeat timer starts
	refused     bool // the Gate refused the stream

	// mu serializes upstream writes with heartbeats, and guards the rest.
	mu        sync.Mutex
	rc        *http.ResponseController
	noFlush   bool // the underlying writer cannot flush
	lines     LineTracker
	lastWrite time.Time
	timer     *time.Timer
	closed    bool
	// bomWatch is set when a heartbeat went out before the upstream's
	// first byte: a BOM the upstream sends first must then be dropped,
	// since a client ignores a BOM only at the very start. bomHeld counts
	// the BOM bytes held back while a write split inside one.
	bomWatch bool
	bomHeld  int

	onBeat func(injected bool) // test hook, called by beat with mu held
}

// NewWriter wraps w. Close must be called when the handler returns.
func NewWriter(w http.ResponseWriter, opts Options) *Writer {
	if opts.Logger == nil {
		opts.Logger = nopLogger
	}
	return &Writer{rw: w, opts: opts}
}

// Refused reports whether the Gate refused the stream: the client got
// Refuse's answer, and the handler's error from writing is expected.
func (w *Writer) Refused() bool { return w.refused }

// Header returns the underlying writer's header map.
func (w *Writer) Header() http.Header { return w.rw.Header() }

// Unwrap returns the underlying writer, for http.ResponseController.
func (w *Writer) Unwrap() http.ResponseWriter { return w.rw }

// WriteHeader writes the response header; for an event stream it first
// adjusts the header, then flushes it to the client and starts the
// heartbeat timer.
func (w *Writer) WriteHeader(code int) {
	if w.wroteHeader || (code >= 100 && code < 200 && code != http.StatusSwitchingProtocols) {
		w.rw.WriteHeader(code)
		return
	}
	w.wroteHeader = true
	h := w.rw.Header()
	if !bodyAllowed(code) || !isEventStream(h.Get("Content-Type")) {
		w.rw.WriteHeader(code)
		return
	}
	if w.opts.Gate != nil {
		if err := w.opts.Gate(); err != nil {
			w.refused = true
			clear(h) // nothing of the upstream's answer reaches the client
			w.opts.Refuse(w.rw, err)
			return
		}
	}
	// Read before the next writer's WriteHeader: Caddy's encode sets
	// Content-Encoding there when it compresses the stream, which the
	// heartbeats then go through; only an upstream's own encoding rules
	// them out.
	upstreamEncoded := !identityEncoding(h.Get("Content-Encoding"))
	w.stream = true
	if h.Get("Cache-Control") == "" {
		h.Set("Cache-Control", "no-cache")
	}
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
	if w.opts.OnStream != nil {
		w.opts.OnStream()
	}
	w.rc = http.NewResponseController(w.rw)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rw.WriteHeader(code)
	_ = w.flush()
	// Heartbeats splice plain text into the body, which would corrupt an
	// upstream's compressed stream: such a stream is only flushed.
	if w.opts.Heartbeat > 0 && !upstreamEncoded {
		w.lastWrite = time.Now()
		w.timer = time.AfterFunc(w.opts.Heartbeat, w.beat)
	}
}

// Write writes p to the client; in an event stream it flushes at once.
// A flush error (the client is gone) is returned, so that the proxy stops
// and cancels the upstream request.
func (w *Writer) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.stream {
		if w.refused {
			return 0, ErrRefused
		}
		return w.rw.Write(p)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.writeUpstream(p)
	if err != nil {
		return n, err
	}
	w.lastWrite = time.Now()
	return n, w.flush()
}

// writeUpstream writes upstream bytes, dropping a leading BOM after an
// early heartbeat (see bomWatch). It returns how many bytes of p were
// consumed.
func (w *Writer) writeUpstream(p []byte) (int, error) {
	rest := p
	if w.bomWatch {
		for len(rest) > 0 && w.bomHeld < len(bom) && rest[0] == bom[w.bomHeld] {
			w.bomHeld++
			rest = rest[1:]
		}
		switch {
		case w.bomHeld == len(bom): // a whole BOM: dropped
			w.bomWatch, w.bomHeld = false, 0
		case len(rest) > 0: // not a BOM after all: give back what was held
			held := bom[:w.bomHeld]
			w.bomWatch, w.bomHeld = false, 0
			if err := w.write(held); err != nil {
				return 0, err
			}
		}
	}
	n, err := w.rw.Write(rest)
	w.lines.Write(rest[:n])
	return len(p) - len(rest) + n, err
}

// write writes b to the underlying writer and tracks it.
func (w *Writer) write(b []byte) error {
	n, err := w.rw.Write(b)
	w.lines.Write(b[:n])
	return err
}

// beat runs on the timer: it injects a heartbeat if the stream has been
// silent for Heartbeat, and arms the timer for the next one. One timer
// per stream that wakes at most once per Heartbeat, and no goroutine
// parked in between: writes only note their time, instead of resetting a
// timer or waking a ticker goroutine.
func (w *Writer) beat() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	next := w.opts.Heartbeat - time.Since(w.lastWrite)
	if next <= 0 {
		injected, err := w.heartbeat()
		if w.onBeat != nil {
			w.onBeat(injected)
		}
		if err != nil {
			if c := w.opts.Logger.Check(zap.DebugLevel, "heartbeat failed, stopping heartbeats"); c != nil {
				c.Write(zap.Error(err))
			}
			return
		}
		// Mid-line (the upstream stalled inside a line): try again a
		// whole interval later, by when it has most likely ended the line.
		next = w.opts.Heartbeat
		if injected {
			w.lastWrite = time.Now()
		}
	}
	w.timer.Reset(next)
}

// heartbeat writes a heartbeat comment and flushes it, if the stream is
// at a line boundary. Called with mu held.
func (w *Writer) heartbeat() (injected bool, err error) {
	if !w.lines.AtBoundary() {
		return false, nil
	}
	if w.lines.AtStart() {
		w.bomWatch = true
	}
	if err := w.write(heartbeat); err != nil {
		return false, err
	}
	return true, w.flush()
}

// Flush flushes buffered data to the client.
func (w *Writer) Flush() { _ = w.FlushError() }

// FlushError flushes buffered data to the client, like
// http.ResponseController.Flush. An event stream is flushed on every
// write already, so there it only writes a pending header.
func (w *Writer) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.stream {
		return nil
	}
	if w.refused {
		return ErrRefused
	}
	return http.NewResponseController(w.rw).Flush()
}

// flush flushes the underlying writer; one that cannot flush is written
// to unflushed, and noted once. Called with mu held.
func (w *Writer) flush() error {
	if w.noFlush {
		return nil
	}
	err := w.rc.Flush()
	if errors.Is(err, http.ErrNotSupported) {
		w.noFlush = true
		w.opts.Logger.Debug("response writer cannot flush; event stream may be buffered")
		return nil
	}
	return err
}

// Close stops the heartbeats. It writes back BOM bytes still held (an
// upstream that ended inside what looked like a BOM). After Close
// returns, the Writer writes nothing on its own.
func (w *Writer) Close() {
	if !w.stream {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	if w.timer != nil {
		w.timer.Stop()
	}
	if w.bomHeld > 0 {
		held := bom[:w.bomHeld]
		w.bomWatch, w.bomHeld = false, 0
		if w.write(held) == nil {
			_ = w.flush()
		}
	}
}

// isEventStream reports whether the media type of a Content-Type value
// is text/event-stream, ignoring case and parameters, without allocating.
func isEventStream(ct string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
}

// identityEncoding reports whether a Content-Encoding value leaves the
// body as it is.
func identityEncoding(ce string) bool {
	ce = strings.TrimSpace(ce)
	return ce == "" || strings.EqualFold(ce, "identity")
}

// bodyAllowed reports whether a response with this status has a body.
func bodyAllowed(code int) bool {
	return code != http.StatusNoContent && code != http.StatusNotModified && code >= 200
}
