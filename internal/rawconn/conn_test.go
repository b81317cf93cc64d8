//go:build linux

package rawconn

import (
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection accepted
// from ln.
func tcpPair(t *testing.T, ln net.Listener) (server, client net.Conn) {
	t.Helper()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// closeAndReuse closes a connection with closeConn and accepts one from
// ln that most likely gets the descriptor number just freed: its client
// dials first, so that the accept after the close takes the lowest free
// number. It returns both ends and the accepted end's descriptor.
func closeAndReuse(t *testing.T, ln net.Listener, closeConn func() error) (srv, cli net.Conn, fd int) {
	t.Helper()
	cli, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	if err := closeConn(); err != nil {
		t.Fatal(err)
	}
	srv, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	rc, err := srv.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	_ = rc.Control(func(s uintptr) { fd = int(s) })
	return srv, cli, fd
}

func readWithin(c net.Conn, n int, d time.Duration) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	b := make([]byte, n)
	_, err := io.ReadFull(c, b)
	return b, err
}

// The fan-out writes to a socket's descriptor number: once the writer's
// connection is closed, that number may be another connection's, which
// must never get a byte.
func TestClosedConnWritesNothing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv, cli := tcpPair(t, ln)
	w := Own(srv, time.Second, true)
	if !w.Direct() {
		t.Fatal("a plain TCP connection should be written directly")
	}
	if !w.TryWrite([]byte("hello")) {
		t.Fatal("a small write to an idle socket should go out at once")
	}
	if b, err := readWithin(cli, 5, 5*time.Second); err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v", b, err)
	}
	fd := w.raw.fd
	srv2, cli2, fd2 := closeAndReuse(t, ln, w.Close)
	if fd2 != fd {
		t.Logf("descriptor %d not reused (got %d): the test is weaker", fd, fd2)
	}
	if w.TryWrite([]byte("stray")) {
		t.Fatal("TryWrite on a closed writer reported success")
	}
	if _, err := w.Write(nil); err == nil {
		t.Fatal("Write on a closed writer should fail")
	}
	// whatever reached the new connection arrives before its own bytes
	if _, err := srv2.Write([]byte("mine")); err != nil {
		t.Fatal(err)
	}
	if b, err := readWithin(cli2, 4, 5*time.Second); err != nil || string(b) != "mine" {
		t.Fatalf("the new connection read %q (%v): a closed writer wrote to it", b, err)
	}
}

// With direct writes switched off, TryWrite writes nothing and every
// byte goes through Write.
func TestDirectWritesOff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv, cli := tcpPair(t, ln)
	w := Own(srv, time.Second, false)
	if w.Direct() {
		t.Fatal("Direct with direct writes off")
	}
	if w.TryWrite([]byte("a")) {
		t.Fatal("TryWrite wrote with direct writes off")
	}
	if _, err := w.Write([]byte("b")); err != nil {
		t.Fatal(err)
	}
	if b, err := readWithin(cli, 2, 5*time.Second); err != nil || string(b) != "ab" {
		t.Fatalf("read %q, %v: want what TryWrite kept, then the write", b, err)
	}
}

// deadlineConn counts the write deadlines set on it.
type deadlineConn struct {
	net.Conn
	deadlines []time.Time
}

func (c *deadlineConn) Write(b []byte) (int, error) { return len(b), nil }
func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.deadlines = append(c.deadlines, t)
	return nil
}

// Writes re-arm the write deadline once per half timeout at most, and
// keep it at least timeout ahead.
func TestWriteDeadlineRearmedRarely(t *testing.T) {
	dc := &deadlineConn{}
	const timeout = time.Minute
	c := Own(dc, timeout, false)
	for range 100 {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if len(dc.deadlines) != 1 {
		t.Fatalf("%d deadlines for 100 writes in a moment, want 1", len(dc.deadlines))
	}
	if ahead := time.Until(dc.deadlines[0]); ahead < timeout || ahead > timeout+timeout/2 {
		t.Fatalf("deadline %v ahead, want between timeout and 1.5 timeout", ahead)
	}
	c.deadline = time.Now().Add(timeout - time.Second) // as if half a timeout went by
	if _, err := c.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if len(dc.deadlines) != 2 {
		t.Fatalf("%d deadlines, want a second one once less than timeout was left", len(dc.deadlines))
	}
}
