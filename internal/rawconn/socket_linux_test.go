//go:build linux

package rawconn

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

func testCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsOverSocket returns a server TLS connection over a Socket, owned
// as the hub owns one, and the client's end (whose receive buffer is
// small, so that the server's socket fills soon).
func tlsOverSocket(t *testing.T) (*Conn, *Socket, *tls.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
	}}
	raw, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	accepted, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	sock, ok := WrapSocket(accepted).(*Socket)
	if !ok {
		t.Fatalf("WrapSocket(%T) is no Socket", accepted)
	}
	srv := tls.Server(sock, &tls.Config{Certificates: []tls.Certificate{testCert(t)}})
	cli := tls.Client(raw, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test's own server
	errc := make(chan error, 1)
	go func() { errc <- cli.Handshake() }()
	if err := srv.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	w := Own(srv, 5*time.Second, true)
	t.Cleanup(func() { w.Close(); cli.Close() })
	if !w.Direct() {
		t.Fatal("TLS over a Socket should be written by the fan-out")
	}
	return w, sock, cli
}

// within fails the test when f does not return within d: the fan-out's
// writes must never wait for a client.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

func message(i int) []byte {
	return []byte(fmt.Sprintf("%06d:%s\n", i, bytes.Repeat([]byte{'a' + byte(i%26)}, 1000)))
}

// The fan-out writes to a client that does not read until the socket
// is full, never waiting; the goroutine's write then sends the rest,
// and the client reads every message once, in order.
func TestSocketFanOutNeverWaits(t *testing.T) {
	w, sock, cli := tlsOverSocket(t)
	sent := 0
	within(t, 10*time.Second, "filling the socket", func() {
		for sent < 100_000 {
			ok := w.TryWrite(message(sent))
			sent++
			if !ok {
				return
			}
		}
	})
	if !sock.Pending() {
		t.Fatalf("the socket took %d messages without filling", sent)
	}
	// the stream's goroutine: what the socket did not take, then more
	flushed := make(chan error, 1)
	go func() {
		_, err := w.Write(append(message(sent), message(sent+1)...))
		flushed <- err
	}()
	want := sent + 2
	r := bytes.NewBuffer(nil)
	_ = cli.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < want; i++ {
		for !bytes.Contains(r.Bytes(), []byte{'\n'}) {
			buf := make([]byte, 32<<10)
			n, err := cli.Read(buf)
			if err != nil {
				t.Fatalf("message %d of %d: %v", i, want, err)
			}
			r.Write(buf[:n])
		}
		line, _ := r.ReadBytes('\n')
		if !bytes.Equal(line, message(i)) {
			t.Fatalf("message %d: got %.20q", i, line)
		}
	}
	if err := <-flushed; err != nil {
		t.Fatalf("the goroutine's write: %v", err)
	}
	if sock.Pending() {
		t.Fatal("bytes left after the goroutine's write")
	}
	// idle again: the next message goes out from the fan-out at once
	if !w.TryWrite(message(want)) {
		t.Fatal("a small message to an idle socket should go out at once")
	}
	line, err := io.ReadAll(io.LimitReader(cli, int64(len(message(want)))))
	if err != nil || !bytes.Equal(line, message(want)) {
		t.Fatalf("after the flush: %.20q, %v", line, err)
	}
}

