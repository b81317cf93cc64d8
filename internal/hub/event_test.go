package hub

import (
	"strings"
	"testing"
)

func TestCheckEvent(t *testing.T) {
	good := []string{"", "a", "chat.message", "x-y_z:1/2", strings.Repeat("e", 64), "~!#"}
	bad := []string{"a\nb", "a\rb", "\x00", "sp ace", "tab\t", "ü", "\xff", "\x7f", strings.Repeat("e", 65), "realtime.reset", "realtime."}
	for _, name := range good {
		if err := CheckEvent(name); err != nil {
			t.Errorf("CheckEvent(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range bad {
		if CheckEvent(name) == nil {
			t.Errorf("CheckEvent(%q) = nil, want an error", name)
		}
	}
}

// FuzzCheckEvent: a name CheckEvent accepts is one an SSE event field
// carries whole (no line break, no control byte), at most 64 bytes, and
// not reserved.
func FuzzCheckEvent(f *testing.F) {
	for _, s := range []string{"", "a", "a\nb", "realtime.reset", "ü", strings.Repeat("e", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if CheckEvent(name) != nil {
			return
		}
		if len(name) > 64 || strings.HasPrefix(name, ReservedPrefix) {
			t.Fatalf("accepted %q", name)
		}
		for _, c := range []byte(name) {
			if c <= ' ' || c >= 0x7f {
				t.Fatalf("accepted %q with byte %#x", name, c)
			}
		}
	})
}
