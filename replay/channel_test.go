package replay

import (
	"strings"
	"testing"
)

func TestValidChannel(t *testing.T) {
	for _, ok := range []string{"a", "news", "chat:room-1", "user@example.com/inbox", "A_b.c", strings.Repeat("x", 200)} {
		if !ValidChannel(ok) {
			t.Errorf("%q refused", ok)
		}
	}
	for _, bad := range []string{"", strings.Repeat("x", 201), "a b", "é", "a\nb", "a*", "a?b", "a#", "a%20"} {
		if ValidChannel(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}
