// Package ws serves the hub's WebSocket transport: one JSON text frame
// per message, a `subscribed` control frame once the subscription is
// live, pings every heartbeat, and publish frames from clients whose
// ticket allows it.
//
// Each connection has one writer (the serving goroutine) and one reader
// goroutine; messages are sent as gorilla PreparedMessages framed once per
// message for all connections.
package ws

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddy-realtime/realtime/hub"
	"github.com/gorilla/websocket"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
)

// IsUpgrade reports whether r asks for a WebSocket upgrade.
// IsUpgrade reports whether r asks for a WebSocket: an HTTP/1.1 upgrade,
// or an extended CONNECT over HTTP/2 or HTTP/3.
func IsUpgrade(r *http.Request) bool {
	return isExtendedConnect(r) || headerHasToken(r.Header, "Connection", "upgrade") &&
		strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
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

// writeBuffers is shared by all connections: an idle connection holds no
// write buffer.
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
// Unwrap, which http.ResponseController follows.
type hijackable struct{ http.ResponseWriter }

func (h hijackable) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(h.ResponseWriter).Hijack()
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
	Publish  PublishFunc
	Observer hub.DeliveryObserver
	Logger   *zap.Logger
	// OnUpgrade is called once the connection is upgraded (the root uses
	// it to register the connection so shutdown can close it).
	OnUpgrade func(*websocket.Conn)
	// Detach, when set, lets the connection leave its HTTP request once
	// upgraded: Serve calls Detach with the function that serves the
	// connection and returns ErrDetached. The caller runs that function
	// on a goroutine of its own (and cleans up after it) and returns
	// from its handler, which frees the request goroutine's deep stack
	// and the server's per-request state. ctx must then outlive the
	// request.
	Detach func(serve func() error)
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
// drops its subscriber, or ctx ends. The subscribed frame goes first (the
// subscription is live), then the replay, then live messages.
func Serve(ctx context.Context, w http.ResponseWriter, r *http.Request, ss *hub.Session, opts Options) error {
	var conn *websocket.Conn
	var err error
	if isExtendedConnect(r) {
		conn, err = upgradeStream(w, r)
	} else {
		conn, err = upgrader.Upgrade(hijackable{w}, r, nil)
	}
	if err != nil {
		return err // the upgrader has answered the client
	}
	if opts.OnUpgrade != nil {
		opts.OnUpgrade(conn)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	c := &connection{
		conn:    conn,
		opts:    opts,
		replies: make(chan *control, 8),
		closed:  make(chan struct{}),
		readErr: make(chan struct{}),
	}
	if opts.Detach != nil && !isExtendedConnect(r) {
		// a hijacked connection no longer needs its request; a stream
		// of an HTTP/2 connection (RFC 8441) ends with it
		opts.Detach(func() error {
			defer conn.Close()
			return c.serve(ctx, ss)
		})
		return ErrDetached
	}
	defer conn.Close()
	return c.serve(ctx, ss)
}

// serve runs the connection: a reader goroutine, and the writer on the
// calling one.
func (c *connection) serve(ctx context.Context, ss *hub.Session) error {
	conn := c.conn
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		c.readLoop(ctx)
	}()
	err := c.writeLoop(ctx, ss)
	close(c.closed)
	_ = conn.Close() // ends the reader
	<-readDone
	return err
}

type nopObserver struct{}

func (nopObserver) Delivered(string, *hub.Envelope) {}

type connection struct {
	conn    *websocket.Conn
	opts    Options
	replies chan *control // from the reader to the writer
	closed  chan struct{} // the writer has stopped

	buf      []byte // per-connection frames (multi-channel sessions)
	closeMu  sync.Mutex
	closeMsg []byte        // close frame the reader asked the writer to send
	readErr  chan struct{} // closed when the reader stops
}

func (c *connection) writeLoop(ctx context.Context, ss *hub.Session) error {
	conn := c.conn
	s := ss.Sub
	if err := c.writeJSON(control{Type: "subscribed", Channels: s.Channels, LastEventID: ss.Cursor()}); err != nil {
		return err
	}
	for _, e := range ss.Replay {
		if err := c.writeEnvelope(ss, e); err != nil {
			return err
		}
	}
	ss.Replay = nil
	var ping <-chan time.Time
	if c.opts.Heartbeat > 0 {
		t := time.NewTicker(c.opts.Heartbeat)
		defer t.Stop()
		ping = t.C
	}
	var pending []*hub.Envelope
	for {
		select {
		case <-ctx.Done():
			c.sendClose(websocket.CloseGoingAway, "server shutting down")
			return nil
		case <-s.Done():
			err := s.Err()
			if errors.Is(err, hub.ErrSlowConsumer) {
				c.sendClose(websocket.CloseTryAgainLater, "slow consumer: resume with last_event_id")
			} else {
				c.sendClose(websocket.CloseGoingAway, "server shutting down")
			}
			return err
		case <-c.readErr:
			c.closeMu.Lock()
			msg := c.closeMsg
			c.closeMu.Unlock()
			if msg != nil {
				_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(writeWait))
				lingerClose(conn)
			}
			return nil
		case rep := <-c.replies:
			if err := c.writeJSON(*rep); err != nil {
				return err
			}
		case <-ping:
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
				return err
			}
		case <-s.Ready():
			pending = ss.Next(pending[:0])
			for _, e := range pending {
				if err := c.writeEnvelope(ss, e); err != nil {
					return err
				}
			}
			clear(pending)
		}
	}
}

