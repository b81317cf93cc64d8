package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The presence load: N SSE subscribers over presenceChannels channels,
// each with its own ticket (its own member), connected at a bounded
// rate, then M messages to every channel; once on channels whose rule
// has `presence` and `notify` (webhooks to a receiver in this process),
// once on channels without a rule, in the same Caddy and Redis. Reported
// as ratios, presence on to off: Caddy's CPU per subscribe and per
// delivery, Redis's CPU and commands per subscribe; and the webhooks'
// latency, from the transition (the event's time) to the POST's arrival.

const (
	presenceChannels = 100
	presenceSecret   = "bench-presence-secret-0123456789abcdef"
	presencePubKey   = "bench-presence-key"
)

// presenceConfig sizes the presence load.
type presenceConfig struct {
	N           int
	Messages    int // per channel
	ConnectRate float64
}

// presenceRow is one variant's figures.
type presenceRow struct {
	Presence      bool    `json:"presence"`
	Connected     int     `json:"connected"`
	ConnectSecs   float64 `json:"connect_seconds"`
	CaddyUSPerSub float64 `json:"caddy_cpu_us_per_subscribe"`
	RedisUSPerSub float64 `json:"redis_cpu_us_per_subscribe"`
	RedisCmdsSub  float64 `json:"redis_commands_per_subscribe"`
	Deliveries    int64   `json:"deliveries"`
	Expected      int64   `json:"deliveries_expected"`
	CaddyUSPerDel float64 `json:"caddy_cpu_us_per_delivery"`
	Webhooks      int     `json:"webhook_events,omitempty"`
	HookP50MS     float64 `json:"webhook_latency_p50_ms,omitempty"`
	HookP99MS     float64 `json:"webhook_latency_p99_ms,omitempty"`
	HookMaxMS     float64 `json:"webhook_latency_max_ms,omitempty"`
	Err           string  `json:"first_error,omitempty"`
}

