// Command passthrough is the app of the passthrough example: an app that
// already streams Server-Sent Events itself, and knows nothing of
// heartbeats, proxies or Origins. It sends a burst of events, one a
// second, then stalls (as a real app does while waiting for work), and
// repeats. Caddy's `realtime` in front of it adds the rest.
//
//	go run ./examples/passthrough [-addr 127.0.0.1:9084] [-burst 3] [-stall 12s]
//
// Endpoints:
//
//	GET /         a page that shows the stream (EventSource)
//	GET /events   the event stream; resumes its numbering from Last-Event-ID
package main

import (
	_ "embed"
	"flag"
	"fmt"
	"log"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

//go:embed index.html
var page []byte

func main() {
	addr := flag.String("addr", "127.0.0.1:9084", "listen address (keep it on loopback: Caddy is the front door)")
	burst := flag.Int("burst", 3, "events per burst, one a second")
	stall := flag.Duration("stall", 12*time.Second, "silence after each burst")
	flag.Parse()

	var streams atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		n := streams.Add(1)
		log.Printf("stream %d opened (Origin %q)", n, r.Header.Get("Origin"))
		defer log.Printf("stream %d closed", n)

		next, _ := strconv.Atoi(r.Header.Get("Last-Event-ID"))
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		// An ordinary app: it flushes its events, but sends no heartbeats
		// and sets none of the headers that keep proxies from buffering.
		fmt.Fprint(w, "retry: 2000\n\n")
		_ = rc.Flush()
		for {
			for i := 0; i < *burst; i++ {
				next++
				fmt.Fprintf(w, "id: %d\nevent: tick\ndata: tick %d at %s\n\n", next, next, time.Now().Format(time.TimeOnly))
				if err := rc.Flush(); err != nil {
					return
				}
				if i < *burst-1 && !sleep(r, time.Second) {
					return
				}
			}
			log.Printf("stream %d stalls for %v", n, *stall)
			if !sleep(r, *stall) {
				return
			}
		}
	})

	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("passthrough app listening on http://%s", *addr)
	log.Fatal(srv.ListenAndServe())
}

// sleep waits d, or returns false when the client goes away first.
func sleep(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}
