package replay

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Position is a subscriber's place in one channel: the id of the last
// message it got (or a position id such as "0-0"). An empty ID means no
// position.
type Position struct {
	Channel string
	ID      string
}

// MaxCursorLen bounds the cursors DecodeCursor and ParseCursor accept.
const MaxCursorLen = 8 << 10

// ErrBadCursor is wrapped by every error of DecodeCursor and ParseCursor.
var ErrBadCursor = errors.New("malformed resume cursor")

// cursorPrefix starts a cursor of several positions. No id starts with it.
const cursorPrefix = "c1."

var b64 = base64.RawURLEncoding.Strict()

// EncodeCursor returns the opaque cursor of ps, fit for an SSE id: line
// and a query parameter (ASCII letters, digits and "-_." only besides what
// ids contain).
//
// One position encodes as its bare id, so for a one-channel subscription
// the cursor is the message id itself. Several encode as "c1." and the
// unpadded base64url of the pairs, each string preceded by its length in
// one byte. A subscription to several channels must pass all of them
// (with an empty ID where it has no position), so its cursor is never a
// bare id. ps must hold channel names and ids as DecodeCursor accepts
// them.
func EncodeCursor(ps []Position) string {
	switch len(ps) {
	case 0:
		return ""
	case 1:
		return ps[0].ID
	}
	n := 0
	for _, p := range ps {
		n += 2 + len(p.Channel) + len(p.ID)
	}
	buf := make([]byte, 0, n)
	for _, p := range ps {
		buf = append(buf, byte(len(p.Channel)))
		buf = append(buf, p.Channel...)
		buf = append(buf, byte(len(p.ID)))
		buf = append(buf, p.ID...)
	}
	out := make([]byte, len(cursorPrefix)+b64.EncodedLen(len(buf)))
	copy(out, cursorPrefix)
	b64.Encode(out[len(cursorPrefix):], buf)
	return string(out)
}

// DecodeCursor takes a cursor apart. A bare id gives one position with
// an empty Channel (ParseCursor assigns it). Errors wrap ErrBadCursor.
func DecodeCursor(cursor string) ([]Position, error) {
	if len(cursor) > MaxCursorLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrBadCursor, MaxCursorLen)
	}
	if !strings.HasPrefix(cursor, cursorPrefix) {
		if !ValidID(cursor) {
			return nil, fmt.Errorf("%w: not a message id", ErrBadCursor)
		}
		return []Position{{ID: cursor}}, nil
	}
	body := cursor[len(cursorPrefix):]
	// Go's base64 decoder skips CR and LF; a cursor must not carry them
	if strings.ContainsAny(body, "\r\n") {
		return nil, fmt.Errorf("%w: bad encoding", ErrBadCursor)
	}
	buf, err := b64.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("%w: bad encoding", ErrBadCursor)
	}
	var ps []Position
	seen := make(map[string]bool)
	for len(buf) > 0 {
		var ch, id string
		if ch, buf, err = field(buf); err != nil {
			return nil, err
		}
		if id, buf, err = field(buf); err != nil {
			return nil, err
		}
		if !ValidChannel(ch) {
			return nil, fmt.Errorf("%w: bad channel name", ErrBadCursor)
		}
		if id != "" && !ValidID(id) {
			return nil, fmt.Errorf("%w: bad id for channel %q", ErrBadCursor, ch)
		}
		if seen[ch] {
			return nil, fmt.Errorf("%w: channel %q twice", ErrBadCursor, ch)
		}
		seen[ch] = true
		ps = append(ps, Position{Channel: ch, ID: id})
	}
	if len(ps) < 2 {
		// One position is encoded as a bare id; anything else would not
		// survive a round trip.
		return nil, fmt.Errorf("%w: fewer than two positions", ErrBadCursor)
	}
	return ps, nil
}

// field reads one length-prefixed string.
func field(buf []byte) (string, []byte, error) {
	if len(buf) == 0 || int(buf[0]) > len(buf)-1 {
		return "", nil, fmt.Errorf("%w: truncated", ErrBadCursor)
	}
	n := int(buf[0])
	return string(buf[1 : 1+n]), buf[1+n:], nil
}

// ParseCursor decodes cursor for a subscription to channels (non-empty,
// no duplicates): it returns one position per channel, in the order of
// channels, with an empty ID for a channel the cursor holds no position
// for (the caller treats it as unknown).
//
// A bare id is the position of the only channel. With several channels
// a bare id cannot be assigned (its channel is unknown): every position
// is empty. A position of a channel not in channels is ignored: the
// client narrowed its subscription. Errors wrap ErrBadCursor.
func ParseCursor(cursor string, channels []string) ([]Position, error) {
	if len(channels) == 0 {
		return nil, fmt.Errorf("%w: no channel", ErrBadCursor)
	}
	ps, err := DecodeCursor(cursor)
	if err != nil {
		return nil, err
	}
	out := make([]Position, len(channels))
	for i, ch := range channels {
		out[i].Channel = ch
	}
	if ps[0].Channel == "" { // bare id
		if len(channels) == 1 {
			out[0].ID = ps[0].ID
		}
		return out, nil
	}
	var index map[string]int
	if len(channels) > 8 {
		index = make(map[string]int, len(channels))
		for i, ch := range channels {
			if _, dup := index[ch]; !dup {
				index[ch] = i
			}
		}
	}
	for _, p := range ps {
		i := -1
		if index != nil {
			if j, ok := index[p.Channel]; ok {
				i = j
			}
		} else {
			for j, ch := range channels {
				if ch == p.Channel {
					i = j
					break
				}
			}
		}
		if i >= 0 {
			out[i].ID = p.ID
		}
	}
	return out, nil
}
