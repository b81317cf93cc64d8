package sse

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/caddy-realtime/realtime/internal/ssetest"
)

var eventTests = []struct {
	name      string
	id, event string
	data      string
	want      string
	wantData  string // what a client reads; "" with wantSame: data itself
	wantSame  bool
}{
	{name: "plain", id: "1-0", data: "hello", want: "id: 1-0\ndata: hello\n\n", wantSame: true},
	{name: "no id", data: "x", want: "data: x\n\n", wantSame: true},
	{name: "named event", id: "7", event: "update", data: "x", want: "id: 7\nevent: update\ndata: x\n\n", wantSame: true},
	{name: "message event omitted", id: "7", event: "message", data: "x", want: "id: 7\ndata: x\n\n", wantSame: true},
	{name: "empty payload", id: "1", data: "", want: "id: 1\ndata: \n\n", wantSame: true},
	{name: "lone LF", data: "\n", want: "data: \ndata: \n\n", wantSame: true},
	{name: "trailing LF", data: "a\n", want: "data: a\ndata: \n\n", wantSame: true},
	{name: "leading LF", data: "\na", want: "data: \ndata: a\n\n", wantSame: true},
	{name: "multi-line", data: "a\nb\n\nc", want: "data: a\ndata: b\ndata: \ndata: c\n\n", wantSame: true},
	{name: "leading spaces kept", data: "  two", want: "data:   two\n\n", wantSame: true},
	{name: "colon and NUL", data: "a: b\x00", want: "data: a: b\x00\n\n", wantSame: true},
	{name: "BOM inside data", data: "\uFEFFx", want: "data: \uFEFFx\n\n", wantSame: true},
	{name: "comment-like data", data: ":not a comment", want: "data: :not a comment\n\n", wantSame: true},
	{name: "CRLF framed as LF", data: "a\r\nb", want: "data: a\ndata: b\n\n", wantData: "a\nb"},
	{name: "lone CR framed as LF", data: "a\rb\r", want: "data: a\ndata: b\ndata: \n\n", wantData: "a\nb\n"},
	{name: "CR CR", data: "\r\r", want: "data: \ndata: \ndata: \n\n", wantData: "\n\n"},
	{name: "id and event cut at line end", id: "1\n\ndata: evil", event: "e\rx", data: "ok",
		want: "id: 1\nevent: e\ndata: ok\n\n", wantSame: true},
	{name: "leading space in id and event", id: " 1", event: " e", data: "d",
		want: "id:  1\nevent:  e\ndata: d\n\n", wantSame: true},
}

func TestAppendEvent(t *testing.T) {
	for _, tc := range eventTests {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendEvent([]byte("prefix"), tc.id, tc.event, []byte(tc.data))
			if string(got) != "prefix"+tc.want {
				t.Fatalf("AppendEvent = %q, want %q", got, "prefix"+tc.want)
			}
			if Representable([]byte(tc.data)) != tc.wantSame {
				t.Fatalf("Representable(%q) = %v, want %v", tc.data, !tc.wantSame, tc.wantSame)
			}
			ev, err := ssetest.NewParser(strings.NewReader(tc.want)).Next()
			if err != nil {
				t.Fatal(err)
			}
			want := tc.wantData
			if tc.wantSame {
				want = tc.data
			}
			if ev.Data != want {
				t.Fatalf("client reads data %q, want %q", ev.Data, want)
			}
			wantEvent := firstLine(tc.event)
			if wantEvent == "" {
				wantEvent = "message"
			}
			if ev.ID != firstLine(tc.id) || ev.Event != wantEvent {
				t.Fatalf("client reads %+v", ev)
			}
		})
	}
}

func TestRepresentable(t *testing.T) {
	tests := []struct {
		data string
		want bool
	}{
		{"", true},
		{"plain text", true},
		{"multi\nline\n", true},
		{"ünïcödé ✓ 🎉", true},
		{"\x00\t\v\f", true},
		{"\uFFFD\uFFFE", true},
		{"a\rb", false},
		{"a\r\n", false},
		{"\xff", false},
		{"\xe2\x82", false},         // truncated sequence
		{"\xed\xa0\x80", false},     // surrogate
		{"\xc0\xaf", false},         // overlong
		{"\xf4\x90\x80\x80", false}, // beyond U+10FFFF
	}
	for _, tc := range tests {
		if got := Representable([]byte(tc.data)); got != tc.want {
			t.Errorf("Representable(%q) = %v, want %v", tc.data, got, tc.want)
		}
	}
}

