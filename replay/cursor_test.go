package replay

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"0-0", true},
		{"1700000000000-0", true},
		{"1700000000000-42", true},
		{"18446744073709551615-18446744073709551615", true},
		{"p.abc123.1", true},
		{"p.x.0", true},
		{"p." + strings.Repeat("a", 32) + ".7", true},
		{"", false},
		{"-", false},
		{"1-", false},
		{"-1", false},
		{"1", false},
		{"01-0", false},
		{"1-00", false},
		{"+1-0", false},
		{"1-0-0", false},
		{"18446744073709551616-0", false},
		{"1-18446744073709551616", false},
		{"p.", false},
		{"p..1", false},
		{"p.ab", false},
		{"p.ab.", false},
		{"p.AB.1", false},
		{"p.a-b.1", false},
		{"p.a.01", false},
		{"p.a.1.2", false},
		{"p." + strings.Repeat("a", 33) + ".7", false},
		{"c1.abc", false},
		{"1-0\n", false},
	}
	for _, tc := range tests {
		if got := ValidID(tc.id); got != tc.want {
			t.Errorf("ValidID(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

var allChars = "AZaz09_-.:@/"

var cursorRoundTrips = [][]Position{
	{{Channel: "news", ID: "1700000000000-3"}},
	{{Channel: "news", ID: "p.k3x.17"}},
	{{Channel: "a", ID: "1-0"}, {Channel: "b", ID: "p.e.3"}},
	{{Channel: "a", ID: "1-0"}, {Channel: "b", ID: ""}, {Channel: "c", ID: "0-0"}},
	{{Channel: allChars, ID: "p.z.0"}, {Channel: strings.Repeat("x", 200), ID: "18446744073709551615-18446744073709551615"}},
}

func TestCursorRoundTrip(t *testing.T) {
	for _, ps := range cursorRoundTrips {
		cur := EncodeCursor(ps)
		if strings.ContainsAny(cur, "\r\n\x00 %+=&#?") {
			t.Errorf("cursor %q has characters unfit for an SSE id or a query", cur)
		}
		for _, r := range cur {
			if r > 0x7e || r < 0x21 {
				t.Errorf("cursor %q is not printable ASCII", cur)
			}
		}
		got, err := DecodeCursor(cur)
		if err != nil {
			t.Fatalf("DecodeCursor(%q): %v", cur, err)
		}
		want := ps
		if len(ps) == 1 {
			if cur != ps[0].ID {
				t.Errorf("single position encodes as %q, want the bare id %q", cur, ps[0].ID)
			}
			want = []Position{{ID: ps[0].ID}}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("DecodeCursor(EncodeCursor(%v)) = %v", ps, got)
		}
	}
}

// nonCanonical sets a padding bit in the last character of a cursor
// whose payload length is not a multiple of 3.
func nonCanonical(cur string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, cur[len(cur)-1])
	return cur[:len(cur)-1] + string(alphabet[i|1])
}

func TestDecodeCursorErrors(t *testing.T) {
	pair := func(ch, id string) string { return string(rune(len(ch))) + ch + string(rune(len(id))) + id }
	enc := func(raw string) string { return cursorPrefix + b64.EncodeToString([]byte(raw)) }
	tests := []struct{ name, cursor string }{
		{"empty", ""},
		{"garbage", "hello world"},
		{"prefix only", "c1."},
		{"bad base64", "c1.!!!!"},
		{"padded base64", "c1.AWEDMS0wAWIDMi0w=="},
		{"non-canonical base64", nonCanonical(enc(pair("a", "1-0") + pair("bb", "2-0")))},
		{"one position", enc(pair("a", "1-0"))},
		{"duplicate channel", enc(pair("a", "1-0") + pair("a", "2-0"))},
		{"bad channel", enc(pair("a b", "1-0") + pair("c", "2-0"))},
		{"empty channel", enc(pair("", "1-0") + pair("c", "2-0"))},
		{"bad id", enc(pair("a", "x") + pair("c", "2-0"))},
		{"truncated", enc(pair("a", "1-0") + pair("c", "2-0"))[:12]},
		{"length past end", enc(pair("a", "1-0") + "\x05ab")},
		{"too long", cursorPrefix + strings.Repeat("A", MaxCursorLen)},
		{"newline", "1-0\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps, err := DecodeCursor(tc.cursor)
			if !errors.Is(err, ErrBadCursor) {
				t.Fatalf("DecodeCursor(%q) = %v, %v; want ErrBadCursor", tc.cursor, ps, err)
			}
		})
	}
}

func TestParseCursor(t *testing.T) {
	multi := EncodeCursor([]Position{{Channel: "a", ID: "1-0"}, {Channel: "c", ID: "p.e.2"}})
	tests := []struct {
		name     string
		cursor   string
		channels []string
		want     []Position
		err      bool
	}{
		{"bare id, one channel", "5-1", []string{"a"}, []Position{{"a", "5-1"}}, false},
		{"bare id, several channels", "5-1", []string{"a", "b"}, []Position{{"a", ""}, {"b", ""}}, false},
		{"multi, all named", multi, []string{"c", "a"}, []Position{{"c", "p.e.2"}, {"a", "1-0"}}, false},
		{"multi, one missing", multi, []string{"a", "b", "c"}, []Position{{"a", "1-0"}, {"b", ""}, {"c", "p.e.2"}}, false},
		{"multi, many channels", multi, []string{"z1", "z2", "z3", "z4", "z5", "z6", "z7", "z8", "c", "a"},
			[]Position{{"z1", ""}, {"z2", ""}, {"z3", ""}, {"z4", ""}, {"z5", ""}, {"z6", ""}, {"z7", ""}, {"z8", ""}, {"c", "p.e.2"}, {"a", "1-0"}}, false},
		{"multi, channel not subscribed", multi, []string{"a"}, []Position{{"a", "1-0"}}, false},
		{"multi, channel not subscribed, many", multi, []string{"z1", "z2", "z3", "z4", "z5", "z6", "z7", "z8", "a"}, []Position{{"z1", ""}, {"z2", ""}, {"z3", ""}, {"z4", ""}, {"z5", ""}, {"z6", ""}, {"z7", ""}, {"z8", ""}, {"a", "1-0"}}, false},
		{"garbage", "%%%", []string{"a"}, nil, true},
		{"no channels", "1-0", nil, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCursor(tc.cursor, tc.channels)
			if tc.err {
				if !errors.Is(err, ErrBadCursor) {
					t.Fatalf("got %v, %v; want ErrBadCursor", got, err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func FuzzDecodeCursor(f *testing.F) {
	for _, ps := range cursorRoundTrips {
		f.Add(EncodeCursor(ps))
	}
	for _, s := range []string{"", "c1.", "c1.AWEDMS0w", "p.a.1", "1-0", "c1.!!"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := DecodeCursor(s)
		if err != nil {
			if !errors.Is(err, ErrBadCursor) {
				t.Fatalf("error %v does not wrap ErrBadCursor", err)
			}
			return
		}
		enc := EncodeCursor(ps)
		if enc != s {
			t.Fatalf("EncodeCursor(DecodeCursor(%q)) = %q", s, enc)
		}
		again, err := DecodeCursor(enc)
		if err != nil || !reflect.DeepEqual(again, ps) {
			t.Fatalf("second decode of %q: %v, %v; first %v", enc, again, err, ps)
		}
		if strings.ContainsAny(enc, "\r\n") {
			t.Fatalf("cursor %q has a line break", enc)
		}
	})
}

func FuzzParseCursor(f *testing.F) {
	for _, ps := range cursorRoundTrips {
		var chans []string
		for _, p := range ps {
			chans = append(chans, p.Channel)
		}
		f.Add(EncodeCursor(ps), strings.Join(chans, ","))
	}
	f.Add("1-0", "a,b")
	f.Add("p.x.1", "")
	f.Fuzz(func(t *testing.T, cursor, list string) {
		var channels []string
		if list != "" {
			channels = strings.Split(list, ",")
		}
		got, err := ParseCursor(cursor, channels)
		if err != nil {
			if !errors.Is(err, ErrBadCursor) {
				t.Fatalf("error %v does not wrap ErrBadCursor", err)
			}
			return
		}
		if len(got) != len(channels) {
			t.Fatalf("%d positions for %d channels", len(got), len(channels))
		}
		for i, p := range got {
			if p.Channel != channels[i] {
				t.Fatalf("position %d is for %q, want %q", i, p.Channel, channels[i])
			}
			if p.ID != "" && !ValidID(p.ID) {
				t.Fatalf("position %d has invalid id %q", i, p.ID)
			}
		}
	})
}

func ExampleEncodeCursor() {
	fmt.Println(EncodeCursor([]Position{{Channel: "news", ID: "1700000000000-0"}}))
	fmt.Println(EncodeCursor([]Position{{Channel: "news", ID: "1700000000000-0"}, {Channel: "chat", ID: "p.x7.4"}}))
	// Output:
	// 1700000000000-0
	// c1.BG5ld3MPMTcwMDAwMDAwMDAwMC0wBGNoYXQGcC54Ny40
}