// runPresence runs the load with presence off, then on.
func (e *runEnv) runPresence(ctx context.Context, pc presenceConfig) ([]*presenceRow, error) {
	if e.redis == nil {
		return nil, fmt.Errorf("redis-server unavailable")
	}
	hooks := newHookSink()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: hooks}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	site := fmt.Sprintf(`	realtime /hub* {
		hub
		redis redis://%s
		prefix presence:
		publish_key %s
		ticket {
			secret %s
		}
		limits {
			connections 1000000
			per_ip 1000000
		}
		channels on:* {
			presence
			notify http://%s/hooks
		}
	}`, e.redis.addr, presencePubKey, presenceSecret, ln.Addr())
	cs, err := startCaddy(ctx, e.cfg.caddyBin, e.dir, "presence", site, nil, false)
	if err != nil {
		return nil, fmt.Errorf("hub unavailable: %w", err)
	}
	defer cs.stop()
	addr := fmt.Sprintf("127.0.0.1:%d", cs.port)
	var rows []*presenceRow
	for _, on := range []bool{false, true} {
		hooks.reset()
		row, err := e.presenceVariant(ctx, addr, cs.cmd.Process.Pid, on, pc, hooks)
		if err != nil {
			return rows, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func (e *runEnv) presenceVariant(ctx context.Context, addr string, caddyPID int, on bool, pc presenceConfig, hooks *hookSink) (*presenceRow, error) {
	prefix := "off:"
	if on {
		prefix = "on:"
	}
	row := &presenceRow{Presence: on}
	redisPID := e.redis.cmd.Process.Pid
	cmds0, _ := redisCommands(e.redis.addr)
	c0, r0, t0 := cpuSeconds(caddyPID), cpuSeconds(redisPID), time.Now()

	var got atomic.Int64
	var wg sync.WaitGroup
	cctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		wg.Wait()
	}()
	var conns []net.Conn
	var connMu sync.Mutex
	live := make(chan error, pc.N)
	for i := 0; i < pc.N && ctx.Err() == nil; i++ {
		due := t0.Add(time.Duration(float64(i) / pc.ConnectRate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := fmt.Sprintf("%s%d", prefix, i%presenceChannels)
			conn, err := presenceSubscribe(cctx, addr, ch, fmt.Sprintf("u%d", i))
			live <- err
			if err != nil {
				return
			}
			connMu.Lock()
			conns = append(conns, conn)
			connMu.Unlock()
			countEvents(conn, &got)
		}()
	}
	for range pc.N {
		if err := <-live; err == nil {
			row.Connected++
		} else if row.Err == "" {
			row.Err = err.Error()
		}
	}
	// the node writes presence from one goroutine: let it finish
	if on {
		waitUntil(ctx, 30*time.Second, func() bool { return hooks.count() >= row.Connected+presenceChannels })
	}
	row.ConnectSecs = time.Since(t0).Seconds()
	c1, r1 := cpuSeconds(caddyPID), cpuSeconds(redisPID)
	cmds1, _ := redisCommands(e.redis.addr)
	n := float64(max(row.Connected, 1))
	row.CaddyUSPerSub = (c1 - c0) / n * 1e6
	row.RedisUSPerSub = (r1 - r0) / n * 1e6
	row.RedisCmdsSub = float64(cmds1-cmds0) / n

	// every channel gets Messages messages, PUBLISHed
	rdb, err := net.Dial("tcp", e.redis.addr)
	if err != nil {
		return row, err
	}
	defer rdb.Close()
	go func() { _, _ = io.Copy(io.Discard, rdb) }()
	c2 := cpuSeconds(caddyPID)
	got.Store(0)
	for m := range pc.Messages {
		var b strings.Builder
		for k := range presenceChannels {
			payload := fmt.Sprintf("message %d", m)
			key := fmt.Sprintf("presence:%s%d", prefix, k)
			fmt.Fprintf(&b, "*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(key), key, len(payload), payload)
		}
		if _, err := io.WriteString(rdb, b.String()); err != nil {
			return row, err
		}
		time.Sleep(200 * time.Millisecond)
	}
	row.Expected = int64(row.Connected) * int64(pc.Messages)
	waitUntil(ctx, 15*time.Second, func() bool { return got.Load() >= row.Expected })
	row.Deliveries = got.Load()
	row.CaddyUSPerDel = (cpuSeconds(caddyPID) - c2) / float64(max(row.Deliveries, 1)) * 1e6
	if on {
		lat := hooks.latencies()
		row.Webhooks = len(lat)
		if len(lat) > 0 {
			slices.Sort(lat)
			row.HookP50MS = lat[len(lat)/2]
			row.HookP99MS = lat[len(lat)*99/100]
			row.HookMaxMS = lat[len(lat)-1]
		}
	}
	connMu.Lock()
	for _, c := range conns {
		_ = c.Close()
	}
	connMu.Unlock()
	if row.Err != "" {
		e.logf("  presence %v: first connect error: %s", on, row.Err)
	}
	e.logf("  presence %v: %d connected in %.1fs, caddy %.0f µs and redis %.0f µs CPU and %.1f redis commands per subscribe; %d/%d deliveries, caddy %.2f µs CPU each; webhooks %d, p50 %.0f ms, p99 %.0f ms",
		on, row.Connected, row.ConnectSecs, row.CaddyUSPerSub, row.RedisUSPerSub, row.RedisCmdsSub, row.Deliveries, row.Expected, row.CaddyUSPerDel, row.Webhooks, row.HookP50MS, row.HookP99MS)
	return row, nil
}

// presenceSubscribe opens an SSE subscription to channel with a ticket
// of sub and returns the connection once it is live.
func presenceSubscribe(ctx context.Context, addr, channel, sub string) (net.Conn, error) {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": sub, "channels": []string{channel}, "exp": time.Now().Add(time.Hour).Unix(), "jti": sub + "-" + channel + "-" + strconv.FormatInt(time.Now().UnixNano(), 36),
	}).SignedString([]byte(presenceSecret))
	if err != nil {
		return nil, err
	}
	conn, err := dialer().DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { _ = conn.Close() })
	q := url.Values{"channel": {channel}, "ticket": {tok}}
	if _, err := fmt.Fprintf(conn, "GET /hub?%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", q.Encode(), addr); err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		conn.Close()
		return nil, fmt.Errorf("subscribe: %q %v", strings.TrimSpace(status), err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			conn.Close()
			return nil, err
		}
		if strings.Contains(line, "retry:") {
			break
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	return &bufConn{Conn: conn, br: br}, nil
}

type bufConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.br.Read(p) }

