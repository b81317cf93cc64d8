package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The passthrough benchmark: one SSE upstream (in this process), two Caddy
// processes in front of it, one with `realtime { heartbeat 15s }` before
// `reverse_proxy` and one with plain `reverse_proxy`, run alternately.

// upstream is an SSE app server.
//
//	GET /flood?secs=S        events as fast as it can write them, each flushed
//	GET /paced?rate=R&n=M    M events at R/s, each stamped with its write time
type upstream struct {
	srv  *http.Server
	addr string
}

func startUpstream() (*upstream, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &upstream{addr: l.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("/flood", u.flood)
	mux.HandleFunc("/paced", u.paced)
	u.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = u.srv.Serve(l) }()
	return u, nil
}

func (u *upstream) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = u.srv.Shutdown(ctx)
	_ = u.srv.Close()
}

func sseHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
}

func queryInt(r *http.Request, k string, def int) int {
	if v, err := strconv.Atoi(r.URL.Query().Get(k)); err == nil && v > 0 {
		return v
	}
	return def
}

func (u *upstream) flood(w http.ResponseWriter, r *http.Request) {
	secs := queryInt(r, "secs", 5)
	sseHeaders(w)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	end := time.Now().Add(time.Duration(secs) * time.Second)
	buf := make([]byte, 0, payloadSize+16)
	p := make([]byte, payloadSize)
	for i := 0; ; i++ {
		if i%64 == 0 && (time.Now().After(end) || r.Context().Err() != nil) {
			return
		}
		buf = append(buf[:0], "data: "...)
		buf = append(buf, makePayload(p, time.Now(), i%10000000, 0)...)
		buf = append(buf, "\n\n"...)
		if _, err := w.Write(buf); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func (u *upstream) paced(w http.ResponseWriter, r *http.Request) {
	rate := queryInt(r, "rate", 100)
	n := queryInt(r, "n", 100)
	sseHeaders(w)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	buf := make([]byte, 0, payloadSize+16)
	p := make([]byte, payloadSize)
	period := time.Second / time.Duration(rate)
	// a random phase per stream so streams do not all write at once
	start := time.Now().Add(time.Duration(time.Now().UnixNano() % int64(period)))
	for i := 0; i < n; i++ {
		if d := time.Until(start.Add(time.Duration(i) * period)); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		buf = append(buf[:0], "id: "...)
		buf = strconv.AppendInt(buf, int64(i), 10)
		buf = append(buf, "\ndata: "...)
		buf = append(buf, makePayload(p, time.Now(), i, 0)...)
		buf = append(buf, "\n\n"...)
		if _, err := w.Write(buf); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// sseStream opens one raw SSE stream to addr+path and calls onData for each
// data line (its payload) with the time it was read, until the stream ends
// or ctx is done.
func sseStream(ctx context.Context, addr, path string, onData func(p []byte, now int64)) error {
	conn, err := dialer().DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	req.Header.Set("Accept", "text/event-stream")
	if err := req.Write(conn); err != nil {
		return err
	}
	br := bufio.NewReaderSize(conn, 32<<10)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		return fmt.Errorf("content-type %q", ct)
	}
	body := bufio.NewReaderSize(resp.Body, 32<<10)
	for {
		line, err := body.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		if bytes.HasPrefix(line, []byte("data: ")) {
			onData(line[6:], time.Now().UnixNano())
		}
	}
}

// floodRate measures events/s over `streams` parallel flood streams for
// secs seconds (after a warm-up of 0.5 s).
func floodRate(ctx context.Context, addr string, streams int, secs float64) (float64, int64, error) {
	var count, all atomic.Int64
	var counting atomic.Bool
	total := time.Duration((secs + 1.0) * float64(time.Second))
	fctx, cancel := context.WithTimeout(ctx, total+5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, streams)
	path := fmt.Sprintf("/flood?secs=%d", int(secs+2))
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := sseStream(fctx, addr, path, func([]byte, int64) {
				all.Add(1)
				if counting.Load() {
					count.Add(1)
				}
			})
			if err != nil {
				errc <- err
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	counting.Store(true)
	t0 := time.Now()
	time.Sleep(time.Duration(secs * float64(time.Second)))
	counting.Store(false)
	el := time.Since(t0).Seconds()
	n := count.Load()
	cancel()
	wg.Wait()
	select {
	case err := <-errc:
		if n == 0 {
			return 0, all.Load(), err
		}
	default:
	}
	return float64(n) / el, all.Load(), nil
}

// pacedLatency opens `streams` paced streams of n events at rate/s each and
// returns each event's latency (read time minus upstream write time) in µs,
// and how many events did not arrive.
func pacedLatency(ctx context.Context, addr string, streams, rate, n int) ([]int32, int, error) {
	var mu sync.Mutex
	lats := make([]int32, 0, streams*n)
	var wg sync.WaitGroup
	var firstErr error
	pctx, cancel := context.WithTimeout(ctx, time.Duration(n/rate+10)*time.Second)
	defer cancel()
	path := fmt.Sprintf("/paced?rate=%d&n=%d", rate, n)
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]int32, 0, n)
			err := sseStream(pctx, addr, path, func(p []byte, now int64) {
				if due, _, _, ok := parsePayload(p); ok {
					local = append(local, int32(max(0, (now-due)/1000)))
				}
			})
			mu.Lock()
			lats = append(lats, local...)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return lats, streams*n - len(lats), firstErr
}

type passResult struct {
	Name        string    `json:"name"`
	EventsPerS  float64   `json:"events_per_s"`
	Rounds      []float64 `json:"events_per_s_rounds"`
	P50         float64   `json:"p50_ms"`
	P99         float64   `json:"p99_ms"`
	P99Rounds   []float64 `json:"p99_ms_rounds"` // each round's own p99
	Max         float64   `json:"max_ms"`
	Samples     int       `json:"latency_samples"`
	Missing     int       `json:"missing_events"`
	CPUSeconds  float64   `json:"server_cpu_s"`
	Events      int64     `json:"flood_events"`
	CPUPerEvent float64   `json:"server_cpu_us_per_event"`
	Err         string    `json:"error,omitempty"`
}

type passConfig struct {
	Rounds        int
	FloodStreams  int
	FloodSecs     float64
	PacedStreams  int
	PacedRate     int
	PacedMessages int
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// runPassthrough runs the passthrough comparison and returns rows for
// plain reverse_proxy (the baseline), realtime + reverse_proxy, and the
// upstream read directly (for reference).
func runPassthrough(ctx context.Context, caddyBin, dir string, pc passConfig, logf func(string, ...any)) ([]*passResult, error) {
	up, err := startUpstream()
	if err != nil {
		return nil, err
	}
	defer up.close()
	plain, err := startCaddy(ctx, caddyBin, dir, "pass-plain", fmt.Sprintf("\treverse_proxy %s", up.addr), nil, false)
	if err != nil {
		return nil, err
	}
	defer plain.stop()
	rt, err := startCaddy(ctx, caddyBin, dir, "pass-realtime", fmt.Sprintf("\trealtime {\n\t\theartbeat 15s\n\t}\n\treverse_proxy %s", up.addr), nil, false)
	if err != nil {
		return nil, err
	}
	defer rt.stop()

	type side struct {
		res  *passResult
		addr string
		pid  int
		lats []int32
	}
	sides := []*side{
		{res: &passResult{Name: "plain reverse_proxy"}, addr: fmt.Sprintf("127.0.0.1:%d", plain.port), pid: plain.cmd.Process.Pid},
		{res: &passResult{Name: "realtime + reverse_proxy"}, addr: fmt.Sprintf("127.0.0.1:%d", rt.port), pid: rt.cmd.Process.Pid},
		{res: &passResult{Name: "upstream direct (no proxy)"}, addr: up.addr},
	}
	// warm both proxies up (connection pools, JIT-free but page cache, GC)
	for _, s := range sides[:2] {
		_, _, _ = floodRate(ctx, s.addr, pc.FloodStreams, 0.5)
	}
	for round := 0; round < pc.Rounds && ctx.Err() == nil; round++ {
		order := sides
		if round%2 == 1 { // alternate who goes first
			order = []*side{sides[1], sides[0], sides[2]}
		}
		for _, s := range order {
			cpu0 := 0.0
			if s.pid > 0 {
				cpu0 = cpuSeconds(s.pid)
			}
			eps, events, err := floodRate(ctx, s.addr, pc.FloodStreams, pc.FloodSecs)
			s.res.Events += events
			if s.pid > 0 {
				s.res.CPUSeconds += cpuSeconds(s.pid) - cpu0
			}
			if err != nil && s.res.Err == "" {
				s.res.Err = "flood: " + err.Error()
			}
			s.res.Rounds = append(s.res.Rounds, eps)
			logf("  passthrough round %d %-28s %10.0f events/s", round+1, s.res.Name, eps)
		}
		for _, s := range order {
			lats, missing, err := pacedLatency(ctx, s.addr, pc.PacedStreams, pc.PacedRate, pc.PacedMessages)
			if err != nil && s.res.Err == "" {
				s.res.Err = "paced: " + err.Error()
			}
			s.lats = append(s.lats, lats...)
			s.res.P99Rounds = append(s.res.P99Rounds, ms(statsMicros(lats).P99))
			s.res.Missing += missing
		}
	}
	var out []*passResult
	for _, s := range sides {
		s.res.EventsPerS = median(s.res.Rounds)
		if s.res.Events > 0 {
			s.res.CPUPerEvent = s.res.CPUSeconds * 1e6 / float64(s.res.Events)
		}
		st := statsMicros(s.lats)
		s.res.P50, s.res.P99, s.res.Max, s.res.Samples = ms(st.P50), ms(st.P99), ms(st.Max), st.N
		out = append(out, s.res)
	}
	return out, nil
}
