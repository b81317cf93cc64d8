package hub

import (
	"github.com/caddy-realtime/realtime/internal/broker"
	"github.com/caddy-realtime/realtime/replay"
)

// Session is what a transport serves: a live subscription, the retained
// messages to send before its live ones, and the client's position. The
// transport's goroutine (or the runner of Run) is the only one to use it,
// apart from Signal; while that goroutine is idle, the hub's fan-out
// updates it for the messages it writes through the Sink.
//
// A message's id as the client sees it is its resume cursor. For a
// subscription to one channel that is just the message's id, the same
// for every subscriber, so the envelope's shared encodings are used. For
// several channels it is a cursor holding every channel's position,
// which differs per subscriber: only then is a message encoded per
// subscriber.
type Session struct {
	// live: one channel, nothing replayed left to skip and caught up, so
	// every live message is sent. Checked first on every delivery.
	live bool

	sub *subscriber
	// replay is sent first, in order.
	replay []*Envelope

	positions []replay.Position // one per channel, in subscription order
	// seen holds, per channel, ids of replayed messages that may also be
	// queued live (they reached the node between the subscription and
	// the replay read); emptied at the first live message not in it.
	seen map[string]map[string]struct{}
	// caughtUp[i] is set once a live stream-fed message after the
	// client's position in channel i went out: later ones follow it.
	caughtUp []bool

	// a single channel's position and flag, kept in the session itself so
	// that a delivery touches one object, not three
	onePos      [1]replay.Position
	oneCaughtUp [1]bool
}

// newSession builds the session of s, whose client is at positions
// (one per channel of s, in order; an empty ID means "no position"),
// with replayed envelopes to send first. A subscriber has one session,
// which it holds: a delivery then touches one object for both.
func newSession(s *subscriber, positions []replay.Position, replayed []*Envelope) *Session {
	ss := &s.session
	*ss = Session{sub: s, replay: replayed}
	if len(positions) == 1 {
		ss.onePos[0] = positions[0]
		ss.positions, ss.caughtUp = ss.onePos[:], ss.oneCaughtUp[:]
	} else {
		ss.positions, ss.caughtUp = positions, make([]bool, len(positions))
	}
	for _, e := range replayed {
		if ss.seen == nil {
			ss.seen = make(map[string]map[string]struct{})
		}
		set := ss.seen[e.Msg.Channel]
		if set == nil {
			set = make(map[string]struct{})
			ss.seen[e.Msg.Channel] = set
		}
		set[e.Msg.ID] = struct{}{}
	}
	return ss
}

// Multi reports whether ids are per-subscriber cursors.
func (ss *Session) Multi() bool { return len(ss.positions) > 1 }

// Next drains the live queue into buf, dropping messages the client
// already has (see Accept).
func (ss *Session) Next(buf []*Envelope) []*Envelope {
	start := len(buf)
	buf = ss.sub.drain(buf)
	n := start
	for _, e := range buf[start:] {
		if ss.Accept(e) {
			buf[n] = e
			n++
		}
	}
	clear(buf[n:])
	return buf[:n]
}

// Accept reports whether the live message e is to be sent: not if the
// replay sent it, nor if it is stream-fed and at or before the client's
// position (a node whose stream reader lags behind the node the client
// resumes from delivers those live after the resume).
func (ss *Session) Accept(e *Envelope) bool {
	if ss.live {
		return true
	}
	if ss.behind(e) {
		return false
	}
	if set := ss.seen[e.Msg.Channel]; set != nil {
		if _, dup := set[e.Msg.ID]; dup {
			return false
		}
		delete(ss.seen, e.Msg.Channel) // live order follows replay order
		if len(ss.seen) == 0 {
			ss.seen = nil
		}
	}
	ss.live = ss.seen == nil && len(ss.positions) <= 1 && (len(ss.positions) == 0 || ss.caughtUp[0])
	return true
}

