package replay

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/caddy-realtime/realtime/internal/broker"
)

func benchMessages(ch string, n int) []*broker.Message {
	ms := make([]*broker.Message, n)
	data := make([]byte, 128)
	for i := range ms {
		ms[i] = &broker.Message{Channel: ch, ID: "1700000000000-" + strconv.Itoa(i+1), Data: data}
	}
	return ms
}

// BenchmarkAppend appends to a full 1000-message log (the steady state:
// the ring overwrites its oldest entry).
func BenchmarkAppend(b *testing.B) {
	c, _ := newTestCache(b, Options{})
	ms := benchMessages("bench", 1<<16)
	for _, m := range ms[:2000] {
		c.Append(m)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c.Append(ms[i&(1<<16-1)])
	}
}

// BenchmarkAppendParallel appends to many channels at once.
func BenchmarkAppendParallel(b *testing.B) {
	c, _ := newTestCache(b, Options{})
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ms := benchMessages(fmt.Sprintf("bench%d", next.Add(1)), 1<<12)
		for i := 0; pb.Next(); i++ {
			c.Append(ms[i&(1<<12-1)])
		}
	})
}

func BenchmarkAfter(b *testing.B) {
	c, _ := newTestCache(b, Options{})
	ms := benchMessages("bench", 1000)
	for _, m := range ms {
		c.Append(m)
	}
	for _, bc := range []struct {
		name string
		id   string
	}{
		{"newest", ms[999].ID},
		{"middle", ms[499].ID},
		{"absent", "1700000000000-1000000"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.After("bench", bc.id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var benchPositions = []Position{
	{Channel: "news", ID: "1700000000000-12"},
	{Channel: "chat:room-42", ID: "p.k3x9.1234"},
	{Channel: "user/42@example", ID: ""},
}

func BenchmarkEncodeCursor(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		EncodeCursor(benchPositions)
	}
}

func BenchmarkDecodeCursor(b *testing.B) {
	cur := EncodeCursor(benchPositions)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeCursor(cur); err != nil {
			b.Fatal(err)
		}
	}
}
