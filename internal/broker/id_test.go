package broker

import (
	"strconv"
	"testing"
)

func TestParseNodeID(t *testing.T) {
	tests := []struct {
		id    string
		epoch string
		seq   uint64
		ok    bool
	}{
		{"p.abcdefgh.1", "abcdefgh", 1, true},
		{"p.a2.18446744073709551615", "a2", 18446744073709551615, true},
		{"p.abcdefghijklmnop.42", "abcdefghijklmnop", 42, true},
		{"p.abcdefghijklmnopq.42", "", 0, false}, // epoch too long
		{"p.abc.0", "abc", 0, true},
		{"p.abc.01", "", 0, false},
		{"p.abc.18446744073709551616", "", 0, false},
		{"p.ABC.1", "", 0, false},
		{"p.ab8.1", "", 0, false},
		{"p..1", "", 0, false},
		{"p.abc.", "", 0, false},
		{"p.abc", "", 0, false},
		{"p.abc.1.2", "", 0, false},
		{"p.abc.+1", "", 0, false},
		{"p.abc. 1", "", 0, false},
		{"q.abc.1", "", 0, false},
		{"1700000000000-0", "", 0, false},
		{"", "", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			epoch, seq, ok := parseNodeID(tc.id)
			if epoch != tc.epoch || seq != tc.seq || ok != tc.ok {
				t.Fatalf("parseNodeID(%q) = %q, %d, %v; want %q, %d, %v", tc.id, epoch, seq, ok, tc.epoch, tc.seq, tc.ok)
			}
			if ok && IsStreamID(tc.id) {
				t.Fatalf("%q is both a node id and a stream id", tc.id)
			}
		})
	}
}

func TestNodeIDRoundTrip(t *testing.T) {
	for i := 0; i < 100; i++ {
		e := newEpoch()
		id := formatNodeID(e, uint64(i)+1)
		epoch, seq, ok := parseNodeID(id)
		if !ok || epoch != e || seq != uint64(i)+1 {
			t.Fatalf("round trip of %q: %q %d %v", id, epoch, seq, ok)
		}
		if IsStreamID(id) {
			t.Fatalf("%q taken for a stream id", id)
		}
	}
}

func TestStreamIDs(t *testing.T) {
	tests := []struct {
		id      string
		ms, seq uint64
		ok      bool
	}{
		{"0-0", 0, 0, true},
		{"1700000000000-0", 1700000000000, 0, true},
		{"1-18446744073709551615", 1, 18446744073709551615, true},
		{"18446744073709551615-18446744073709551615", 18446744073709551615, 18446744073709551615, true},
		{"1700000000000", 0, 0, false},
		{"01-0", 0, 0, false},
		{"1-00", 0, 0, false},
		{"-1-0", 0, 0, false},
		{"1--0", 0, 0, false},
		{"1-0-0", 0, 0, false},
		{"1-", 0, 0, false},
		{"-1", 0, 0, false},
		{"+1-0", 0, 0, false},
		{"1-0 ", 0, 0, false},
		{"18446744073709551616-0", 0, 0, false},
		{"p.abc.1", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			ms, seq, ok := parseStreamID(tc.id)
			if ms != tc.ms || seq != tc.seq || ok != tc.ok {
				t.Fatalf("parseStreamID(%q) = %d, %d, %v", tc.id, ms, seq, ok)
			}
			if IsStreamID(tc.id) != tc.ok {
				t.Fatalf("IsStreamID(%q) != %v", tc.id, tc.ok)
			}
		})
	}
}

func TestCompareStreamIDs(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1-0", "1-0", 0},
		{"1-0", "1-1", -1},
		{"2-0", "1-9", 1},
		{"9-0", "10-0", -1}, // numeric, not lexical
		{"1-9", "1-10", -1},
		{"0-0", "0-1", -1},
		{"x", "0-0", -1},
		{"0-0", "x", 1},
		{"a", "b", -1},
	}
	for _, tc := range tests {
		t.Run(tc.a+"_"+tc.b, func(t *testing.T) {
			if got := CompareStreamIDs(tc.a, tc.b); got != tc.want {
				t.Fatalf("CompareStreamIDs(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
			}
			if got := CompareStreamIDs(tc.b, tc.a); got != -tc.want {
				t.Fatalf("CompareStreamIDs(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
			}
		})
	}
}

func FuzzParseNodeID(f *testing.F) {
	for _, s := range []string{"p.abcdefgh.1", "p.a.18446744073709551615", "p.abc.0", "p.abc.01", "1-0", "", "p..1", "p.abc.1.2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		epoch, seq, ok := parseNodeID(id)
		if !ok {
			return
		}
		if got := formatNodeID(epoch, seq); got != id {
			t.Fatalf("parseNodeID(%q) accepted a non-canonical id (formats as %q)", id, got)
		}
		if IsStreamID(id) {
			t.Fatalf("%q is both a node id and a stream id", id)
		}
	})
}

func FuzzStreamID(f *testing.F) {
	for _, s := range []string{"0-0", "1700000000000-0", "1-18446744073709551615", "01-0", "1-", "x", "p.abc.1"} {
		f.Add(s, "1-1")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ms, seq, ok := parseStreamID(a)
		if ok {
			if got := strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq, 10); got != a {
				t.Fatalf("parseStreamID(%q) accepted a non-canonical id (formats as %q)", a, got)
			}
		}
		ab, ba := CompareStreamIDs(a, b), CompareStreamIDs(b, a)
		if ab != -ba {
			t.Fatalf("CompareStreamIDs not antisymmetric for %q, %q: %d, %d", a, b, ab, ba)
		}
		if (ab == 0) != (a == b) {
			t.Fatalf("CompareStreamIDs(%q, %q) = %d", a, b, ab)
		}
	})
}
