// Package rawconn owns a connection taken over from net/http (an HTTP/1.1
// response body written as chunks, or a WebSocket) and writes to it from
// two sides: the connection's own goroutine, which may wait for the
// socket, and the hub's fan-out, which never waits.
//
// On Linux, a plain TCP connection is written by the fan-out with write(2)
// on its descriptor (see TryWrite). That is only safe while the
// descriptor is this connection's: once closed, the system may hand the
// number to another connection. Conn makes that impossible rather than a
// convention: it owns the connection, it is the only way to close it, and
// its Close stops direct writes before the descriptor is released.
//
// A TLS connection over a Socket (the realtime listener wrapper's) is
// written by the fan-out too: crypto/tls seals the message on the
// fan-out's goroutine, and the Socket beneath takes the records without
// waiting. Every other kind of connection (TLS over a plain socket, a
// stream of an HTTP/2 or HTTP/3 connection, other systems) is written by
// its goroutine only.
package rawconn

import (
	"crypto/tls"
	"net"
	"time"
)

// Conn is a connection owned by one stream. It is a net.Conn, so that the
// code that reads from it (gorilla/websocket, a read loop) holds the Conn
// and never the connection underneath: whoever closes it goes through
// Close.
type Conn struct {
	raw      rawWriter // in the Conn itself: one object less per delivery
	direct   bool      // raw, or sealed over sock, can write to the socket
	sealed   *tls.Conn // not nil: TLS over sock
	sock     *Socket
	net.Conn // reads, addresses and read deadlines pass through
	timeout  time.Duration
	deadline time.Time // the write deadline set last
}

// Own takes c over: from now on, c must be used through the returned Conn
// only. Write waits at most 1.5 timeout for the socket (zero: no bound).
// With direct false, or where c is neither a plain TCP connection nor TLS
// over a Socket, TryWrite writes nothing.
func Own(c net.Conn, timeout time.Duration, direct bool) *Conn {
	w := &Conn{Conn: c, timeout: timeout}
	if !direct {
		return w
	}
	if tc, s := socketOf(c); s != nil && s.own() {
		w.sealed, w.sock, w.direct = tc, s, true
		return w
	}
	w.direct = w.raw.init(c)
	return w
}

// Direct reports whether TryWrite can write without waiting.
func (w *Conn) Direct() bool { return w.direct }

// TryWrite writes as much of b as the socket takes at once and reports
// whether that was all; the rest goes out first at the next Write. It
// never waits, and is for the hub's fan-out while the connection's
// goroutine is idle: the two never write at the same time. Without
// Direct it writes nothing and keeps all of b for Write.
func (w *Conn) TryWrite(b []byte) bool {
	if w.sock != nil && len(b) <= maxSealed {
		// after an error the connection is broken for good: the
		// goroutine's write meets it and ends the stream
		_, err := w.sealed.Write(b)
		return err == nil && !w.sock.Pending()
	}
	if !w.direct || w.sock != nil {
		w.raw.rest = append(w.raw.rest[:0], b...)
		return len(b) == 0
	}
	return w.raw.tryWrite(b)
}

// Write sends what TryWrite left unsent, then b, waiting at most the
// timeout.
func (w *Conn) Write(b []byte) (int, error) {
	rest := w.raw.rest
	if len(rest) == 0 && len(b) == 0 && w.sock == nil {
		return 0, nil
	}
	if w.timeout > 0 {
		// re-arming a deadline costs a timer update (and on TLS a lock):
		// do it once per half timeout at most, not on every write. Each
		// write makes sure the deadline lies at least timeout ahead,
		// pushing it to 1.5 timeout: a write the client does not take is
		// cut after timeout to 1.5 timeout.
		if now := time.Now(); w.deadline.Sub(now) < w.timeout {
			w.deadline = now.Add(w.timeout + w.timeout/2)
			_ = w.Conn.SetWriteDeadline(w.deadline)
		}
	}
	if w.sock != nil {
		return w.writeSealed(rest, b)
	}
	if len(rest) == 0 {
		return w.Conn.Write(b)
	}
	bufs := net.Buffers{rest, b}
	n, err := bufs.WriteTo(w.Conn)
	w.raw.rest = rest[:0]
	if cap(rest) > 16<<10 {
		w.raw.rest = nil // let a burst's buffer go
	}
	return max(int(n)-len(rest), 0), err
}

// writeSealed is Write over a Socket: what the fan-out left (in the
// Socket, or kept whole in rest), then b, each piece of at most
// maxSealed flushed before the next, so that the Socket never holds
// more than one.
func (w *Conn) writeSealed(rest, b []byte) (int, error) {
	if err := w.sock.Flush(); err != nil {
		return 0, err
	}
	if len(rest) > 0 {
		if err := w.seal(rest); err != nil {
			return 0, err
		}
		w.raw.rest = nil
	}
	if err := w.seal(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (w *Conn) seal(b []byte) error {
	for len(b) > 0 {
		n := min(len(b), maxSealed)
		if _, err := w.sealed.Write(b[:n]); err != nil {
			return err
		}
		if err := w.sock.Flush(); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// SetWriteDeadline sets the deadline of the next Write; later writes set
// their own from the timeout again.
func (w *Conn) SetWriteDeadline(t time.Time) error {
	w.deadline = t
	return w.Conn.SetWriteDeadline(t)
}

// Close stops direct writes, then closes the connection: the descriptor
// is released only once no TryWrite can use it.
func (w *Conn) Close() error {
	if w.direct && w.sock == nil {
		w.raw.close()
	}
	return w.Conn.Close()
}
