// Package ws serves the hub's WebSocket transport: one JSON text frame
// per message, a `subscribed` control frame once the subscription is
// live, pings every heartbeat, and publish frames from clients whose
// ticket allows it.
//
// gorilla/websocket reads the connection; every frame the server sends is
// written by this package's framer through the stream writer, so that each
// message's frame is built once and the same bytes go to every
// connection, and so that, on a plain TCP connection, the hub's fan-out
// can write them to an idle connection's socket itself (see hub.Sink).
package ws

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-realtime/realtime/internal/hub"
	"github.com/caddy-realtime/realtime/internal/rawconn"
	"github.com/caddy-realtime/realtime/internal/stream"
	"github.com/gorilla/websocket"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// IsUpgrade reports whether r asks for a WebSocket: an HTTP/1.1 upgrade
// whose Upgrade token list names websocket (in any case, among other
// protocols too), or an extended CONNECT over HTTP/2 or HTTP/3.
func IsUpgrade(r *http.Request) bool {
	return isExtendedConnect(r) || headerHasToken(r.Header, "Connection", "upgrade") &&
		headerHasToken(r.Header, "Upgrade", "websocket")
}

// SwitchesProtocol reports whether r asks to switch protocols in any way
// a proxy would pass on: an HTTP/1.1 upgrade to any protocol (Connection:
// upgrade with an Upgrade header), or a CONNECT, extended or not. It
// covers every IsUpgrade request.
func SwitchesProtocol(r *http.Request) bool {
	return r.Method == http.MethodConnect ||
		headerHasToken(r.Header, "Connection", "upgrade") && len(r.Header.Values("Upgrade")) > 0
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

// writeBuffers is gorilla's write buffer pool; it never writes frames
// here (see quietConn), so the pool stays empty.
var writeBuffers sync.Pool

// upgrader checks nothing itself: the Origin and ticket checks run before.
var upgrader = websocket.Upgrader{
	// a small read buffer of the connection's own rather than the HTTP
	// server's 4 KB one: clients send little (pongs, the odd publish),
	// and frames larger than the buffer are read through it
	ReadBufferSize:  readBufferSize,
	WriteBufferPool: &writeBuffers,
	CheckOrigin:     func(*http.Request) bool { return true },
}

// hijackable gives gorilla's Upgrader the http.Hijacker it wants on the
// writer itself: Caddy's wrapped writers expose Hijack only through
// Unwrap, which http.ResponseController follows. The connection is owned
// by a rawconn.Conn from the start, and handed over as a quietConn.
type hijackable struct {
	http.ResponseWriter
	direct bool
}

func (h hijackable) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &quietConn{Conn: rawconn.Own(conn, writeWait, h.direct)}, brw, nil
}

// quietConn is the connection as gorilla sees it: once the handshake is
// written, gorilla's own writes are not sent, so that nothing is written
// to the connection behind this package's writer. The pong and close
// answers gorilla sends by default are replaced by the handlers set in
// readLoop; what is left is the close frame gorilla writes when a client
// breaks the protocol (1002, with the reason), which is handed to
// onClose for the writer to send.
type quietConn struct {
	*rawconn.Conn
	quiet   atomic.Bool
	onClose func(body []byte) // set before the connection is shared
}

func (c *quietConn) Write(p []byte) (int, error) {
	if !c.quiet.Load() {
		return c.Conn.Write(p)
	}
	// a server frame is unmasked; a control frame's body is at most 125
	// bytes, so its length is in the second byte
	if len(p) >= 2 && p[0] == 0x80|opClose && int(p[1]) == len(p)-2 && c.onClose != nil {
		c.onClose(bytes.Clone(p[2:]))
	}
	return len(p), nil
}

// PublishFunc publishes a client's message and returns its id. Its error
// text is sent back to the client in an error frame.
type PublishFunc func(ctx context.Context, channel, event string, data []byte) (string, error)

