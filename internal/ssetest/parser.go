// Package ssetest reads Server-Sent Events the way a browser's
// EventSource does, for tests: what a client makes of a stream the module
// writes.
package ssetest

import (
	"bufio"
	"bytes"
	"io"
	"math"
	"time"
	"unicode/utf8"
)

// Event is one event dispatched by a Parser, as a browser's EventSource
// would hand it to a listener.
type Event struct {
	// ID is the stream's last event ID when the event was dispatched
	// (MessageEvent.lastEventId): it carries over from earlier events
	// until an id field changes it.
	ID string
	// Event is the event type: "message" unless an event field set another.
	Event string
	// Data is the event's data lines joined with LF.
	Data string
}

// Parser reads events from an SSE stream by the WHATWG EventSource
// parsing rules (HTML Living Standard, "Server-sent events", 9.2.6):
// the stream is decoded as UTF-8 with replacement of invalid bytes, one
// leading byte order mark is dropped, lines end with CRLF, LF or CR,
// lines starting with a colon are comments, a field's value loses one
// leading space, unknown fields are ignored, an id holding NUL is ignored,
// retry takes only ASCII digits, and a blank line dispatches the event
// unless its data buffer is empty.
//
// A line is processed as soon as its CR or LF arrives; an LF right after
// a CR is skipped when it comes. So a Parser never waits for bytes past
// the end of an event, which matters for a live stream.
type Parser struct {
	// OnRetry, if set, is called when a valid retry field is read, with
	// the new reconnection delay. Servers send it when a subscription is
	// live, so a client can wait for it.
	OnRetry func(time.Duration)
	// OnComment, if set, is called for each comment line with its text
	// after the colon, less one leading space.
	OnComment func(text string)

	r        *bufio.Reader
	line     []byte
	started  bool // the first line (and its BOM) is behind us
	skipLF   bool // the last line ended in CR: an LF next belongs to it
	lastID   string
	lastType string // the last event type dispatched, reused while it repeats
	idBuf    []byte // last event ID buffer
	typeBuf  []byte // event type buffer
	data     []byte // data buffer
}

// NewParser returns a Parser reading from r, through a bufio.Reader
// unless r already is one.
func NewParser(r io.Reader) *Parser {
	return &Parser{r: bufio.NewReader(r)}
}

// Next returns the next dispatched event. At the end of the stream it
// returns io.EOF; an event or line cut off by the end is discarded, as the
// standard says. Other read errors are returned as they are.
func (p *Parser) Next() (Event, error) {
	for {
		line, err := p.readLine()
		if err != nil {
			return Event{}, err
		}
		if ev, ok := p.processLine(line); ok {
			return ev, nil
		}
	}
}

// readLine returns the next whole line without its line end. The slice is
// valid until the next call.
func (p *Parser) readLine() ([]byte, error) {
	p.line = p.line[:0]
	for {
		// Peek(1) blocks until at least one byte is buffered; then take
		// everything buffered, so a line costs one scan, not one call per
		// byte.
		if _, err := p.r.Peek(1); err != nil {
			return nil, err
		}
		buf, _ := p.r.Peek(p.r.Buffered())
		if p.skipLF {
			p.skipLF = false
			if buf[0] == '\n' {
				_, _ = p.r.Discard(1)
				continue
			}
		}
		i := bytes.IndexAny(buf, "\r\n")
		if i < 0 {
			p.line = append(p.line, buf...)
			_, _ = p.r.Discard(len(buf))
			continue
		}
		p.line = append(p.line, buf[:i]...)
		p.skipLF = buf[i] == '\r'
		_, _ = p.r.Discard(i + 1)
		if !p.started {
			p.started = true
			p.line = bytes.TrimPrefix(p.line, bom)
		}
		return p.line, nil
	}
}

var bom = []byte("\xEF\xBB\xBF")

