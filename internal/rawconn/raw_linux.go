//go:build linux

package rawconn

import (
	"net"
	"sync"
	"syscall"
	"unsafe"
)

// rawWriter writes to a TCP connection's socket without ever waiting:
// what the socket buffer cannot take at once is kept, for the
// connection's own goroutine to send with an ordinary (waiting) write.
//
// It writes to the descriptor number itself rather than through
// syscall.RawConn: RawConn's locking and poller bookkeeping touch two
// more objects per write, which at thousands of writes per message
// costs more than the write's own user-space work. The price is that
// the number must never be written to once the connection is closed,
// when the system may hand it to another connection: ConnWriter.Close
// marks the writer closed under mu before it closes the connection.
type rawWriter struct {
	fd     int
	mu     sync.Mutex // held across each write, and to mark closed
	closed bool
	rest   []byte
}

// init sets w up to write to conn, and reports false when conn is not a
// plain TCP connection (TLS, an HTTP/2 stream): those are written by
// their goroutine only.
func (w *rawWriter) init(conn net.Conn) bool {
	tc, ok := conn.(*net.TCPConn)
	if s, isSocket := conn.(*Socket); isSocket {
		// the listener wrapper's, on a server without TLS: its writes
		// pass through to the TCP connection until owned, which only
		// TLS above it is
		tc, ok = s.TCPConn, true
	}
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	w.fd = -1
	if err := rc.Control(func(s uintptr) { w.fd = int(s) }); err != nil || w.fd < 0 {
		return false
	}
	return true
}

// tryWrite writes as much of b as the socket takes now and reports
// whether that was all of it; if not, the rest (or all of b, after an
// error, which the waiting write then reports) is kept in w.rest.
func (w *rawWriter) tryWrite(b []byte) bool {
	w.mu.Lock()
	if !w.closed {
		// full, or failed: the goroutine's write takes over
		b = b[writeSome(w.fd, b):]
	}
	w.mu.Unlock()
	if len(b) == 0 {
		return true
	}
	w.rest = append(w.rest[:0], b...)
	return false
}

// close makes every later tryWrite leave its bytes to the goroutine
// (whose write then fails on the closed connection).
func (w *rawWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// writeSome writes as much of b to fd as the socket takes now, and
// returns how much that was.
func writeSome(fd int, b []byte) int {
	n := 0
	for n < len(b) {
		m, err := rawWrite(fd, b[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil || m <= 0 {
			break
		}
		n += m
	}
	return n
}

// rawWrite is write(2) without telling the Go scheduler about a system
// call. The socket is non-blocking, so the call never waits; a fan-out
// lane makes thousands of them in a row, and with syscall.Write the
// runtime's monitor would hand the lane's P to another thread whenever
// one write took a little longer, costing context switches and keeping
// the monitor polling every 20µs.
func rawWrite(fd int, b []byte) (int, error) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