// A message larger than one record is left whole to the goroutine.
func TestSocketLargeMessageGoesToGoroutine(t *testing.T) {
	w, sock, cli := tlsOverSocket(t)
	big := bytes.Repeat([]byte("x"), maxSealed+1)
	if w.TryWrite(big) {
		t.Fatal("a message over maxSealed went out from the fan-out")
	}
	if sock.Pending() {
		t.Fatal("the fan-out wrote part of a message over maxSealed")
	}
	errc := make(chan error, 1)
	go func() { _, err := w.Write(nil); errc <- err }()
	got := make([]byte, len(big))
	_ = cli.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(cli, got); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("read %d bytes: %v", len(got), err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// Records the TLS layer writes by itself while its client does not read
// are bounded: past maxPending, the connection breaks, and nothing is
// written after the record left out (the client sees the stream end,
// not a corrupt record).
func TestSocketBacklogBounded(t *testing.T) {
	w, sock, cli := tlsOverSocket(t)
	within(t, 10*time.Second, "filling the socket", func() {
		for i := 0; i < 100_000 && w.TryWrite(message(i)); i++ {
		}
	})
	var err error
	within(t, 10*time.Second, "writing past the bound", func() {
		for i := 0; i < 1000 && err == nil; i++ {
			_, err = w.sealed.Write(message(i)) // as crypto/tls's own records
		}
	})
	if !errors.Is(err, errBacklog) {
		t.Fatalf("writes past maxPending: %v, want errBacklog", err)
	}
	sock.mu.Lock()
	held := len(sock.pending)
	sock.mu.Unlock()
	if held > maxPending+maxSealed+1024 {
		t.Fatalf("the socket holds %d bytes, bound %d", held, maxPending)
	}
	// crypto/tls keeps the error: every later write fails, the
	// goroutine's too, and the stream ends
	if _, err := w.sealed.Write(message(0)); err == nil {
		t.Fatal("a write succeeded on a broken connection")
	}
	// the client reads again, what was kept goes out; then Close sends
	// TLS's close alert, numbered after the refused record, unless the
	// Socket refuses it too
	read := make(chan error, 1)
	go func() {
		_ = cli.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.Copy(io.Discard, cli)
		read <- err
	}()
	if err := sock.Flush(); err != nil {
		t.Fatalf("flushing what was kept: %v", err)
	}
	if _, err := sock.Write([]byte("after")); !errors.Is(err, errBacklog) {
		t.Fatalf("a write after a refused one, with nothing kept: %v, want errBacklog", err)
	}
	_ = w.Close()
	if err := <-read; err != nil && strings.Contains(err.Error(), "bad record MAC") {
		t.Fatalf("the client read a record out of sequence: %v", err)
	}
}

// Once closed, a Socket writes nothing to its descriptor number, which
// the system may have handed to another connection.
func TestSocketClosedWritesNothing(t *testing.T) {
	w, sock, _ := tlsOverSocket(t)
	fd := sock.fd
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, cli, srvFD := closeAndReuse(t, ln, w.Close)
	if srvFD != fd {
		t.Skipf("the descriptor %d was not reused (got %d)", fd, srvFD)
	}
	if _, err := sock.Write([]byte("leak")); err == nil {
		t.Fatal("a write to a closed Socket succeeded")
	}
	if w.TryWrite([]byte("leak")) {
		t.Fatal("the fan-out wrote to a closed connection")
	}
	if b, err := readWithin(cli, 1, 100*time.Millisecond); err == nil {
		t.Fatalf("another connection got %q", b)
	}
}

// Until the hub owns its TLS connection, a Socket is its TCP connection:
// writes wait for the socket as they do without the wrapper.
func TestSocketNotOwnedPassesThrough(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv, cli := tcpPair(t, ln)
	sock := WrapSocket(srv).(*Socket)
	if _, err := sock.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if b, err := readWithin(cli, 5, 5*time.Second); err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v", b, err)
	}
	// a plain connection (no TLS) over a Socket keeps the direct path
	w := Own(sock, time.Second, true)
	if !w.Direct() || w.sock != nil {
		t.Fatalf("a Socket without TLS: direct %v, sealed %v", w.Direct(), w.sock != nil)
	}
	if !w.TryWrite([]byte("world")) {
		t.Fatal("a small write to an idle socket should go out at once")
	}
	if b, err := readWithin(cli, 5, 5*time.Second); err != nil || string(b) != "world" {
		t.Fatalf("read %q, %v", b, err)
	}
}
