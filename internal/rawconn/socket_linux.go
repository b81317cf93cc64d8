//go:build linux

package rawconn

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
)

// Socket is a TCP connection beneath TLS that the hub's fan-out can write
// through without ever waiting.
//
// crypto/tls writes each record to the connection it was made with, and
// waits when that connection waits: over a plain socket, a TLS stream can
// only be written by a goroutine of its own, started for every message.
// Over a Socket, once the hub owns the TLS connection above it (Own),
// every record goes to the socket at once as far as the socket takes it,
// and the rest is kept, in order, for the stream's goroutine to send
// (Flush). The fan-out then seals and writes a message itself, as it
// writes to plain TCP.
//
// Sockets come from the realtime listener wrapper placed before tls in a
// server's listener_wrappers. Until its TLS connection is owned, a Socket
// is the TCP connection: HTTP/2, reverse-proxied WebSockets and every
// other request are served as without it.
type Socket struct {
	*net.TCPConn
	owned atomic.Bool

	fd       int
	mu       sync.Mutex // held across each write to fd, and to mark closed
	closed   bool
	refused  bool   // a write was refused: every later one is too
	flushing bool   // Flush is sending pending: later bytes queue behind
	pending  []byte // written but not taken by the socket yet, in order
}

// maxPending bounds what a Socket keeps for its goroutine. The fan-out
// writes a message only while the stream is idle (at most maxSealed
// bytes), the goroutine writes in pieces of maxSealed and flushes each,
// so only records crypto/tls writes on its own (alerts, key update
// answers) can add more: a client that stops reading while making the
// TLS layer answer it meets this bound, and its connection breaks.
const maxPending = 64 << 10

// maxSealed is the most the fan-out writes through a Socket at once, and
// the piece the goroutine writes before flushing: one TLS record.
const maxSealed = 16 << 10

var errBacklog = errors.New("rawconn: client does not read what TLS sends it")

// WrapSocket returns c as a Socket when it is a plain TCP connection, and
// c itself otherwise.
func WrapSocket(c net.Conn) net.Conn {
	if tc, ok := c.(*net.TCPConn); ok {
		return &Socket{TCPConn: tc}
	}
	return c
}

// socketOf returns the Socket beneath c, a TLS connection, or nil.
func socketOf(c net.Conn) (*tls.Conn, *Socket) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil, nil
	}
	s, ok := tc.NetConn().(*Socket)
	if !ok {
		return nil, nil
	}
	return tc, s
}

// own makes every later write go to the socket without waiting, and
// reports false when the socket's descriptor cannot be had.
func (s *Socket) own() bool {
	rc, err := s.TCPConn.SyscallConn()
	if err != nil {
		return false
	}
	s.fd = -1
	if err := rc.Control(func(fd uintptr) { s.fd = int(fd) }); err != nil || s.fd < 0 {
		return false
	}
	s.owned.Store(true)
	return true
}

// Write sends b as far as the socket takes it now and keeps the rest
// behind anything kept before; once owned, it never waits.
func (s *Socket) Write(b []byte) (int, error) {
	if !s.owned.Load() {
		return s.TCPConn.Write(b)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return 0, net.ErrClosed
	case s.refused || len(s.pending) >= maxPending:
		// crypto/tls numbers its records: once one is left out, no
		// later one may go (its close alert would reach the client as
		// a corrupt record)
		s.refused = true
		return 0, errBacklog
	case len(s.pending) > 0 || s.flushing:
		s.pending = append(s.pending, b...)
		return len(b), nil
	}
	// after an error the bytes are kept as well: Flush's write, which
	// waits, meets the error again and reports it
	if n := writeSome(s.fd, b); n < len(b) {
		s.pending = append(s.pending, b[n:]...)
	}
	return len(b), nil
}

// Pending reports whether bytes wait for Flush.
func (s *Socket) Pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) > 0 || s.flushing
}

// Flush sends what the socket did not take, waiting for it up to the
// write deadline. Only the stream's goroutine calls it; writes made
// meanwhile queue behind.
func (s *Socket) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushing = true
	defer func() { s.flushing = false }()
	for len(s.pending) > 0 {
		if s.closed {
			return net.ErrClosed
		}
		b := s.pending
		s.pending = nil // what a burst grew goes with it
		s.mu.Unlock()
		_, err := s.TCPConn.Write(b)
		s.mu.Lock()
		if err != nil {
			s.refused = true // records were lost: nothing may follow them
			return err
		}
	}
	return nil
}

// Close stops writes to the descriptor, then closes it: the number is
// released only once no write can use it.
func (s *Socket) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return s.TCPConn.Close()
}
