package hub

import (
	"net"
	"sync"
	"time"
)

// ConnWriter writes a stream to a connection taken over from net/http (an
// HTTP/1.1 response body written as chunks, or a WebSocket). The
// stream's goroutine writes with Write, which waits for the socket for at
// most the timeout. While that goroutine is idle, a Sink may write
// messages with TryWrite, which never waits: on a plain TCP connection
// the hub's fan-out then writes to the socket itself.
//
// The connection must be closed with Close, never directly: see
// rawWriter.
type ConnWriter struct {
	raw      rawWriter // in the writer itself: one object less per delivery
	direct   bool      // raw can write to conn
	conn     net.Conn
	timeout  time.Duration
	deadline time.Time // the write deadline set last
}

// Init sets up a zero ConnWriter, for one kept inside a connection's own
// state (a delivery then touches one object less).
func (w *ConnWriter) Init(conn net.Conn, timeout time.Duration) {
	w.conn, w.timeout = conn, timeout
	w.direct = w.raw.init(conn)
}

// Direct reports whether TryWrite can write without waiting: the
// connection is plain TCP (not TLS, not a stream of an HTTP/2 or HTTP/3
// connection).
func (w *ConnWriter) Direct() bool { return w.direct }

// TryWrite writes as much of b as the socket takes at once, for a Sink's
// WriteNow, and reports whether that was all; the rest goes out first at
// the next Write. Only when Direct.
func (w *ConnWriter) TryWrite(b []byte) bool { return w.raw.tryWrite(b) }

// Write sends what TryWrite left unsent, then b, waiting at most the
// timeout.
func (w *ConnWriter) Write(b []byte) error {
	rest := w.raw.rest
	if len(rest) == 0 && len(b) == 0 {
		return nil
	}
	if w.timeout > 0 {
		// re-arming a deadline costs a timer update: do it at most about
		// once a second per stream, not on every write
		now := time.Now()
		if d := now.Add(w.timeout); d.Sub(w.deadline) > time.Second || w.deadline.Before(now) {
			_ = w.conn.SetWriteDeadline(d)
			w.deadline = d
		}
	}
	var err error
	if len(rest) > 0 {
		bufs := net.Buffers{rest, b}
		_, err = bufs.WriteTo(w.conn)
		w.raw.rest = rest[:0]
		if cap(rest) > 16<<10 {
			w.raw.rest = nil // let a burst's buffer go
		}
	} else {
		_, err = w.conn.Write(b)
	}
	return err
}

// Close closes the connection, after making sure the fan-out no longer
// writes to its socket.
func (w *ConnWriter) Close() error {
	if w.direct {
		w.raw.close()
	}
	return w.conn.Close()
}

// Every calls f every d until stop is called. It uses one runtime timer
// and no goroutine, so that idle connections with heartbeats stay cheap.
func Every(d time.Duration, f func()) (stop func()) {
	e := &every{d: d, f: f}
	e.mu.Lock()
	e.t = time.AfterFunc(d, e.fire)
	e.mu.Unlock()
	return e.stop
}

type every struct {
	d time.Duration
	f func()

	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func (e *every) fire() {
	e.mu.Lock()
	f := e.f
	e.mu.Unlock()
	f()
	e.mu.Lock()
	if !e.stopped {
		e.t.Reset(e.d)
	}
	e.mu.Unlock()
}

func (e *every) stop() {
	e.mu.Lock()
	e.stopped = true
	e.t.Stop()
	e.mu.Unlock()
}
