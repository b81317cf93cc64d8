package replay

import "strings"

// idKind is the shape of a message id.
type idKind uint8

const (
	kindOther  idKind = iota // not an id this package can order
	kindStream               // Redis stream id "<ms>-<seq>"
	kindNode                 // node-assigned id "p.<epoch>.<seq>"
)

const maxEpochLen = 32

// parsedID is a message id taken apart. For kindStream, ms and seq hold
// the two numbers; for kindNode, epoch and seq.
type parsedID struct {
	kind  idKind
	ms    uint64
	seq   uint64
	epoch string // a substring of the id: no allocation
}

// ValidID reports whether id is a message id or a position of one of the
// two shapes: a Redis stream id "<ms>-<seq>" (canonical decimal numbers,
// "0-0" being the position before any message) or a node-assigned id
// "p.<epoch>.<seq>" (epoch 1 to 32 characters of [a-z0-9], seq canonical
// decimal, "p.<epoch>.0" being the position before the epoch's first
// message).
func ValidID(id string) bool {
	_, ok := parseID(id)
	return ok
}

func parseID(id string) (parsedID, bool) {
	if strings.HasPrefix(id, "p.") {
		rest := id[2:]
		dot := strings.IndexByte(rest, '.')
		if dot < 1 || dot > maxEpochLen {
			return parsedID{}, false
		}
		epoch := rest[:dot]
		for i := 0; i < len(epoch); i++ {
			c := epoch[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
				return parsedID{}, false
			}
		}
		seq, ok := parseUint(rest[dot+1:])
		if !ok {
			return parsedID{}, false
		}
		return parsedID{kind: kindNode, seq: seq, epoch: epoch}, true
	}
	dash := strings.IndexByte(id, '-')
	if dash < 0 {
		return parsedID{}, false
	}
	ms, ok := parseUint(id[:dash])
	if !ok {
		return parsedID{}, false
	}
	seq, ok := parseUint(id[dash+1:])
	if !ok {
		return parsedID{}, false
	}
	return parsedID{kind: kindStream, ms: ms, seq: seq}, true
}

// parseUint parses a canonical decimal number (no sign, no leading zero
// except "0" itself) that fits in a uint64.
func parseUint(s string) (uint64, bool) {
	if len(s) == 0 || len(s) > 20 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// MaxChannelLen is the longest channel name.
const MaxChannelLen = 200

// ValidChannel reports whether name is a channel name: 1 to 200
// characters from A-Z a-z 0-9 _ - . : @ /. The handler checks the
// channels of requests with it and DecodeCursor those of a cursor, so
// both accept the same names.
func ValidChannel(name string) bool {
	if len(name) == 0 || len(name) > MaxChannelLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '_', c == '-', c == '.', c == ':', c == '@', c == '/':
		default:
			return false
		}
	}
	return true
}