// writeEnvelope sends e as one text frame: the frame prepared once for
// every connection, or for a multi-channel session one carrying its own
// cursor as id.
func (c *connection) writeEnvelope(ss *hub.Session, e *hub.Envelope) error {
	id := ss.Advance(e)
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
	if ss.Multi() {
		c.buf = hub.AppendJSONWithID(c.buf[:0], e.Msg, id)
		if err := c.conn.WriteMessage(websocket.TextMessage, c.buf); err != nil {
			return err
		}
	} else {
		pm, err := e.WebSocket()
		if err != nil {
			return err
		}
		if err := c.conn.WritePreparedMessage(pm); err != nil {
			return err
		}
	}
	c.opts.Observer.Delivered("ws", e)
	return nil
}

func (c *connection) writeJSON(v control) error {
	b, _ := json.Marshal(v)
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
	return c.conn.WriteMessage(websocket.TextMessage, b)
}

func (c *connection) sendClose(code int, reason string) {
	_ = c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(writeWait))
}

// readLoop reads client frames: pongs keep the connection alive, publish
// frames are handed to Options.Publish, anything else gets an error frame
// or a close code.
func (c *connection) readLoop(ctx context.Context) {
	defer close(c.readErr)
	conn := c.conn
	if hb := c.opts.Heartbeat; hb > 0 {
		_ = conn.SetReadDeadline(time.Now().Add(2*hb + writeWait))
		conn.SetPongHandler(func(string) error {
			return conn.SetReadDeadline(time.Now().Add(2*hb + writeWait))
		})
	}
	limit := c.opts.MessageSize
	if limit <= 0 {
		limit = 1 << 30
	}
	var rl *rate.Limiter
	if c.opts.FrameRate > 0 {
		rl = rate.NewLimiter(rate.Limit(c.opts.FrameRate), max(c.opts.FrameBurst, 1))
	}
	for {
		typ, rd, err := conn.NextReader()
		if err != nil {
			return
		}
		if rl != nil && !rl.Allow() {
			c.closeWith(websocket.ClosePolicyViolation, fmt.Sprintf("too many frames: at most %g per second", c.opts.FrameRate))
			c.limited("frame rate")
			return
		}
		if typ != websocket.TextMessage {
			c.closeWith(websocket.CloseUnsupportedData, "binary frames are not supported: send JSON text frames")
			return
		}
		data, err := io.ReadAll(io.LimitReader(rd, limit+1))
		if err != nil {
			return
		}
		if int64(len(data)) > limit {
			c.closeWith(websocket.CloseMessageTooBig, fmt.Sprintf("frame exceeds message_size (%d bytes)", limit))
			c.limited("frame size")
			return
		}
		c.handle(ctx, data)
	}
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

func (c *connection) closeWith(code int, reason string) {
	c.closeMu.Lock()
	c.closeMsg = websocket.FormatCloseMessage(code, reason)
	c.closeMu.Unlock()
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
	// waiting here holds back reading the client's next frames: a client
	// that sends faster than it reads replies is slowed down by TCP, and
	// one that sends too fast is closed by the frame rate limit
	select {
	case c.replies <- &v:
	case <-c.closed:
	}
}
