package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The churn load: one client subscribing to ever-new channel names and
// leaving at once (the hostile pattern of the contract's "Hostile
// clients"), in batches, against the hub on Redis. Each batch opens
// churnRequests SSE subscriptions of churnWidth fresh channels each,
// closing each as soon as it is live; the channels stay idle on the node
// (idle_channels is raised above the total), so the node holds more and
// more channels. What must stay flat as they grow: the time of a batch,
// Caddy's and Redis's CPU per channel subscribed, and the time a
// legitimate client's subscribe takes meanwhile.

// churnConfig sizes the churn load.
type churnConfig struct {
	Batches     int // each of churnRequests x churnWidth fresh channels
	Concurrency int
}

const (
	churnRequests = 40
	churnWidth    = 64
)

// churnRow is one batch's figures.
type churnRow struct {
	Batch      int     `json:"batch"`
	Channels   int     `json:"channels"` // made so far, this batch's included
	Seconds    float64 `json:"seconds"`
	SubsPerSec float64 `json:"channel_subscribes_per_s"`
	CaddyUS    float64 `json:"caddy_cpu_us_per_subscribe"`
	RedisUS    float64 `json:"redis_cpu_us_per_subscribe"`
	ProbeMS    float64 `json:"legit_subscribe_ms"` // one fresh channel, after the batch
	Failures   int     `json:"failures"`
}

// runChurn runs the churn load against a hub on redis.
func (e *runEnv) runChurn(ctx context.Context, cc churnConfig) ([]*churnRow, error) {
	if e.redis == nil {
		return nil, fmt.Errorf("redis-server unavailable")
	}
	total := cc.Batches * churnRequests * churnWidth
	site := fmt.Sprintf("\trealtime /hub* {\n\t\thub\n\t\tredis redis://%s\n\t\tprefix churn:\n\t\tlimits {\n\t\t\tconnections 1000000\n\t\t\tper_ip 1000000\n\t\t\tidle_channels %d\n\t\t}\n\t}", e.redis.addr, total+1000)
	cs, err := startCaddy(ctx, e.cfg.caddyBin, e.dir, "churn", site, nil, false)
	if err != nil {
		return nil, fmt.Errorf("hub unavailable: %w", err)
	}
	defer cs.stop()
	addr := fmt.Sprintf("127.0.0.1:%d", cs.port)
	caddyPID, redisPID := cs.cmd.Process.Pid, e.redis.cmd.Process.Pid
	var rows []*churnRow
	next := 0
	for b := 1; b <= cc.Batches && ctx.Err() == nil; b++ {
		c0, r0, t0 := cpuSeconds(caddyPID), cpuSeconds(redisPID), time.Now()
		fails := churnBatch(ctx, addr, cc.Concurrency, &next)
		secs := time.Since(t0).Seconds()
		c1, r1 := cpuSeconds(caddyPID), cpuSeconds(redisPID)
		n := float64(churnRequests * churnWidth)
		probe := time.Now()
		if err := subscribeOnce(ctx, addr, []string{fmt.Sprintf("probe-%d", b)}); err != nil {
			fails++
		}
		rows = append(rows, &churnRow{
			Batch: b, Channels: next, Seconds: secs, SubsPerSec: n / secs,
			CaddyUS: (c1 - c0) / n * 1e6, RedisUS: (r1 - r0) / n * 1e6,
			ProbeMS: float64(time.Since(probe).Microseconds()) / 1000, Failures: fails,
		})
		if b == 1 || b%10 == 0 || b == cc.Batches {
			e.logf("  churn batch %d: %d channels, %.2fs, caddy %.0f µs and redis %.0f µs CPU per subscribe, legit subscribe %.1f ms, failures %d",
				b, next, secs, rows[b-1].CaddyUS, rows[b-1].RedisUS, rows[b-1].ProbeMS, fails)
		}
	}
	return rows, ctx.Err()
}

// churnBatch opens churnRequests subscriptions of churnWidth fresh
// channels, concurrency at a time, and returns how many failed.
func churnBatch(ctx context.Context, addr string, concurrency int, next *int) int {
	reqs := make(chan []string, churnRequests)
	for range churnRequests {
		chans := make([]string, churnWidth)
		for i := range chans {
			chans[i] = fmt.Sprintf("churn-%d", *next)
			*next++
		}
		reqs <- chans
	}
	close(reqs)
	var fails atomic.Int32
	var wg sync.WaitGroup
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for chans := range reqs {
				if subscribeOnce(ctx, addr, chans) != nil {
					fails.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return int(fails.Load())
}

// subscribeOnce subscribes to chans over SSE on a raw connection and
// closes it as soon as the subscription is live (the `retry:` line).
func subscribeOnce(ctx context.Context, addr string, chans []string) error {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	q := url.Values{"channel": chans}
	if _, err := fmt.Fprintf(conn, "GET /hub?%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", q.Encode(), addr); err != nil {
		return err
	}
	br := bufio.NewReader(conn)
	status, err := br.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.Contains(status, " 200 ") {
		return fmt.Errorf("subscribe: %s", strings.TrimSpace(status))
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if err == io.EOF {
				return fmt.Errorf("stream ended before retry line")
			}
			return err
		}
		if strings.Contains(line, "retry:") {
			return nil
		}
	}
}

// printChurn prints the churn rows: the first batch, every tenth and the
// last, and the last against the first.
func printChurn(w io.Writer, rows []*churnRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "%-7s %-10s %-9s %-14s %-16s %-16s %-15s %s\n", "batch", "channels", "seconds", "subscribes/s", "caddy CPU µs/sub", "redis CPU µs/sub", "legit sub ms", "failures")
	for i, r := range rows {
		if i == 0 || r.Batch%10 == 0 || i == len(rows)-1 {
			fmt.Fprintf(w, "%-7d %-10d %-9.2f %-14.0f %-16.1f %-16.1f %-15.1f %d\n", r.Batch, r.Channels, r.Seconds, r.SubsPerSec, r.CaddyUS, r.RedisUS, r.ProbeMS, r.Failures)
		}
	}
	first, last := rows[0], rows[len(rows)-1]
	fmt.Fprintf(w, "last batch / first batch: time %.2fx, caddy CPU per subscribe %.2fx, redis CPU per subscribe %.2fx, legit subscribe %.2fx\n",
		last.Seconds/first.Seconds, last.CaddyUS/first.CaddyUS, last.RedisUS/max(first.RedisUS, 1e-9), last.ProbeMS/first.ProbeMS)
}
