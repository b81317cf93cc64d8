package main

import (
	"bytes"
	"sort"
	"time"
)

// A payload is payloadSize bytes of printable ASCII:
//
//	<scheduled unix nanos, 19 digits> <seq, 7 digits> <round, 4 digits> xxxx...
//
// The scheduled send time comes first, so any consumer can compute the
// delivery latency from the payload alone; seq and round tell loss and
// duplicates apart and keep late messages of an earlier round out of the
// next one.
const (
	payloadSize = 200
	hdrLen      = 19 + 1 + 7 + 1 + 4 + 1
)

func putDigits(b []byte, v int64) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
}

func makePayload(buf []byte, due time.Time, seq, round int) []byte {
	if cap(buf) < payloadSize {
		buf = make([]byte, payloadSize)
	}
	b := buf[:payloadSize]
	putDigits(b[0:19], due.UnixNano())
	b[19] = ' '
	putDigits(b[20:27], int64(seq))
	b[27] = ' '
	putDigits(b[28:32], int64(round))
	b[32] = ' '
	for i := hdrLen; i < payloadSize; i++ {
		b[i] = 'x'
	}
	return b
}

func readDigits(b []byte) (int64, bool) {
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

// parsePayload reads the header of a payload (or of anything that starts
// with one).
func parsePayload(b []byte) (dueNanos int64, seq, round int, ok bool) {
	if len(b) < hdrLen || b[19] != ' ' || b[27] != ' ' || b[32] != ' ' {
		return 0, 0, 0, false
	}
	ts, ok1 := readDigits(b[0:19])
	sq, ok2 := readDigits(b[20:27])
	rd, ok3 := readDigits(b[28:32])
	if !ok1 || !ok2 || !ok3 {
		return 0, 0, 0, false
	}
	return ts, int(sq), int(rd), true
}

var jsonDataKey = []byte(`"data":"`)

// payloadFromJSON finds the payload inside a hub WebSocket/long-poll JSON
// message without decoding the whole object; the payload header is digits
// and spaces, so no JSON escape can occur in it.
func payloadFromJSON(b []byte) []byte {
	i := bytes.Index(b, jsonDataKey)
	if i < 0 {
		// tolerate `"data": "` with a space
		i = bytes.Index(b, []byte(`"data": "`))
		if i < 0 {
			return nil
		}
		return b[i+9:]
	}
	return b[i+len(jsonDataKey):]
}

// ---- latency statistics ----

type latStats struct {
	N             int
	P50, P99, Max time.Duration
}

// statsMicros computes percentiles over latencies in microseconds; it sorts
// its argument.
func statsMicros(v []int32) latStats {
	if len(v) == 0 {
		return latStats{}
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	at := func(q float64) time.Duration {
		i := int(q*float64(len(v))+0.5) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(v) {
			i = len(v) - 1
		}
		return time.Duration(v[i]) * time.Microsecond
	}
	return latStats{N: len(v), P50: at(0.50), P99: at(0.99), Max: time.Duration(v[len(v)-1]) * time.Microsecond}
}
