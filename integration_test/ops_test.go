package integration_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/integration_test/harness"
	"github.com/caddy-realtime/realtime/internal/testredis"
	"github.com/gorilla/websocket"
)

// Issue 8: operations. Reloads with many open streams, Redis going away
// and coming back, limits, metrics.

const opsSite = `
{
	{{.Globals}}
}

:{{.HTTPPort}} {
	{{.Before}}
	realtime /hub* {
		hub
		{{.Redis}}
		publish_key k
		heartbeat {{.Heartbeat}}
		longpoll_timeout 30s
		{{.Extra}}
	}
	respond /other "{{.Marker}}"
}
`

func startOps(t *testing.T, redisLine, heartbeat, extra string) *harness.Caddy {
	t.Helper()
	return harness.StartCaddy(t, opsSite,
		harness.Var("Globals", ""),
		harness.Var("Before", ""),
		harness.Var("Redis", redisLine),
		harness.Var("Heartbeat", heartbeat),
		harness.Var("Extra", extra),
		harness.Var("Marker", "one"),
	)
}

// openSSE opens a hub SSE subscription and waits for its retry line (the
// subscription is live).
func openSSE(t *testing.T, client *http.Client, u string) (*http.Response, *bufio.Reader) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("subscribe: %s", resp.Status)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "retry:") {
		t.Fatalf("first line %q, %v", line, err)
	}
	return resp, br
}

func publishHTTP(t *testing.T, c *harness.Caddy, channel, data string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", c.URL("/hub?channel="+channel), strings.NewReader(data))
	req.Header.Set("Authorization", "Bearer k")
	resp, err := harness.HTTP1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// readUntil reads SSE lines until one contains want, within d.
func readUntil(t *testing.T, br *bufio.Reader, want string, d time.Duration) []string {
	t.Helper()
	type res struct {
		lines []string
		err   error
	}
	ch := make(chan res, 1)
	go func() {
		var lines []string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				ch <- res{lines, err}
				return
			}
			lines = append(lines, strings.TrimRight(line, "\n"))
			if strings.Contains(line, want) {
				ch <- res{lines, nil}
				return
			}
		}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("stream ended before %q: %v (read %q)", want, r.err, r.lines)
		}
		return r.lines
	case <-time.After(d):
		t.Fatalf("no %q within %v", want, d)
	}
	return nil
}

// TestReloadWithManyOpenStreams: a reload with 1,000 open hub connections
// returns within 2 seconds; hub WebSockets stay open across a reload that
// keeps the hub's configuration; SSE clients are told when to come back.
func TestReloadWithManyOpenStreams(t *testing.T) {
	c := startOps(t, "", "30s", "")
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: 2000}}
	defer client.CloseIdleConnections()

	const sseCount, wsCount = 900, 100
	var bodies []*bufio.Reader
	var resps []*http.Response
	for i := 0; i < sseCount; i++ {
		resp, br := openSSE(t, client, c.URL(fmt.Sprintf("/hub?channel=c%d", i%10)))
		resps = append(resps, resp)
		bodies = append(bodies, br)
	}
	defer func() {
		for _, r := range resps {
			r.Body.Close()
		}
	}()
	var conns []*websocket.Conn
	for i := 0; i < wsCount; i++ {
		conn, _, err := websocket.DefaultDialer.Dial(harness.WSURL(c.URL("/hub?channel=ws")), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, m, err := conn.ReadMessage(); err != nil || !strings.Contains(string(m), `"subscribed"`) {
			t.Fatalf("subscribed frame %s, %v", m, err)
		}
		conns = append(conns, conn)
	}

	// same hub configuration, another route changed
	changed := strings.Replace(opsSite, `{{.Marker}}`, "two", 1)
	start := time.Now()
	c.Reload(t, changed)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("reload with %d open connections took %v", sseCount+wsCount, took)
	}

	// SSE streams ended, each with a retry hint
	var wg sync.WaitGroup
	errs := make(chan error, sseCount)
	for _, br := range bodies {
		wg.Add(1)
		go func(br *bufio.Reader) {
			defer wg.Done()
			sawRetry := false
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					if !sawRetry {
						errs <- fmt.Errorf("stream ended without a retry hint")
					}
					return
				}
				if strings.HasPrefix(line, "retry:") {
					sawRetry = true
				}
			}
		}(br)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("SSE streams still open 10s after the reload")
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// hub WebSockets are still open and still receive
	if got := publishHTTP(t, c, "ws", "after reload"); got != 200 {
		t.Fatalf("publish: %d", got)
	}
	for i, conn := range conns {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, m, err := conn.ReadMessage()
		if err != nil || !strings.Contains(string(m), "after reload") {
			t.Fatalf("websocket %d after reload: %s, %v", i, m, err)
		}
	}
}

