//go:build unix

package hub

import (
	"net"
	"syscall"
	"unsafe"
)

// rawWriter writes to a TCP connection without ever waiting: what the
// socket buffer cannot take at once is kept, for the connection's own
// goroutine to send with an ordinary (waiting) write.
type rawWriter struct {
	rc   syscall.RawConn
	rest []byte
}

// newRawWriter returns a writer for conn, or nil when conn is not a
// plain TCP connection (TLS, an HTTP/2 stream): those are written by
// their goroutine only.
func newRawWriter(conn net.Conn) *rawWriter {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return &rawWriter{rc: rc}
}

// tryWrite writes as much of b as the socket takes now and reports
// whether that was all of it; if not, the rest (or all of b, after an
// error, which the waiting write then reports) is kept in w.rest.
func (w *rawWriter) tryWrite(b []byte) bool {
	// an error here means the connection is closed: the rest is left to
	// the goroutine, whose write reports it
	_ = w.rc.Write(func(fd uintptr) bool {
		for len(b) > 0 {
			n, err := rawWrite(fd, b)
			if n > 0 {
				b = b[n:]
			}
			if err == syscall.EINTR {
				continue
			}
			if err != nil || n <= 0 {
				break
			}
		}
		return true // never wait for the socket here
	})
	if len(b) == 0 {
		return true
	}
	w.rest = append(w.rest[:0], b...)
	return false
}

// rawWrite is write(2) without telling the Go scheduler about a system
// call. The socket is non-blocking, so the call never waits; a fan-out
// lane makes thousands of them in a row, and with syscall.Write the
// runtime's monitor would hand the lane's P to another thread whenever
// one write took a little longer, costing context switches and keeping
// the monitor polling every 20µs.
func rawWrite(fd uintptr, b []byte) (int, error) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
