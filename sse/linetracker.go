package sse

// LineTracker follows an SSE byte stream, however its writes are split,
// and tells whether the bytes so far end exactly at a line boundary: the
// place where a whole extra line (a heartbeat comment) can be spliced in
// without changing the events a client reads.
//
// SSE lines end with CRLF, LF or a lone CR. Because of that, the state
// after any write depends on the last byte of the stream alone:
//
//   - no byte yet: the start of the stream, a boundary;
//   - LF: a boundary, whether the LF ended a line on its own or
//     completed a CRLF;
//   - CR: not a boundary, yet. The line has ended, but the next byte may
//     be the LF of a CRLF. A line spliced in here would turn that LF into
//     an empty line of its own, which dispatches the pending event early
//     (an event with half its data, or one that should not exist). Once
//     the next byte is written the question settles by the rule for that
//     byte: LF makes a boundary after it; anything else means the CR was
//     a line end on its own and the stream is now in the middle of the
//     next line (or at another pending CR);
//   - anything else: the middle of a line.
//
// So an upstream that ends its lines with a lone CR gets no heartbeat
// while it stalls right after one; upstreams in practice use LF or CRLF
// and stall after the LF.
//
// One caveat belongs to the start: a client drops a byte order mark only
// when it opens the stream. A line spliced in before the upstream's first
// byte must therefore be followed by the upstream's bytes minus a leading
// BOM, which Writer does.
//
// The zero value is a tracker at the start of a stream. It does not
// allocate and is not safe for concurrent use.
type LineTracker struct {
	state lineState
}

type lineState uint8

const (
	stateStart lineState = iota // no byte yet
	stateLF                     // last byte LF: a boundary
	stateCR                     // last byte CR: an LF may follow
	stateMid                    // inside a line
)

// Write observes p, the next bytes of the stream.
func (t *LineTracker) Write(p []byte) {
	if len(p) == 0 {
		return
	}
	switch p[len(p)-1] {
	case '\n':
		t.state = stateLF
	case '\r':
		t.state = stateCR
	default:
		t.state = stateMid
	}
}

// AtBoundary reports whether the stream so far ends at a line boundary
// (or is empty), so that a line ending in LF can be written next without
// changing the meaning of anything before or after it.
func (t *LineTracker) AtBoundary() bool {
	return t.state == stateStart || t.state == stateLF
}

// AtStart reports whether no byte has been observed yet.
func (t *LineTracker) AtStart() bool { return t.state == stateStart }
