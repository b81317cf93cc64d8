package sse

import (
	"bytes"
	"net/http/httptest"
	"testing"

	"github.com/caddy-realtime/realtime/internal/ssetest"
)

var lineTrackerTests = []struct {
	name   string
	writes []string
	want   bool
}{
	{name: "start", writes: nil, want: true},
	{name: "empty writes", writes: []string{"", ""}, want: true},
	{name: "mid-line", writes: []string{"data: x"}, want: false},
	{name: "LF", writes: []string{"data: x\n"}, want: true},
	{name: "CRLF", writes: []string{"data: x\r\n"}, want: true},
	{name: "CRLF split", writes: []string{"data: x\r", "\n"}, want: true},
	{name: "lone CR pending", writes: []string{"data: x\r"}, want: false},
	{name: "CR then next line", writes: []string{"data: x\r", "d"}, want: false},
	{name: "CR then CR", writes: []string{"data: x\r", "\r"}, want: false},
	{name: "CR CR LF", writes: []string{"\r", "\r", "\n"}, want: true},
	{name: "LF then text", writes: []string{"data: x\n", "data"}, want: false},
	{name: "empty write keeps state", writes: []string{"data: x\r", ""}, want: false},
	{name: "blank line", writes: []string{"data: x\n\n"}, want: true},
	{name: "split in the middle", writes: []string{"da", "ta: x", "\n"}, want: true},
}

func TestLineTracker(t *testing.T) {
	for _, tc := range lineTrackerTests {
		t.Run(tc.name, func(t *testing.T) {
			var lt LineTracker
			var all []byte
			for _, w := range tc.writes {
				lt.Write([]byte(w))
				all = append(all, w...)
			}
			if got := lt.AtBoundary(); got != tc.want {
				t.Fatalf("AtBoundary() = %v, want %v", got, tc.want)
			}
			if ref := refBoundary(all); ref != tc.want {
				t.Fatalf("reference says %v, table says %v", ref, tc.want)
			}
		})
	}
}

// refBoundary decides from a whole stream, by splitting it into lines,
// whether it ends at a safe boundary: it is empty, or its last line end
// ends it and is not a CR that an LF could still join.
func refBoundary(stream []byte) bool {
	end := 0 // offset just past the last complete line end
	for i := 0; i < len(stream); i++ {
		switch stream[i] {
		case '\n':
			end = i + 1
		case '\r':
			if i+1 == len(stream) {
				return false // pending: CR or CRLF?
			}
			if stream[i+1] == '\n' {
				i++
			}
			end = i + 1
		}
	}
	return end == len(stream)
}

// splitStream cuts stream into pieces whose lengths come from cuts (0 to
// 15 bytes each, cycling; an empty piece is followed by a 1-byte one, so
// that the stream always shrinks); bit 4 of each cut asks to inject after
// the piece.
func splitStream(stream, cuts []byte, each func(piece []byte, inject bool)) {
	if len(cuts) == 0 {
		cuts = []byte{0x1f}
	}
	for i := 0; len(stream) > 0; i++ {
		c := cuts[i%len(cuts)]
		n := min(int(c&0x0f), len(stream))
		each(stream[:n], c&0x10 != 0)
		if n == 0 {
			n = 1
			each(stream[:n], false)
		}
		stream = stream[n:]
	}
}

// FuzzLineTracker compares LineTracker with the reference after every
// write, and checks the point of it: a heartbeat injected by Writer
// wherever the tracker allows never changes what a client reads.
func FuzzLineTracker(f *testing.F) {
	for _, tc := range lineTrackerTests {
		var all, cuts []byte
		for _, w := range tc.writes {
			all = append(all, w...)
			cuts = append(cuts, byte(len(w)&0x0f)|0x10)
		}
		f.Add(all, cuts, true)
	}
	// streams with every kind of line end, BOMs, comments, odd fields
	for _, stream := range []string{
		"data: x\r\nid: 1\r\n\r\n", "data: x\rdata: y\r\r", "data: a\r\ndata: b\rdata: c\n\r\n",
		"data: a\r\n\n", "data: a\n\r", "data:\tx\n\n", "data\ndata\n\n",
		"id: 1\ndata: a\n\nid: 2\x00\ndata: b\n\n", ": hi\n:\n:  two\ndata: x\n\n",
		"retry: 1500\nretry: 1.5\nretry:\n", "\xEF\xBB\xBFdata: x\n\n\xEF\xBB\xBFdata: y\n\n",
		"\xEF\xBB\xBF\ndata: x\n\n", "data: x\n\nid: 3", "data: a\xffb\xe2\x82c\n\n", "data\xe2\x82: x\n\n",
	} {
		f.Add([]byte(stream), []byte{1, 0x13, 2, 0x15, 0x10}, true)
	}
	f.Add([]byte("\xEF\xBB\xBFdata: x\n\n"), []byte{0x11, 0x11, 0x11, 0x1f}, true)
	f.Fuzz(func(t *testing.T, stream, cuts []byte, injectAtStart bool) {
		var lt LineTracker
		var sent []byte
		rec := httptest.NewRecorder()
		rec.Header().Set("Content-Type", "text/event-stream")
		w := NewWriter(rec, Options{})
		w.WriteHeader(200)
		beats, early := 0, false
		inject := func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			at := w.lines.AtBoundary()
			injected, err := w.heartbeat()
			if err != nil {
				t.Fatal(err)
			}
			if injected != at {
				t.Fatalf("injected %v at boundary %v", injected, at)
			}
			if injected {
				beats++
				early = early || len(sent) == 0
			}
		}
		if injectAtStart {
			inject()
		}
		splitStream(stream, cuts, func(piece []byte, inj bool) {
			lt.Write(piece)
			sent = append(sent, piece...)
			if got, want := lt.AtBoundary(), refBoundary(sent); got != want {
				t.Fatalf("after %q: AtBoundary() = %v, reference %v", sent, got, want)
			}
			if n, err := w.Write(piece); n != len(piece) || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
			if inj {
				inject()
			}
		})
		w.Close()
		out := rec.Body.Bytes()
		if injectAtStart && !bytes.HasPrefix(out, heartbeat) {
			t.Fatalf("no heartbeat at the start: %q", out)
		}
		want := ssetest.Reference(stream)
		got := ssetest.Reference(out)
		if !ssetest.Equal(got, want, false) {
			t.Fatalf("heartbeats changed the stream:\nupstream %q\nclient   %q\ngot  %v\nwant %v", stream, out, got, want)
		}
		// Apart from the heartbeats (and a BOM after an early one), the
		// client gets the upstream's bytes.
		wantLen := len(stream) + beats*len(heartbeat)
		if early && bytes.HasPrefix(stream, bom) {
			wantLen -= len(bom)
		}
		if len(out) != wantLen || len(got.Comments) != len(want.Comments)+beats {
			t.Fatalf("upstream %q with %d heartbeats arrived as %q", stream, beats, out)
		}
	})
}

func BenchmarkLineTrackerWrite(b *testing.B) {
	p := []byte("id: 1700000000000-0\nevent: chat\ndata: {\"user\":\"ada\",\"text\":\"hello\"}\n\n")
	var lt LineTracker
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		lt.Write(p)
	}
	if !lt.AtBoundary() {
		b.Fatal("not at a boundary")
	}
}
