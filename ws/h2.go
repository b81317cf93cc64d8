package ws

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddy-realtime/realtime/internal/rawconn"
	"github.com/gorilla/websocket"
)

// WebSocket over HTTP/2 (RFC 8441) and HTTP/3 (RFC 9220): the client
// sends an extended CONNECT with the :protocol pseudo-header "websocket",
// the server answers 200, and the stream's request and response bodies
// then carry WebSocket frames. There is no Sec-WebSocket-Key handshake.
//
// gorilla/websocket only speaks HTTP/1.1 upgrades, so the stream is given
// to its Upgrader as a hijacked connection: streamConn reads the request
// body, writes (and flushes) the response body, and swallows the HTTP/1.1
// handshake answer the Upgrader writes first.
//
// Go's HTTP/2 server advertises extended CONNECT only when started with
// GODEBUG=http2xconnect=1, so browsers offer it only then.

// isExtendedConnect reports whether r is a WebSocket extended CONNECT.
func isExtendedConnect(r *http.Request) bool {
	if r.Method != http.MethodConnect {
		return false
	}
	return strings.EqualFold(r.Header.Get(":protocol"), "websocket") || (r.ProtoMajor == 3 && strings.EqualFold(r.Proto, "websocket"))
}

// upgradeStream upgrades an extended CONNECT request.
func upgradeStream(w http.ResponseWriter, r *http.Request) (*websocket.Conn, error) {
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return nil, err
	}
	sc := &streamConn{body: r.Body, w: w, rc: rc, handshake: true}
	// the request gorilla expects of an HTTP/1.1 upgrade
	r2 := r.Clone(r.Context())
	r2.Method = http.MethodGet
	r2.Header.Del(":protocol")
	r2.Header.Set("Connection", "Upgrade")
	r2.Header.Set("Upgrade", "websocket")
	r2.Header.Set("Sec-Websocket-Version", "13")
	r2.Header.Set("Sec-Websocket-Key", "AAAAAAAAAAAAAAAAAAAAAA==")
	return upgrader.Upgrade(streamHijacker{w, sc}, r2, nil)
}

// streamHijacker hands gorilla the stream as a connection.
type streamHijacker struct {
	http.ResponseWriter
	conn *streamConn
}

func (h streamHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return &quietConn{Conn: rawconn.Own(h.conn, writeWait, false)}, bufio.NewReadWriter(bufio.NewReader(h.conn), bufio.NewWriter(h.conn)), nil
}

// streamConn is an HTTP/2 or HTTP/3 stream as a net.Conn.
type streamConn struct {
	body io.ReadCloser
	w    http.ResponseWriter
	rc   *http.ResponseController

	mu        sync.Mutex
	handshake bool // the next bytes written are the HTTP/1.1 answer: drop them
}

var errBadHandshake = errors.New("unexpected websocket handshake answer")

func (c *streamConn) Read(p []byte) (int, error) { return c.body.Read(p) }

func (c *streamConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.handshake {
		// gorilla writes its whole answer in one Write
		if !bytes.HasPrefix(p, []byte("HTTP/1.1 101")) || !bytes.HasSuffix(p, []byte("\r\n\r\n")) {
			return 0, errBadHandshake
		}
		c.handshake = false
		return len(p), nil
	}
	n, err := c.w.Write(p)
	if err != nil {
		return n, err
	}
	return n, c.rc.Flush()
}

func (c *streamConn) Close() error         { return c.body.Close() }
func (c *streamConn) LocalAddr() net.Addr  { return streamAddr{} }
func (c *streamConn) RemoteAddr() net.Addr { return streamAddr{} }
func (c *streamConn) SetDeadline(t time.Time) error {
	_ = c.rc.SetReadDeadline(t)
	return c.rc.SetWriteDeadline(t)
}
func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.rc.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.rc.SetWriteDeadline(t) }

type streamAddr struct{}

func (streamAddr) Network() string { return "stream" }
func (streamAddr) String() string  { return "stream" }