var redisUpRE = regexp.MustCompile(`(?m)^realtime_redis_up ([0-9.]+)$`)

func redisUp(t *testing.T, c *harness.Caddy) float64 {
	m := redisUpRE.FindStringSubmatch(c.Metrics(t))
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func waitRedisUp(t *testing.T, c *harness.Caddy, want float64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if redisUp(t, c) == want {
			return
		}
		time.Sleep(50 * time.Millisecond) // polling a metric: no event to await
	}
	t.Fatalf("realtime_redis_up never became %v", want)
}

// TestRedisOutage: Redis killed mid-stream. Clients stay connected
// (heartbeats go on), publishing fails fast with 503, the health metric
// drops and comes back, and a pub/sub channel's subscribers get the reset
// signal (reason gap) when Redis returns, then live messages.
func TestRedisOutage(t *testing.T) {
	rd := testredis.Start(t)
	c := startOps(t, "redis "+rd.URL(), "300ms", "")
	client := harness.HTTP1Client()
	defer client.CloseIdleConnections()
	waitRedisUp(t, c, 1)

	resp, br := openSSE(t, client, c.URL("/hub?channel=news"))
	defer resp.Body.Close()
	if _, err := rd.Do("PUBLISH", "realtime:news", "before"); err != nil {
		t.Fatal(err)
	}
	readUntil(t, br, "data: before", 5*time.Second)

	rd.Kill()
	waitRedisUp(t, c, 0)
	// the stream is still alive: heartbeats keep coming
	readUntil(t, br, ": heartbeat", 5*time.Second)
	readUntil(t, br, ": heartbeat", 5*time.Second)

	start := time.Now()
	if got := publishHTTP(t, c, "news", "during"); got != http.StatusServiceUnavailable {
		t.Fatalf("publish during the outage: %d, want 503", got)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("publish during the outage took %v", took)
	}

	rd.Restart()
	waitRedisUp(t, c, 1)
	lines := readUntil(t, br, "realtime.reset", 15*time.Second)
	_ = lines
	readUntil(t, br, `"reason":"gap"`, 5*time.Second)

	// live delivery goes on; publish until one arrives (the resubscription
	// is confirmed before the reset, so the first should)
	if _, err := rd.Do("PUBLISH", "realtime:news", "after"); err != nil {
		t.Fatal(err)
	}
	readUntil(t, br, "data: after", 5*time.Second)
	m := c.Metrics(t)
	if !strings.Contains(m, `realtime_resets_total{reason="gap"}`) {
		t.Fatal("gap reset not counted in realtime_resets_total")
	}
	if !strings.Contains(m, "realtime_redis_reconnects_total 1") {
		t.Fatal("reconnect not counted in realtime_redis_reconnects_total")
	}
}

// TestConnectionLimits: over `connections` or `per_ip` a subscription
// gets 503 with Retry-After before any upgrade; more channels than
// `channels` is a 400; a publish body over message_size is a 413; an
// inbound WebSocket frame over it closes with 1009. Every one counted as
// realtime_refusals_total{reason="limit"}.
func TestConnectionLimits(t *testing.T) {
	c := startOps(t, "", "30s", "limits {\n\t\t\tconnections 3\n\t\t\tchannels 2\n\t\t\tmessage_size 100\n\t\t}")
	client := harness.HTTP1Client()
	defer client.CloseIdleConnections()
	for i := 0; i < 3; i++ {
		resp, _ := openSSE(t, client, c.URL("/hub?channel=a"))
		defer resp.Body.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name   string
		header http.Header
	}{
		{"sse", http.Header{"Accept": {"text/event-stream"}}},
		{"longpoll", nil},
		{"websocket", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}},
	} {
		req, _ := http.NewRequestWithContext(ctx, "GET", c.URL("/hub?channel=a"), nil)
		for k, v := range tc.header {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s over the limit: %s, Retry-After %q", tc.name, resp.Status, resp.Header.Get("Retry-After"))
		}
	}

	resp, err := client.Get(c.URL("/hub?channel=a&channel=b&channel=c"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("three channels over a limit of two: %s", resp.Status)
	}
	if got := publishHTTP(t, c, "a", strings.Repeat("x", 101)); got != 413 {
		t.Fatalf("oversized publish: %d, want 413", got)
	}
	m := c.Metrics(t)
	re := regexp.MustCompile(`realtime_refusals_total\{reason="limit"\} ([0-9]+)`)
	got := re.FindStringSubmatch(m)
	if got == nil || got[1] != "5" {
		t.Fatalf("limit refusals counted %v, want 5", got)
	}
}

