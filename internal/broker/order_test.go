package broker

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

// An XREAD reply lists its streams one after the other; a subscriber of
// both channels must get the entries in the order they were added.
func TestInAddedOrder(t *testing.T) {
	res := []redis.XStream{
		{Stream: "a", Messages: []redis.XMessage{{ID: "100-0"}, {ID: "103-0"}, {ID: "105-0"}}},
		{Stream: "b", Messages: []redis.XMessage{{ID: "101-0"}, {ID: "103-0"}, {ID: "104-0"}}},
	}
	var got []string
	for _, st := range inAddedOrder(res) {
		for _, m := range st.Messages {
			got = append(got, st.Stream+m.ID)
		}
	}
	// 103 on both streams: the same millisecond, kept in reply order
	want := []string{"a100-0", "b101-0", "a103-0", "b103-0", "b104-0", "a105-0"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	one := res[:1]
	if out := inAddedOrder(one); len(out) != 1 || len(out[0].Messages) != 3 {
		t.Fatalf("a one-stream reply changed: %v", out)
	}
}
