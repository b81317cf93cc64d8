package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// profileCPU asks Caddy's admin endpoint for a CPU profile covering the
// next secs seconds (the publishing round) and saves it in the results
// directory as <name>.pprof. The returned function waits, bounded, for
// the profile to be written.
func (e *runEnv) profileCPU(ctx context.Context, admin, name string, secs float64) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := max(int(secs+0.5), 1)
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, s)
		e.saveProfile(ctx, url, name, time.Duration(s+15)*time.Second)
	}()
	return func() {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
	}
}

// profileHeap saves the heap in use (after a GC) as <name>-heap.pprof:
// with every subscriber connected and idle, what each one holds.
func (e *runEnv) profileHeap(ctx context.Context, admin, name string) {
	e.saveProfile(ctx, fmt.Sprintf("http://%s/debug/pprof/heap?gc=1", admin), name+"-heap", 30*time.Second)
}

// saveProfile downloads a profile from url into the results directory
// as <name>.pprof, within limit.
func (e *runEnv) saveProfile(ctx context.Context, url, name string, limit time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.logf("  profile: %v", err)
		return
	}
	defer resp.Body.Close()
	if err := os.MkdirAll(e.cfg.resultsDir, 0o755); err != nil {
		return
	}
	path := filepath.Join(e.cfg.resultsDir, name+".pprof")
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err == nil {
		e.logf("  profile: %s", path)
	}
}

// goMem reads the Go runtime's stack and heap bytes in use from Caddy's
// admin metrics (BENCH_PROFILE only), to split RSS per subscriber.
func goMem(admin string) (stack, heap float64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return 0, 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	for _, line := range strings.Split(string(b), "\n") {
		var v float64
		if _, err := fmt.Sscanf(line, "go_memstats_stack_inuse_bytes %g", &v); err == nil {
			stack = v
		}
		if _, err := fmt.Sscanf(line, "go_memstats_heap_inuse_bytes %g", &v); err == nil {
			heap = v
		}
	}
	return stack, heap
}