// countEvents counts the `data:` lines of conn until it closes.
func countEvents(conn net.Conn, got *atomic.Int64) {
	br := bufio.NewReader(conn)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
		if len(line) > 5 && string(line[:5]) == "data:" {
			got.Add(1)
		}
	}
}

// redisCommands is Redis's total_commands_processed.
func redisCommands(addr string) (int64, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, "*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n"); err != nil {
		return 0, err
	}
	br := bufio.NewReader(conn)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return 0, err
		}
		if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
}

func waitUntil(ctx context.Context, d time.Duration, cond func() bool) {
	deadline := time.Now().Add(d)
	for !cond() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
}

// hookSink is the app's webhook endpoint: it records, for each event,
// the time from the transition to the POST's arrival.
type hookSink struct {
	mu  sync.Mutex
	lat []float64 // ms
}

func newHookSink() *hookSink { return &hookSink{} }

func (h *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	var body struct {
		Events []struct {
			Time time.Time `json:"time"`
		} `json:"events"`
	}
	_ = json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body)
	h.mu.Lock()
	for _, e := range body.Events {
		h.lat = append(h.lat, float64(now.Sub(e.Time))/float64(time.Millisecond))
	}
	h.mu.Unlock()
}

func (h *hookSink) reset()     { h.mu.Lock(); h.lat = nil; h.mu.Unlock() }
func (h *hookSink) count() int { h.mu.Lock(); defer h.mu.Unlock(); return len(h.lat) }
func (h *hookSink) latencies() []float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]float64(nil), h.lat...)
}

// printPresence prints both variants and presence on against off.
func printPresence(w io.Writer, rows []*presenceRow) {
	fmt.Fprintf(w, "%-9s %-10s %-9s %-17s %-17s %-15s %-20s %-17s %s\n", "presence", "connected", "seconds", "caddy CPU µs/sub", "redis CPU µs/sub", "redis cmds/sub", "deliveries", "caddy CPU µs/del", "webhooks (p50/p99/max ms)")
	for _, r := range rows {
		hooks := "-"
		if r.Presence {
			hooks = fmt.Sprintf("%d (%.0f/%.0f/%.0f)", r.Webhooks, r.HookP50MS, r.HookP99MS, r.HookMaxMS)
		}
		fmt.Fprintf(w, "%-9v %-10d %-9.1f %-17.1f %-17.1f %-15.2f %-20s %-17.2f %s\n", r.Presence, r.Connected, r.ConnectSecs, r.CaddyUSPerSub, r.RedisUSPerSub, r.RedisCmdsSub,
			fmt.Sprintf("%d/%d", r.Deliveries, r.Expected), r.CaddyUSPerDel, hooks)
	}
	if len(rows) == 2 {
		off, on := rows[0], rows[1]
		fmt.Fprintf(w, "presence on / off: caddy CPU per subscribe %.2fx, redis CPU per subscribe %.2fx, redis commands per subscribe %.2f vs %.2f, caddy CPU per delivery %.2fx\n",
			on.CaddyUSPerSub/max(off.CaddyUSPerSub, 1e-9), on.RedisUSPerSub/max(off.RedisUSPerSub, 1e-9), on.RedisCmdsSub, off.RedisCmdsSub, on.CaddyUSPerDel/max(off.CaddyUSPerDel, 1e-9))
	}
}