// Options configures one hub WebSocket connection.
type Options struct {
	// Heartbeat is the ping interval; a peer that answers no ping within
	// two intervals is closed. Zero or less: no pings.
	Heartbeat time.Duration
	// MessageSize is the largest inbound frame; a larger one closes the
	// connection with 1009.
	MessageSize int64
	// FrameRate bounds inbound frames per second (with a burst of
	// FrameBurst); a client sending faster is closed with 1008. Zero: no
	// bound.
	FrameRate  float64
	FrameBurst int
	// OnLimit is called when a connection is closed for a limit (frame
	// size or rate), for metrics.
	OnLimit func()
	// Publish handles publish frames; nil refuses them.
	Publish PublishFunc
	Logger  *zap.Logger
	// OnUpgrade is called once the connection is upgraded, with what
	// closes it (the root tracks connections, to close those that
	// outlive a shutdown).
	OnUpgrade func(io.Closer)
	// Detach, when set, lets the connection leave its HTTP request once
	// upgraded: Serve calls Detach with the function that serves the
	// connection and returns ErrDetached. The caller runs that function
	// on a goroutine of its own (and cleans up after it) and returns
	// from its handler, which frees the request goroutine's deep stack
	// and the server's per-request state. ctx must then outlive the
	// request.
	Detach func(serve func() error)
	// DirectWrites lets the hub's fan-out write to an idle connection's
	// socket itself (see rawconn).
	DirectWrites bool
}

const writeWait = 10 * time.Second

const readBufferSize = 512

// ErrDetached is what Serve returns once it handed the connection over
// to Options.Detach.
var ErrDetached = errors.New("websocket detached from its request")

