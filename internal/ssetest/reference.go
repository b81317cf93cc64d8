package ssetest

import (
	"bytes"
	"fmt"
	"strings"
	"time"
)

// Parsed is everything a client observes of a stream, in order.
type Parsed struct {
	Events   []Event
	Retries  []time.Duration
	Comments []string
}

func (p Parsed) String() string {
	return fmt.Sprintf("events %q retries %v comments %q", p.Events, p.Retries, p.Comments)
}

// Equal reports whether a client observed the same in a and b, comments
// included or not.
func Equal(a, b Parsed, comments bool) bool {
	if len(a.Events) != len(b.Events) || len(a.Retries) != len(b.Retries) {
		return false
	}
	for i := range a.Events {
		if a.Events[i] != b.Events[i] {
			return false
		}
	}
	for i := range a.Retries {
		if a.Retries[i] != b.Retries[i] {
			return false
		}
	}
	if !comments {
		return true
	}
	return strings.Join(a.Comments, "\x00") == strings.Join(b.Comments, "\x00") &&
		len(a.Comments) == len(b.Comments)
}

// Reference parses a whole stream, written straight from the standard as
// a reference for Parser (and for tests of what a client makes of a
// stream): written straight from the
// standard over a whole stream: decode, drop one BOM, split lines, process
// them. It shares only the UTF-8 decoder with Parser.
func Reference(stream []byte) Parsed {
	stream = bytes.TrimPrefix(stream, bom)
	var out Parsed
	var data, typ []byte
	var idBuf, lastID string
	start := 0
	for i := 0; i < len(stream); i++ {
		c := stream[i]
		if c != '\r' && c != '\n' {
			continue
		}
		line := stream[start:i]
		if c == '\r' && i+1 < len(stream) && stream[i+1] == '\n' {
			i++
		}
		start = i + 1
		field, value, found := bytes.Cut(line, []byte(":"))
		if found && len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		switch {
		case len(line) == 0:
			lastID = idBuf
			if len(data) > 0 {
				e := Event{ID: lastID, Event: "message", Data: string(data[:len(data)-1])}
				if len(typ) > 0 {
					e.Event = string(typ)
				}
				out.Events = append(out.Events, e)
			}
			data, typ = nil, nil
		case len(field) == 0:
			out.Comments = append(out.Comments, string(AppendDecoded(nil, value)))
		case string(field) == "event":
			typ = AppendDecoded(nil, value)
		case string(field) == "data":
			data = append(AppendDecoded(data, value), '\n')
		case string(field) == "id":
			if !bytes.Contains(value, []byte{0}) {
				idBuf = string(AppendDecoded(nil, value))
			}
		case string(field) == "retry":
			if d, ok := parseDigits(value); ok {
				out.Retries = append(out.Retries, d)
			}
		}
	}
	return out
}
