package broker

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/testredis"
	"github.com/redis/go-redis/v9"
)

// TestRedisStreamReadersShareChannels subscribes more channels than one
// stream reader takes: each is read (by one of several readers, each
// XREAD naming readerSize channels at most), and the readers left empty
// are retired, their connections closed.
func TestRedisStreamReadersShareChannels(t *testing.T) {
	srv := testredis.Start(t)
	b, rec := newTestRedis(t, srv, RedisOptions{})
	client := srv.Client()
	ctx := context.Background()
	n := 2*readerSize + 10
	for i := range n {
		subscribe(t, b, "c-"+strconv.Itoa(i))
	}
	awaitXReads(t, client, (n+readerSize-1)/readerSize)
	pipe := client.Pipeline()
	for i := range n {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:c-" + strconv.Itoa(i), Values: []any{"data", "x"}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]bool)
	for len(seen) < n {
		e := rec.next(wait)
		if e.Msg == nil || seen[e.Channel] {
			t.Fatalf("after %d channels: %+v", len(seen), e)
		}
		seen[e.Channel] = true
	}
	for i := range n {
		b.Unsubscribe("c-" + strconv.Itoa(i))
	}
	// the primary reader, the one kept, reads the next channel alone
	subscribe(t, b, "again")
	awaitXReads(t, client, 1)
}

// awaitXReads waits until exactly want connections of srv are blocked in
// or were last used for XREAD (a retired reader's connection is closed).
func awaitXReads(t *testing.T, client *redis.Client, want int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		list, err := client.ClientList(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Count(list, "cmd=xread")
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections reading streams, want %d:\n%s", got, want, list)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkRedisChurn measures what a subscribe and unsubscribe of a
// fresh channel costs this process and Redis while the node holds many
// other channels: the cost must not grow with them (a churning client
// would otherwise make every subscribe of the node slower). Besides
// ns/op it reports the CPU of this process and of Redis per operation.
func BenchmarkRedisChurn(b *testing.B) {
	for _, held := range []int{100, 10000} {
		b.Run(fmt.Sprintf("held=%d", held), func(b *testing.B) {
			srv := testredis.Start(b)
			br, err := NewRedis(RedisOptions{URLs: []string{srv.URL()}}, make(chanHandler, 1), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			ctx := context.Background()
			for i := range held {
				if _, err := br.Subscribe(ctx, "held-"+strconv.Itoa(i)); err != nil {
					b.Fatal(err)
				}
			}
			selfCPU, redisCPU := processCPU(b), serverCPU(b, srv)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				name := "fresh-" + strconv.Itoa(i)
				if _, err := br.Subscribe(ctx, name); err != nil {
					b.Fatal(err)
				}
				br.Unsubscribe(name)
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU(b)-selfCPU).Microseconds())/float64(b.N), "cpu-µs/op")
			b.ReportMetric(float64((serverCPU(b, srv)-redisCPU).Microseconds())/float64(b.N), "redis-cpu-µs/op")
		})
	}
}

// processCPU returns the user and system CPU time this process used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverCPU returns the user and system CPU time the Redis server used
// (INFO cpu).
func serverCPU(b *testing.B, srv *testredis.Server) time.Duration {
	info, err := srv.Client().Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		k, v, _ := strings.Cut(line, ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

// After a restart of Redis every stream reader reconnects and goes on
// reading its channels, the last reader's as the first's.
func TestRedisStreamReadersAfterRestart(t *testing.T) {
	srv := testredis.Start(t)
	hl := &healthLog{ch: make(chan bool, 16)}
	b, rec := newTestRedis(t, srv, RedisOptions{OnHealth: hl.on})
	hl.expect(t, true)
	n := readerSize + 10 // two readers
	for i := range n {
		subscribe(t, b, "c-"+strconv.Itoa(i))
	}
	client := srv.Client()
	awaitXReads(t, client, 2)
	srv.Kill()
	hl.expect(t, false)
	srv.Restart()
	hl.expect(t, true)
	// streams do not survive this restart; a new entry on a channel of
	// each reader is read, after the channel's gap for its pub/sub
	ctx := context.Background()
	for _, ch := range []string{"c-0", "c-" + strconv.Itoa(n-1)} {
		id, err := client.XAdd(ctx, &redis.XAddArgs{Stream: "realtime:" + ch, Values: []any{"data", "after"}}).Result()
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * wait)
		for {
			e := rec.nextOf(ch, time.Until(deadline))
			if e.Msg != nil {
				if e.Msg.ID != id || string(e.Msg.Data) != "after" {
					t.Fatalf("%s after the restart: %+v, want entry %s", ch, e.Msg, id)
				}
				break
			}
		}
	}
}