// TestWebSocketFrameLimit: an inbound frame over message_size closes the
// connection with 1009 and a reason.
func TestWebSocketFrameLimit(t *testing.T) {
	c := startOps(t, "", "30s", "limits {\n\t\t\tmessage_size 100\n\t\t}")
	conn := dialSubscribed(t, c)
	if err := conn.WriteMessage(websocket.TextMessage, []byte(strings.Repeat("x", 200))); err != nil {
		t.Fatal(err)
	}
	expectClose(t, conn, websocket.CloseMessageTooBig, "message_size")
}

// TestWebSocketProtocolError: a client that breaks the WebSocket protocol
// (here, a frame with a reserved bit set and no extension agreed) is
// closed with 1002 and gorilla's reason.
func TestWebSocketProtocolError(t *testing.T) {
	c := startOps(t, "", "30s", "")
	conn := dialSubscribed(t, c)
	// FIN + RSV1 + text, masked, empty body, zero mask key
	if _, err := conn.NetConn().Write([]byte{0xC1, 0x80, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	expectClose(t, conn, websocket.CloseProtocolError, "RSV1")
}

// dialSubscribed opens a hub WebSocket to channel a and reads its
// subscribed frame; the connection's reads have a 5 s deadline.
func dialSubscribed(t *testing.T, c *harness.Caddy) *websocket.Conn {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(harness.WSURL(c.URL("/hub?channel=a")), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := conn.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	return conn
}

// expectClose reads conn (within its read deadline) until the server
// closes it, and checks the close code and that the reason has want.
func expectClose(t *testing.T, conn *websocket.Conn, code int, want string) {
	t.Helper()
	for {
		_, _, err := conn.ReadMessage()
		if err == nil {
			continue
		}
		ce, ok := err.(*websocket.CloseError)
		if !ok || ce.Code != code || !strings.Contains(ce.Text, want) {
			t.Fatalf("closed with %v, want %d with a reason containing %q", err, code, want)
		}
		return
	}
}

var heapInuseRE = regexp.MustCompile(`(?m)^go_memstats_heap_inuse_bytes ([0-9.e+]+)$`)

// heapInuse forces a garbage collection in Caddy (through the admin
// endpoint's heap profile with gc=1) and returns its heap in use.
func heapInuse(t *testing.T, c *harness.Caddy) float64 {
	t.Helper()
	if status, _ := c.Admin(t, "GET", "/debug/pprof/heap?gc=1", nil); status != 200 {
		t.Fatalf("heap profile: %d", status)
	}
	m := heapInuseRE.FindStringSubmatch(c.Metrics(t))
	if m == nil {
		t.Fatal("no go_memstats_heap_inuse_bytes in /metrics")
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestChurnBackToBaseline: 1,000 subscribers, of which a bounded number
// of connect/disconnect loops churn for a few seconds while messages are
// published; afterwards goroutines and heap are back to baseline.
func TestChurnBackToBaseline(t *testing.T) {
	c := startOps(t, "", "30s", "")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1, DisableKeepAlives: true}}
	defer client.CloseIdleConnections()

	// warm up, then take the baseline
	resp, _ := openSSE(t, client, c.URL("/hub?channel=warm"))
	resp.Body.Close()
	waitGoroutines(t, c, -1)
	baseG := c.Goroutines(t)
	baseHeap := heapInuse(t, c)

	const subs, churners, rounds = 1000, 20, 40
	var mu sync.Mutex
	open := make([]*http.Response, 0, subs)
	for i := 0; i < subs; i++ {
		resp, _ := openSSE(t, client, c.URL(fmt.Sprintf("/hub?channel=c%d", i%20)))
		open = append(open, resp)
	}
	stop := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			req, _ := http.NewRequest("POST", c.URL(fmt.Sprintf("/hub?channel=c%d", i%20)), strings.NewReader("tick"))
			req.Header.Set("Authorization", "Bearer k")
			if resp, err := harness.HTTP1Client().Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < churners; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				mu.Lock()
				i := (w*rounds + r) % len(open)
				old := open[i]
				mu.Unlock()
				old.Body.Close()
				req, _ := http.NewRequest("GET", c.URL(fmt.Sprintf("/hub?channel=c%d", r%20)), nil)
				req.Header.Set("Accept", "text/event-stream")
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				open[i] = resp
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	close(stop)
	<-pubDone
	// one goroutine per open subscriber at least (the baseline's own
	// goroutines come and go: a timer's, a log writer's)
	if n := c.Goroutines(t); n < subs {
		t.Fatalf("only %d goroutines with %d subscribers open (baseline %d)", n, subs, baseG)
	}
	for _, r := range open {
		r.Body.Close()
	}
	waitGoroutines(t, c, baseG+5)
	// the heap may keep a little (pools, the replay cache's messages)
	if heap := heapInuse(t, c); heap > baseHeap+16<<20 {
		t.Fatalf("heap in use %.1f MB after churn, baseline %.1f MB", heap/1e6, baseHeap/1e6)
	}
}

// waitGoroutines waits (bounded) until Caddy runs at most max goroutines;
// max < 0 waits until the count is steady.
func waitGoroutines(t *testing.T, c *harness.Caddy, max int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	prev := -1
	for time.Now().Before(deadline) {
		n := c.Goroutines(t)
		if (max >= 0 && n <= max) || (max < 0 && n == prev) {
			return
		}
		prev = n
		time.Sleep(200 * time.Millisecond) // polling a count: no event to await
	}
	t.Fatalf("goroutines: %d, want at most %d", c.Goroutines(t), max)
}

// TestStopWithOpenStreams: `caddy stop` (SIGTERM) with open hub SSE,
// WebSocket and long-poll clients returns promptly; SSE clients get a
// retry hint, WebSocket clients a close frame.
func TestStopWithOpenStreams(t *testing.T) {
	c := startOps(t, "", "30s", "")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 500}}
	defer client.CloseIdleConnections()
	var bodies []*bufio.Reader
	for i := 0; i < 200; i++ {
		resp, br := openSSE(t, client, c.URL("/hub?channel=s"))
		defer resp.Body.Close()
		bodies = append(bodies, br)
	}
	conn, _, err := websocket.DefaultDialer.Dial(harness.WSURL(c.URL("/hub?channel=s")), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := conn.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	poll := make(chan int, 1)
	go func() {
		resp, err := harness.HTTP1Client().Get(c.URL("/hub?channel=s"))
		if err != nil {
			poll <- 0
			return
		}
		resp.Body.Close()
		poll <- resp.StatusCode
	}()

	start := time.Now()
	c.Stop()
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("stop with open streams took %v", took)
	}
	select {
	case <-c.Exited():
	default:
		t.Fatal("caddy still running after Stop")
	}
	for i, br := range bodies {
		sawRetry := false
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				break
			}
			sawRetry = sawRetry || strings.HasPrefix(line, "retry:")
		}
		if !sawRetry {
			t.Fatalf("SSE stream %d ended without a retry hint", i)
		}
	}
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != websocket.CloseGoingAway {
				t.Fatalf("websocket ended with %v, want 1001", err)
			}
			break
		}
	}
	select {
	case code := <-poll:
		if code != 0 && code != 200 {
			t.Fatalf("waiting long-poll answered %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("long-poll still waiting after stop")
	}
}

// TestWebSocketFrameRate: a client flooding frames is closed with 1008.
func TestWebSocketFrameRate(t *testing.T) {
	c := startOps(t, "", "30s", "")
	conn, _, err := websocket.DefaultDialer.Dial(harness.WSURL(c.URL("/hub?channel=a")), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := conn.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := 0; i < 200; i++ {
			if conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)) != nil {
				return
			}
		}
	}()
	for {
		_, _, err := conn.ReadMessage()
		if err == nil {
			continue
		}
		ce, ok := err.(*websocket.CloseError)
		if !ok || ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "too many frames") {
			t.Fatalf("closed with %v, want 1008 too many frames", err)
		}
		return
	}
}
