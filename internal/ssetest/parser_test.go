package ssetest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"
)

// parseAll reads r to its end with a Parser.
func parseAll(t testing.TB, r io.Reader) Parsed {
	t.Helper()
	var out Parsed
	p := NewParser(r)
	p.OnRetry = func(d time.Duration) { out.Retries = append(out.Retries, d) }
	p.OnComment = func(c string) { out.Comments = append(out.Comments, c) }
	for {
		ev, err := p.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out.Events = append(out.Events, ev)
	}
}

func ev(id, event, data string) Event { return Event{ID: id, Event: event, Data: data} }

var parserTests = []struct {
	name   string
	stream string
	want   Parsed
}{
	{name: "empty", stream: ""},
	{name: "one event", stream: "data: x\n\n", want: Parsed{Events: []Event{ev("", "message", "x")}}},
	{name: "CRLF", stream: "data: x\r\nid: 1\r\n\r\n", want: Parsed{Events: []Event{ev("1", "message", "x")}}},
	{name: "CR", stream: "data: x\rdata: y\r\r", want: Parsed{Events: []Event{ev("", "message", "x\ny")}}},
	{name: "mixed line ends", stream: "data: a\r\ndata: b\rdata: c\n\r\n", want: Parsed{Events: []Event{ev("", "message", "a\nb\nc")}}},
	{name: "CR LF LF is two line ends", stream: "data: a\r\n\n", want: Parsed{Events: []Event{ev("", "message", "a")}}},
	{name: "LF CR is two line ends", stream: "data: a\n\r", want: Parsed{Events: []Event{ev("", "message", "a")}}},
	{name: "no space after colon", stream: "data:x\n\n", want: Parsed{Events: []Event{ev("", "message", "x")}}},
	{name: "one space stripped", stream: "data:  x \n\n", want: Parsed{Events: []Event{ev("", "message", " x ")}}},
	{name: "tab not stripped", stream: "data:\tx\n\n", want: Parsed{Events: []Event{ev("", "message", "\tx")}}},
	{name: "field without colon", stream: "data\ndata\n\n", want: Parsed{Events: []Event{ev("", "message", "\n")}}},
	{name: "empty data dispatches empty string", stream: "data:\n\n", want: Parsed{Events: []Event{ev("", "message", "")}}},
	{name: "no data no event", stream: "event: x\nid: 5\n\ndata: y\n\n",
		want: Parsed{Events: []Event{ev("5", "message", "y")}}},
	{name: "trailing LF stripped once", stream: "data: a\ndata:\n\n", want: Parsed{Events: []Event{ev("", "message", "a\n")}}},
	{name: "event type", stream: "event: add\ndata: 1\n\ndata: 2\n\n",
		want: Parsed{Events: []Event{ev("", "add", "1"), ev("", "message", "2")}}},
	{name: "empty event type is message", stream: "event:\ndata: 1\n\n", want: Parsed{Events: []Event{ev("", "message", "1")}}},
	{name: "id persists", stream: "id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n",
		want: Parsed{Events: []Event{ev("1", "message", "a"), ev("1", "message", "b"), ev("", "message", "c")}}},
	{name: "id set by event without data", stream: "id: 9\n\ndata: a\n\n", want: Parsed{Events: []Event{ev("9", "message", "a")}}},
	{name: "id with NUL ignored", stream: "id: 1\ndata: a\n\nid: 2\x00\ndata: b\n\n",
		want: Parsed{Events: []Event{ev("1", "message", "a"), ev("1", "message", "b")}}},
	{name: "unknown fields ignored", stream: "foo: bar\nDATA: no\ndata: yes\n\n", want: Parsed{Events: []Event{ev("", "message", "yes")}}},
	{name: "comments", stream: ": hi\n:\n:  two\ndata: x\n\n",
		want: Parsed{Events: []Event{ev("", "message", "x")}, Comments: []string{"hi", "", " two"}}},
	{name: "retry", stream: "retry: 1500\nretry: 1.5\nretry: -1\nretry:\nretry: 20x\nretry:0\n",
		want: Parsed{Retries: []time.Duration{1500 * time.Millisecond, 0}}},
	{name: "retry huge saturates", stream: "retry: 99999999999999999999999\n",
		want: Parsed{Retries: []time.Duration{1<<63 - 1}}},
	{name: "BOM dropped once", stream: "\xEF\xBB\xBFdata: x\n\n\xEF\xBB\xBFdata: y\n\n",
		want: Parsed{Events: []Event{ev("", "message", "x")}}},
	{name: "BOM then blank line", stream: "\xEF\xBB\xBF\ndata: x\n\n", want: Parsed{Events: []Event{ev("", "message", "x")}}},
	{name: "two BOMs", stream: "\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\ndata: y\n\n",
		want: Parsed{Events: []Event{ev("", "message", "y")}}},
	{name: "unterminated event discarded", stream: "data: x\n\ndata: y\n", want: Parsed{Events: []Event{ev("", "message", "x")}}},
	{name: "unterminated line discarded", stream: "data: x\n\nid: 3", want: Parsed{Events: []Event{ev("", "message", "x")}}},
	{name: "invalid UTF-8 replaced", stream: "data: a\xffb\xe2\x82c\n\n",
		want: Parsed{Events: []Event{ev("", "message", "a\uFFFDb\uFFFDc")}}},
	{name: "invalid UTF-8 before colon", stream: "data\xe2\x82: x\n\n"},
	{name: "space before colon", stream: "data : x\n\n"},
	{name: "colon in value", stream: "data: a:b: c\n\n", want: Parsed{Events: []Event{ev("", "message", "a:b: c")}}},
}