// behind reports whether e is a stream-fed message at or before the
// client's position in its channel. Once a channel is caught up (a live
// message after the position went out, or the position is not a stream
// id), nothing of it is behind any more.
func (ss *Session) behind(e *Envelope) bool {
	if len(ss.positions) == 1 && ss.caughtUp[0] {
		return false // the common case, checked per message: keep it cheap
	}
	for i := range ss.positions {
		p := &ss.positions[i]
		if p.Channel != e.Msg.Channel {
			continue
		}
		switch {
		case ss.caughtUp[i]:
			return false
		case !broker.IsStreamID(p.ID):
			ss.caughtUp[i] = true
			return false
		case !broker.IsStreamID(e.Msg.ID):
			return false
		case broker.CompareStreamIDs(e.Msg.ID, p.ID) <= 0:
			return true
		}
		ss.caughtUp[i] = true
		return false
	}
	return false
}

// Advance moves the client's position past e and returns the id the
// client is to see for e: the message id for one channel, the encoded
// cursor for several.
func (ss *Session) Advance(e *Envelope) string {
	if len(ss.positions) <= 1 {
		if len(ss.positions) == 1 && e.Msg.ID != "" {
			ss.positions[0].ID = e.Msg.ID
		}
		return e.Msg.ID
	}
	for i := range ss.positions {
		if ss.positions[i].Channel == e.Msg.Channel {
			if e.Msg.ID != "" {
				ss.positions[i].ID = e.Msg.ID
			}
			break
		}
	}
	return replay.EncodeCursor(ss.positions)
}

// Cursor is the client's current position.
func (ss *Session) Cursor() string {
	if len(ss.positions) == 1 {
		return ss.positions[0].ID
	}
	return replay.EncodeCursor(ss.positions)
}

// Channels are the channels subscribed, in the order asked for.
func (ss *Session) Channels() []string { return ss.sub.channels }

// TakeReplay returns the retained messages to send before any live one,
// once: later calls return nothing.
func (ss *Session) TakeReplay() []*Envelope {
	r := ss.replay
	ss.replay = nil
	return r
}

// Delivered counts one message written to the client, for metrics.
func (ss *Session) Delivered(e *Envelope) {
	ss.sub.hub.opts.Observer.Delivered(ss.sub.transport, e, 1)
}

// Signals that wake a session's goroutine besides its messages; a
// transport may define its own from SignalTransport up.
const (
	// SignalHeartbeat: the stream has been idle for a heartbeat interval.
	SignalHeartbeat uint32 = 1 << iota
	// SignalShutdown: the server is shutting down or reloading.
	SignalShutdown
	// SignalGone: the client left.
	SignalGone
	// SignalTransport is the first signal free for transports.
	SignalTransport
)

// Signal sets signal bits and wakes the session's goroutine. It is safe
// to call from any goroutine.
func (ss *Session) Signal(bits uint32) { ss.sub.signal(bits) }

// TakeSignals returns the signals set since the last call, and clears
// them.
func (ss *Session) TakeSignals() uint32 { return ss.sub.takeSignals() }

// Ready is signalled when messages may be queued, a signal was sent, a
// sink left work unfinished, or the hub dropped the session. (Not with
// Run, which starts its own goroutine instead.)
func (ss *Session) Ready() <-chan struct{} { return ss.sub.notify }

// Done is closed when the hub dropped the session; Err says why.
func (ss *Session) Done() <-chan struct{} { return ss.sub.done }

// Err is why the hub dropped the session (ErrSlowConsumer, ErrHubClosed,
// ErrClosed), or nil.
func (ss *Session) Err() error { return ss.sub.failure() }

// Run serves the writing side of a connection without a goroutine of its
// own while it is idle. start writes what goes first, on the calling
// goroutine. From then on, whenever there is something to write (a
// message queued, a signal, a sink's unfinished write, the session
// dropped), a goroutine is started that calls step until nothing is left,
// arms sink (when not nil: the hub's fan-out then writes to the
// connection itself) and ends. When start fails or a step reports the
// end, finish runs once with the error, and no goroutine is started
// again. Run returns at once; wait blocks until finish has run and
// returns its error.
func (ss *Session) Run(sink Sink, start func() error, step func() (end bool, err error), finish func(error)) (wait func() error) {
	return ss.sub.serveWrites(sink, start, step, finish)
}

// Close ends the subscription: the hub forgets the session and releases
// its channels. It is safe to call more than once.
func (ss *Session) Close() { ss.sub.hub.unsubscribe(ss.sub) }