func TestAppendComment(t *testing.T) {
	tests := []struct{ text, want string }{
		{"heartbeat", ": heartbeat\n"},
		{"", ":\n"},
		{"a\nb", ": a\n: b\n"},
		{"a\r\nb\rc", ": a\n: b\n: c\n"},
		{"a\n", ": a\n:\n"},
	}
	for _, tc := range tests {
		if got := AppendComment(nil, tc.text); string(got) != tc.want {
			t.Errorf("AppendComment(%q) = %q, want %q", tc.text, got, tc.want)
		}
		// Comments never dispatch anything, and never leak into an event.
		stream := string(AppendComment(nil, tc.text)) + "data: x\n\n"
		p := ssetest.NewParser(strings.NewReader(stream))
		ev, err := p.Next()
		if err != nil || ev.Data != "x" {
			t.Errorf("after comment %q: %+v, %v", tc.text, ev, err)
		}
	}
}

func TestAppendRetry(t *testing.T) {
	tests := []struct {
		ms   int
		want string
	}{
		{3000, "retry: 3000\n"},
		{0, "retry: 0\n"},
		{-5, "retry: 0\n"},
	}
	for _, tc := range tests {
		if got := AppendRetry(nil, tc.ms); string(got) != tc.want {
			t.Errorf("AppendRetry(%d) = %q, want %q", tc.ms, got, tc.want)
		}
	}
}

func TestAppendAllocs(t *testing.T) {
	buf := make([]byte, 0, 1024)
	data := []byte("line one\nline two\n")
	allocs := testing.AllocsPerRun(100, func() {
		buf = AppendEvent(buf[:0], "1700000000000-0", "update", data)
		buf = AppendComment(buf, "heartbeat")
		buf = AppendRetry(buf, 2000)
		_ = Representable(data)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run, want 0", allocs)
	}
}

// FuzzEventRoundTrip checks that AppendEvent and a client agree: a
// representable payload comes back byte for byte, with its id and event,
// after a preceding event; any other payload still makes exactly one
// event whose data is the payload with line ends made LF (and invalid
// UTF-8 replaced).
func FuzzEventRoundTrip(f *testing.F) {
	for _, tc := range eventTests {
		f.Add(tc.id, tc.event, []byte(tc.data))
	}
	f.Fuzz(func(t *testing.T, id, event string, data []byte) {
		stream := AppendEvent(nil, "0", "first", []byte("first"))
		stream = AppendEvent(stream, id, event, data)
		p := ssetest.NewParser(bytes.NewReader(stream))
		if ev, err := p.Next(); err != nil || ev.Data != "first" || ev.Event != "first" {
			t.Fatalf("first event %+v, %v", ev, err)
		}
		ev, err := p.Next()
		if err != nil {
			t.Fatalf("%q: %v", stream, err)
		}
		if _, err := p.Next(); err == nil {
			t.Fatalf("%q: more than one event", stream)
		}
		wantID := "0"
		if id != "" {
			wantID = string(ssetest.AppendDecoded(nil, []byte(firstLine(id))))
			if strings.IndexByte(firstLine(id), 0) >= 0 {
				wantID = "0" // a client ignores an id with NUL
			}
		}
		wantEvent := string(ssetest.AppendDecoded(nil, []byte(firstLine(event))))
		if wantEvent == "" {
			wantEvent = "message"
		}
		if ev.ID != wantID || ev.Event != wantEvent {
			t.Fatalf("%q: got id %q event %q, want %q %q", stream, ev.ID, ev.Event, wantID, wantEvent)
		}
		if validField(id) && ev.ID != id && id != "" {
			t.Fatalf("valid id %q came back as %q", id, ev.ID)
		}
		want := string(data)
		if !Representable(data) {
			norm := bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
			norm = bytes.ReplaceAll(norm, []byte("\r"), []byte("\n"))
			want = string(ssetest.AppendDecoded(nil, norm))
		}
		if ev.Data != want {
			t.Fatalf("data %q came back as %q (representable %v)", data, ev.Data, Representable(data))
		}
	})
}

func BenchmarkAppendEvent(b *testing.B) {
	buf := make([]byte, 0, 1024)
	data := []byte(`{"user":"ada","text":"hello, world"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		buf = AppendEvent(buf[:0], "1700000000000-0", "chat", data)
	}
}

func BenchmarkAppendEventMultiLine(b *testing.B) {
	buf := make([]byte, 0, 4096)
	data := bytes.Repeat([]byte("a line of text\n"), 20)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		buf = AppendEvent(buf[:0], "1700000000000-0", "", data)
	}
}

// validField reports whether v can be sent as an id or event value and
// read back unchanged: UTF-8 without CR, LF or NUL (a client ignores an
// id line that holds a NUL).
func validField(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\r' || c == '\n' || c == 0 {
			return false
		}
	}
	return utf8.ValidString(v)
}