// control is a frame the connection sends about itself.
type control struct {
	Type     string   `json:"type"`
	Channels []string `json:"channels,omitempty"`
	// LastEventID, in the subscribed frame, is the position the
	// subscription starts from: a client that drops before the first
	// message resumes from it.
	LastEventID string `json:"last_event_id,omitempty"`
	ID          string `json:"id,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// inbound is a frame a client sends.
type inbound struct {
	Type    string  `json:"type"`
	Channel string  `json:"channel"`
	Event   string  `json:"event"`
	Data    *string `json:"data"`
}

// Serve upgrades r and serves session ss until the client leaves, the hub
// drops the session, or ctx ends. The subscribed frame goes first (the
// subscription is live), then the replay, then live messages.
func Serve(ctx context.Context, w http.ResponseWriter, r *http.Request, ss *hub.Session, opts Options) error {
	var conn *websocket.Conn
	var err error
	if isExtendedConnect(r) {
		conn, err = upgradeStream(w, r)
	} else {
		conn, err = upgrader.Upgrade(hijackable{w, opts.DirectWrites}, r, nil)
	}
	if err != nil {
		return err // the upgrader has answered the client
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	qc := conn.NetConn().(*quietConn)
	c := &connection{conn: conn, ss: ss, opts: opts}
	qc.onClose = c.closeWith
	qc.quiet.Store(true)
	c.w = stream.New(ss, c, stream.Frames(qc.Conn), stream.Options{
		Heartbeat:         opts.Heartbeat,
		HeartbeatWhenBusy: true, // a ping checks the client is there
		Shutdown:          ctx,
	})
	if opts.OnUpgrade != nil {
		opts.OnUpgrade(qc)
	}
	serve := func() error {
		return c.w.Run(func() { c.readLoop(ctx) }, func(error) {
			if c.lingerAfter {
				lingerClose(conn)
			}
			_ = conn.Close() // ends the reader
		})
	}
	if opts.Detach != nil && !isExtendedConnect(r) {
		// a hijacked connection no longer needs its request; a stream
		// of an HTTP/2 connection (RFC 8441) ends with it
		opts.Detach(serve)
		return ErrDetached
	}
	return serve()
}

// CloseDisconnected is the close code of a subscription the hub ended
// for good (the admin API's disconnect): the client is not to reconnect
// on its own, as with the realtime.closed event of SSE and long-poll.
const CloseDisconnected = 4000

// Signals of a connection's session, besides the hub's.
const (
	// sigOutbox: the reader queued frames (replies, pongs).
	sigOutbox = hub.SignalTransport << iota
)

// maxOutbox bounds the frames the reader may queue for a writer that
// cannot send them (a client that sends but does not read).
const maxOutbox = 256 << 10

// connection is one hub WebSocket: its reader, and its wire format for
// the stream writer (stream.Framer).
type connection struct {
	w    *stream.Writer
	ss   *hub.Session
	opts Options
	conn *websocket.Conn // for reading only
	// frames bounds inbound frames, control frames included (nil: no
	// bound); used by the reader only
	frames *rate.Limiter

	json []byte // a multi-channel message's JSON, reused
	// lingerAfter: the writer closed with a reason the client has not
	// answered yet (set and read by the writer only)
	lingerAfter bool

	mu         sync.Mutex
	outbox     []byte // frames from the reader for the writer to send
	closeMsg   []byte // close payload the reader asked the writer to send
	peerClosed bool   // closeMsg answers the client's own close
}

// frame is a message as a text frame carrying its JSON form, built once
// for every connection.
var frame = hub.NewEncoding(func(e *hub.Envelope) []byte { return appendFrame(nil, opText, e.JSON()) })

// Open writes the subscribed frame: the subscription is live.
func (c *connection) Open(buf []byte, _ bool) []byte {
	return appendControl(buf, control{Type: "subscribed", Channels: c.ss.Channels(), LastEventID: c.ss.Cursor()})
}

// Message appends e as one text frame: the frame built once for every
// connection, or for a multi-channel session one carrying its own cursor
// as id.
func (c *connection) Message(buf []byte, e *hub.Envelope, cursor string) []byte {
	if cursor == "" {
		return append(buf, e.Encoded(frame)...)
	}
	c.json = hub.AppendJSON(c.json[:0], e.Msg, cursor)
	return appendFrame(buf, opText, c.json)
}

// Shared is e's frame, shared by every connection.
func (c *connection) Shared(e *hub.Envelope) []byte { return e.Encoded(frame) }

// Interrupt ends the connection when the reader stopped (answering the
// client's close, or closing for a broken limit) or the hub dropped the
// session.
func (c *connection) Interrupt(buf []byte, sig uint32, dropped error) ([]byte, bool, error) {
	switch {
	case sig&hub.SignalGone != 0:
		c.mu.Lock()
		msg, peer := c.closeMsg, c.peerClosed
		c.mu.Unlock()
		if msg == nil {
			return buf, true, nil
		}
		buf = appendFrame(buf, opClose, msg)
		c.lingerAfter = !peer // once the close frame is written
		return buf, true, nil
	case errors.Is(dropped, hub.ErrSlowConsumer):
		return appendClose(buf, websocket.CloseTryAgainLater, "slow consumer: resume with last_event_id"), true, dropped
	case errors.Is(dropped, hub.ErrDisconnected):
		return appendClose(buf, CloseDisconnected, "disconnected"), true, dropped
	case dropped != nil:
		return appendClose(buf, websocket.CloseGoingAway, "server shutting down"), true, dropped
	}
	return buf, false, nil
}

// Control appends replies, pongs and pings, or the close frame of a
// shutdown.
func (c *connection) Control(buf []byte, sig uint32) ([]byte, bool) {
	if sig&sigOutbox != 0 {
		c.mu.Lock()
		buf = append(buf, c.outbox...)
		c.outbox = nil
		c.mu.Unlock()
	}
	if sig&hub.SignalHeartbeat != 0 {
		buf = appendFrame(buf, opPing, nil)
	}
	if sig&hub.SignalShutdown != 0 {
		return appendClose(buf, websocket.CloseGoingAway, "server shutting down"), true
	}
	return buf, false
}

func appendControl(buf []byte, v control) []byte {
	b, _ := json.Marshal(v)
	return appendFrame(buf, opText, b)
}

func appendClose(buf []byte, code int, reason string) []byte {
	return appendFrame(buf, opClose, websocket.FormatCloseMessage(code, reason))
}

// readLoop reads client frames: pongs keep the connection alive, publish
// frames are handed to Options.Publish, anything else gets an error frame
// or a close code.
func (c *connection) readLoop(ctx context.Context) {
	conn := c.conn
	c.setHandlers()
	limit := c.opts.MessageSize
	if limit <= 0 {
		limit = 1 << 30
	}
	for {
		typ, rd, err := conn.NextReader()
		if err != nil {
			return
		}
		if c.overFrameRate() {
			return
		}
		if typ != websocket.TextMessage {
			c.closeWith(websocket.FormatCloseMessage(websocket.CloseUnsupportedData, "binary frames are not supported: send JSON text frames"))
			return
		}
		data, err := io.ReadAll(io.LimitReader(rd, limit+1))
		if err != nil {
			return
		}
		if int64(len(data)) > limit {
			c.closeWith(websocket.FormatCloseMessage(websocket.CloseMessageTooBig, fmt.Sprintf("frame exceeds message_size (%d bytes)", limit)))
			c.limited("frame size")
			return
		}
		c.handle(ctx, data)
	}
}

// errFrameRate ends the read loop from a control frame handler.
var errFrameRate = errors.New("over the frame rate")

// overFrameRate counts one inbound frame against the frame rate; over
// it, the connection is closed with 1008 and it reports true.
func (c *connection) overFrameRate() bool {
	if c.frames == nil || c.frames.Allow() {
		return false
	}
	c.closeWith(websocket.FormatCloseMessage(websocket.ClosePolicyViolation, fmt.Sprintf("too many frames: at most %g per second", c.opts.FrameRate)))
	c.limited("frame rate")
	return true
}

// setHandlers makes gorilla hand pings and closes to the writer (it
// answers them itself by default; here every answer goes through the
// writer, see quietConn), and pongs extend the read deadline. Pings and
// pongs, which gorilla reads inside NextReader, count against the frame
// rate like data frames: a ping flood is closed with 1008, not answered.
func (c *connection) setHandlers() {
	conn := c.conn
	if c.opts.FrameRate > 0 {
		c.frames = rate.NewLimiter(rate.Limit(c.opts.FrameRate), max(c.opts.FrameBurst, 1))
	}
	conn.SetPingHandler(func(data string) error {
		if c.overFrameRate() {
			return errFrameRate
		}
		c.queue(opPong, []byte(data))
		return nil
	})
	conn.SetCloseHandler(func(code int, _ string) error {
		var echo []byte
		if code != websocket.CloseNoStatusReceived {
			echo = websocket.FormatCloseMessage(code, "")
		}
		c.mu.Lock()
		if c.closeMsg == nil {
			c.closeMsg, c.peerClosed = echo, true
			if echo == nil {
				c.closeMsg = []byte{}
			}
		}
		c.mu.Unlock()
		return nil
	})
	if hb := c.opts.Heartbeat; hb > 0 {
		_ = conn.SetReadDeadline(time.Now().Add(2*hb + writeWait))
	}
	conn.SetPongHandler(func(string) error {
		if c.overFrameRate() {
			return errFrameRate
		}
		if hb := c.opts.Heartbeat; hb > 0 {
			return conn.SetReadDeadline(time.Now().Add(2*hb + writeWait))
		}
		return nil
	})
}

// lingerClose reads (bounded) what the peer still sends after we closed
// with a reason, until it closes too: closing the socket with unread
// bytes would reset the connection and lose our close frame.
func lingerClose(conn *websocket.Conn) {
	nc := conn.NetConn()
	_ = nc.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(nc, 1<<20))
}

// limited logs and counts a connection closed for a limit.
func (c *connection) limited(what string) {
	c.opts.Logger.Info("closing websocket: over limit", zap.String("limit", what))
	if c.opts.OnLimit != nil {
		c.opts.OnLimit()
	}
}

func (c *connection) closeWith(body []byte) {
	c.mu.Lock()
	if c.closeMsg == nil {
		c.closeMsg = body
	}
	c.mu.Unlock()
}

// queue hands a frame to the writer. A client that keeps sending while
// not reading what it is sent fills the outbox: it is then closed.
func (c *connection) queue(opcode byte, payload []byte) {
	c.mu.Lock()
	full := len(c.outbox) > maxOutbox
	if !full {
		c.outbox = appendFrame(c.outbox, opcode, payload)
	}
	c.mu.Unlock()
	if full {
		_ = c.conn.Close() // the reader stops; the writer closes
		return
	}
	c.ss.Signal(sigOutbox)
}

func (c *connection) handle(ctx context.Context, data []byte) {
	var in inbound
	if err := json.Unmarshal(data, &in); err != nil {
		c.reply(control{Type: "error", Reason: "invalid JSON frame"})
		return
	}
	switch in.Type {
	case "publish":
		if c.opts.Publish == nil {
			c.reply(control{Type: "error", Reason: "publishing is not allowed on this connection"})
			return
		}
		if in.Data == nil {
			c.reply(control{Type: "error", Reason: "publish frame needs data"})
			return
		}
		id, err := c.opts.Publish(ctx, in.Channel, in.Event, []byte(*in.Data))
		if err != nil {
			c.reply(control{Type: "error", Reason: err.Error()})
			return
		}
		c.reply(control{Type: "ack", ID: id})
	case "ping":
		c.reply(control{Type: "pong"})
	default:
		c.reply(control{Type: "error", Reason: fmt.Sprintf("unknown frame type %q", in.Type)})
	}
}

// reply queues a control frame for the writer.
func (c *connection) reply(v control) {
	b, _ := json.Marshal(v)
	c.queue(opText, b)
}
