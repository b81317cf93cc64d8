package sse

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// AppendEvent appends one SSE event to dst and returns the extended slice:
// an `id:` line (omitted when id is "", so the client keeps its previous
// last event ID), an `event:` line (omitted when event is "" or "message",
// the type a client assumes), one `data:` line per line of data, and the
// blank line that dispatches the event. It allocates only to grow dst.
//
// A client gets data back byte for byte when Representable(data): the
// client joins the data lines with LF and drops the one LF that ends the
// last line, so "" is a single empty data line and "a\n" is `data: a`
// plus an empty data line. Every line is written as "data: " with a
// space; the client strips exactly one space after the colon, so a line
// that starts with spaces keeps them.
//
// Data that is not representable is still framed safely: CR and CRLF
// break lines as LF does, so they arrive as LF, and the client replaces
// bytes that are not UTF-8. No input can end the event early or inject
// fields. Likewise id and event are cut at their first CR or LF.
func AppendEvent(dst []byte, id, event string, data []byte) []byte {
	if id != "" {
		dst = append(dst, "id: "...)
		dst = append(dst, firstLine(id)...)
		dst = append(dst, '\n')
	}
	if event != "" && event != "message" {
		dst = append(dst, "event: "...)
		dst = append(dst, firstLine(event)...)
		dst = append(dst, '\n')
	}
	for {
		dst = append(dst, "data: "...)
		i := lineEnd(data)
		if i < 0 {
			dst = append(dst, data...)
			dst = append(dst, '\n')
			break
		}
		dst = append(dst, data[:i]...)
		dst = append(dst, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	return append(dst, '\n')
}

// lineEnd returns the index of the first CR or LF in b, or -1.
func lineEnd(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	head := b
	if i >= 0 {
		head = b[:i]
	}
	if j := bytes.IndexByte(head, '\r'); j >= 0 {
		return j
	}
	return i
}

// firstLine returns s up to its first CR or LF.
func firstLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}

// Representable reports whether data survives SSE byte for byte through
// AppendEvent and a conforming client. Only two things break it: a CR,
// which a client reads as a line end (so "\r" and "\r\n" would arrive as
// "\n"), and bytes that are not UTF-8, which a client replaces with
// U+FFFD. LF is carried by splitting into data lines; leading spaces, NUL,
// a byte order mark (a client drops one only at the start of the
// stream, never inside a data line) and any other UTF-8 text pass intact.
func Representable(data []byte) bool {
	return bytes.IndexByte(data, '\r') < 0 && utf8.Valid(data)
}

// AppendComment appends text as comment lines (": text"), which clients
// ignore: heartbeats that keep proxies and clients from timing out an
// idle stream. Each line of a multi-line text becomes a comment line of
// its own; an empty text is a bare ":" line.
func AppendComment(dst []byte, text string) []byte {
	for {
		dst = append(dst, ':')
		line := firstLine(text)
		if line != "" {
			dst = append(dst, ' ')
			dst = append(dst, line...)
		}
		dst = append(dst, '\n')
		if len(line) == len(text) {
			return dst
		}
		i := len(line)
		if text[i] == '\r' && i+1 < len(text) && text[i+1] == '\n' {
			i++
		}
		text = text[i+1:]
	}
}

// AppendRetry appends a `retry:` line that sets the client's reconnection
// delay to ms milliseconds (a negative ms is sent as 0: a client ignores a
// value that is not all digits). It is a line of its own, not an event, so
// it may be followed directly by events.
func AppendRetry(dst []byte, ms int) []byte {
	dst = append(dst, "retry: "...)
	dst = strconv.AppendInt(dst, int64(max(ms, 0)), 10)
	return append(dst, '\n')
}