func TestParser(t *testing.T) {
	for _, tc := range parserTests {
		t.Run(tc.name, func(t *testing.T) {
			readers := map[string]io.Reader{
				"whole":    strings.NewReader(tc.stream),
				"one byte": iotest.OneByteReader(strings.NewReader(tc.stream)),
				"half":     iotest.HalfReader(strings.NewReader(tc.stream)),
			}
			for name, r := range readers {
				if got := parseAll(t, r); !Equal(got, tc.want, true) {
					t.Errorf("%s: got %v, want %v", name, got, tc.want)
				}
			}
		})
	}
}

func TestParserReadError(t *testing.T) {
	boom := errors.New("boom")
	p := NewParser(io.MultiReader(strings.NewReader("data: x\n\ndata: y"), iotest.ErrReader(boom)))
	if e, err := p.Next(); err != nil || e.Data != "x" {
		t.Fatalf("got %+v, %v", e, err)
	}
	if _, err := p.Next(); !errors.Is(err, boom) {
		t.Fatalf("got %v, want %v", err, boom)
	}
}

// TestParserLive checks that an event ending in CR is dispatched at once,
// without waiting for the byte after it (which may never come on a live
// stream), and that an LF arriving later is still taken as part of CRLF.
func TestParserLive(t *testing.T) {
	pr, pw := io.Pipe()
	defer pr.Close()
	p := NewParser(pr)
	got := make(chan Event)
	errc := make(chan error, 1)
	go func() {
		for {
			e, err := p.Next()
			if err != nil {
				errc <- err
				return
			}
			got <- e
		}
	}()
	want := func(data string) {
		t.Helper()
		select {
		case e := <-got:
			if e.Data != data {
				t.Fatalf("got %q, want %q", e.Data, data)
			}
		case err := <-errc:
			t.Fatal(err)
		case <-time.After(5 * time.Second):
			t.Fatalf("no event %q", data)
		}
	}
	must := func(s string) {
		if _, err := io.WriteString(pw, s); err != nil {
			t.Fatal(err)
		}
	}
	must("data: a\r\r")
	want("a")
	must("\ndata: b\r\n\r")
	want("b")
	must("\n\ndata: c\n\n")
	want("c")
	_ = pw.Close()
	if err := <-errc; !errors.Is(err, io.EOF) {
		t.Fatalf("got %v, want EOF", err)
	}
}

func TestAppendDecoded(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"abc ✓ 🎉", "abc ✓ 🎉"},
		// Unicode 16.0, table 3-11 ("U+FFFD for maximal subparts"), as the
		// WHATWG UTF-8 decoder does it.
		{"\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64", "a\uFFFD\uFFFD\uFFFDb\uFFFDc\uFFFD\uFFFDd"},
		{"\xC0\xAF", "\uFFFD\uFFFD"},           // overlong: C0 is never valid
		{"\xE0\x80\xAF", "\uFFFD\uFFFD\uFFFD"}, // overlong 3-byte
		{"\xED\xA0\x80", "\uFFFD\uFFFD\uFFFD"}, // surrogate
		{"\xF4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"\xF0\x9F\x8E", "\uFFFD"},          // truncated at the end
		{"\xF0\x9F\x8Ex", "\uFFFDx"},        // truncated before ASCII
		{"\xE2\x82\xE2\x82\xAC", "\uFFFD€"}, // truncated then valid
		{"\xFF\xFE", "\uFFFD\uFFFD"},
	}
	for _, tc := range tests {
		if got := string(AppendDecoded(nil, []byte(tc.in))); got != tc.want {
			t.Errorf("AppendDecoded(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzParser compares the streaming parser, fed in pieces of every size,
// with the whole-stream reference.
func FuzzParser(f *testing.F) {
	for _, tc := range parserTests {
		f.Add([]byte(tc.stream))
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		want := Reference(stream)
		for _, r := range []io.Reader{
			bytes.NewReader(stream),
			iotest.OneByteReader(bytes.NewReader(stream)),
			bufio.NewReaderSize(iotest.HalfReader(bytes.NewReader(stream)), 16),
		} {
			got := parseAll(t, r)
			if !Equal(got, want, true) {
				t.Fatalf("%q:\ngot  %v\nwant %v", stream, got, want)
			}
			for _, e := range got.Events {
				if !utf8.ValidString(e.Data) || !utf8.ValidString(e.ID) || !utf8.ValidString(e.Event) {
					t.Fatalf("%q: invalid UTF-8 in %+v", stream, e)
				}
			}
		}
	})
}