// processLine applies one line to the parser's buffers and reports the
// event it dispatches, if any.
func (p *Parser) processLine(line []byte) (Event, bool) {
	if len(line) == 0 {
		return p.dispatch()
	}
	if line[0] == ':' {
		if p.OnComment != nil {
			p.OnComment(string(AppendDecoded(nil, trimSpace(line[1:]))))
		}
		return Event{}, false
	}
	field, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		field, value = line[:i], trimSpace(line[i+1:])
	}
	// Field names are ASCII, so comparing undecoded bytes is exact: no
	// invalid sequence decodes to one.
	switch string(field) {
	case "event":
		p.typeBuf = AppendDecoded(p.typeBuf[:0], value)
	case "data":
		p.data = AppendDecoded(p.data, value)
		p.data = append(p.data, '\n')
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.idBuf = AppendDecoded(p.idBuf[:0], value)
		}
	case "retry":
		if ms, ok := parseDigits(value); ok && p.OnRetry != nil {
			p.OnRetry(ms)
		}
	}
	return Event{}, false
}

// dispatch ends the current event, as a blank line does.
func (p *Parser) dispatch() (Event, bool) {
	if string(p.idBuf) != p.lastID {
		p.lastID = string(p.idBuf)
	}
	if len(p.data) == 0 {
		p.typeBuf = p.typeBuf[:0]
		return Event{}, false
	}
	ev := Event{ID: p.lastID, Event: "message", Data: string(p.data[:len(p.data)-1])}
	if len(p.typeBuf) > 0 {
		if string(p.typeBuf) != p.lastType {
			p.lastType = string(p.typeBuf)
		}
		ev.Event = p.lastType
	}
	p.data, p.typeBuf = p.data[:0], p.typeBuf[:0]
	return ev, true
}

// trimSpace drops one leading space, as the standard does for values.
func trimSpace(b []byte) []byte {
	if len(b) > 0 && b[0] == ' ' {
		return b[1:]
	}
	return b
}

// parseDigits parses a retry value: one or more ASCII digits, in
// milliseconds. Values past what a Duration holds saturate.
func parseDigits(b []byte) (time.Duration, bool) {
	if len(b) == 0 {
		return 0, false
	}
	const limit = math.MaxInt64 / int64(time.Millisecond)
	var ms int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if ms <= limit {
			ms = ms*10 + int64(c-'0')
		}
	}
	if ms > limit {
		return math.MaxInt64, true
	}
	return time.Duration(ms) * time.Millisecond, true
}

// AppendDecoded appends b decoded the way the WHATWG "UTF-8 decode"
// algorithm does: each maximal subpart of an invalid sequence becomes one
// U+FFFD. (Go's own decoding differs: it replaces byte by byte.) Decoding
// each field separately is exact because ASCII bytes, such as the colon
// and line ends, always end an invalid sequence.
func AppendDecoded(dst, b []byte) []byte {
	if utf8.Valid(b) {
		return append(dst, b...)
	}
	for len(b) > 0 {
		c := b[0]
		if c < utf8.RuneSelf {
			dst = append(dst, c)
			b = b[1:]
			continue
		}
		var need int
		lo, hi := byte(0x80), byte(0xBF)
		switch {
		case c >= 0xC2 && c <= 0xDF:
			need = 1
		case c >= 0xE0 && c <= 0xEF:
			need = 2
			if c == 0xE0 {
				lo = 0xA0
			} else if c == 0xED {
				hi = 0x9F
			}
		case c >= 0xF0 && c <= 0xF4:
			need = 3
			if c == 0xF0 {
				lo = 0x90
			} else if c == 0xF4 {
				hi = 0x8F
			}
		default:
			dst = utf8.AppendRune(dst, utf8.RuneError)
			b = b[1:]
			continue
		}
		n := 1 // bytes of a valid prefix so far
		for n <= need && n < len(b) && b[n] >= lo && b[n] <= hi {
			lo, hi = 0x80, 0xBF
			n++
		}
		if n == need+1 {
			dst = append(dst, b[:n]...)
		} else {
			// The byte at n (if any) is not consumed: it starts afresh.
			dst = utf8.AppendRune(dst, utf8.RuneError)
		}
		b = b[n:]
	}
	return dst
}
