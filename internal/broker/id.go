package broker

import (
	"math/rand/v2"
	"strconv"
	"strings"
)

// Message ids come in two forms, told apart by their first byte:
//
//   - Redis stream ids, "<ms>-<seq>" (two decimal numbers, for example
//     "1700000000000-0"), the same on every node;
//   - node-assigned ids, "p.<epoch>.<seq>", for pub/sub messages and the
//     embedded broker. The epoch is a short random string (lowercase
//     base32: a-z, 2-7) that changes whenever the broker may have missed
//     messages of the channel (a new subscription, an interrupted one);
//     seq counts the channel's messages in that epoch, from 1. Two
//     node-assigned ids of one channel can be ordered only when their
//     epochs are equal; an id from another epoch cannot be placed.

const (
	nodeIDPrefix   = "p."
	epochAlphabet  = "abcdefghijklmnopqrstuvwxyz234567"
	epochLen       = 8
	maxEpochLen    = 16
	maxDecimalLen  = 20 // len("18446744073709551615")
	maxNodeIDBytes = len(nodeIDPrefix) + maxEpochLen + 1 + maxDecimalLen
)

// newEpoch returns a fresh random epoch for node-assigned ids.
func newEpoch() string {
	var b [epochLen]byte
	r := rand.Uint64()
	for i := range b {
		b[i] = epochAlphabet[r&31]
		r >>= 5
	}
	return string(b[:])
}

// formatNodeID returns the node-assigned id of message seq in epoch.
func formatNodeID(epoch string, seq uint64) string {
	var buf [maxNodeIDBytes]byte
	b := append(buf[:0], nodeIDPrefix...)
	b = append(b, epoch...)
	b = append(b, '.')
	b = strconv.AppendUint(b, seq, 10)
	return string(b)
}

// parseNodeID splits a node-assigned id "p.<epoch>.<seq>" into its epoch
// and sequence number. ok is false for anything else, stream ids
// included. Only the canonical form formatNodeID produces is accepted
// (no leading zeros). Seq 0 is the position before the epoch's first
// message: a valid resume point, not a message.
func parseNodeID(id string) (epoch string, seq uint64, ok bool) {
	if len(id) > maxNodeIDBytes {
		return "", 0, false
	}
	rest, found := strings.CutPrefix(id, nodeIDPrefix)
	if !found {
		return "", 0, false
	}
	i := strings.IndexByte(rest, '.')
	if i < 1 || i > maxEpochLen {
		return "", 0, false
	}
	epoch = rest[:i]
	for j := 0; j < len(epoch); j++ {
		if strings.IndexByte(epochAlphabet, epoch[j]) < 0 {
			return "", 0, false
		}
	}
	seq, ok = parseDecimal(rest[i+1:])
	if !ok {
		return "", 0, false
	}
	return epoch, seq, true
}

// parseStreamID splits a Redis stream id "<ms>-<seq>" into its two
// numbers. Only the complete canonical form is accepted (no leading
// zeros, no sign, no spaces).
func parseStreamID(id string) (ms, seq uint64, ok bool) {
	i := strings.IndexByte(id, '-')
	if i < 0 {
		return 0, 0, false
	}
	if ms, ok = parseDecimal(id[:i]); !ok {
		return 0, 0, false
	}
	if seq, ok = parseDecimal(id[i+1:]); !ok {
		return 0, 0, false
	}
	return ms, seq, true
}

// IsStreamID reports whether id is a Redis stream id.
func IsStreamID(id string) bool {
	_, _, ok := parseStreamID(id)
	return ok
}

// CompareStreamIDs orders two stream ids as Redis does: -1 when a comes
// before b, 0 when they are equal, +1 when a comes after b. An id that is
// not a stream id sorts before every stream id; two such ids compare as
// strings.
func CompareStreamIDs(a, b string) int {
	ams, aseq, aok := parseStreamID(a)
	bms, bseq, bok := parseStreamID(b)
	switch {
	case !aok && !bok:
		return strings.Compare(a, b)
	case !aok:
		return -1
	case !bok:
		return 1
	}
	switch {
	case ams < bms:
		return -1
	case ams > bms:
		return 1
	case aseq < bseq:
		return -1
	case aseq > bseq:
		return 1
	}
	return 0
}

// parseDecimal parses a canonical unsigned decimal number: digits only,
// no leading zero unless the number is 0, at most uint64.
func parseDecimal(s string) (uint64, bool) {
	if len(s) == 0 || len(s) > maxDecimalLen {
		return 0, false
	}
	if s[0] == '0' && len(s) > 1 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}
