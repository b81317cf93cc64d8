// Command h2drive runs the HTTP/2 SSE broadcast benchmark against one or
// more h2srv binaries (e.g. built against unpatched and patched
// golang.org/x/net), each in its own process, so that the server's CPU is
// measured alone (getrusage inside the server, before and after the
// broadcast phase).
//
// For each round and each binary it: starts the server, opens -n TLS
// connections (one HTTP/2 stream each, GET /sse, via x/net/http2's
// Transport.NewClientConn so every stream has its own connection), waits for
// every subscriber, broadcasts -m events -interval apart, waits until every
// client has every event, and reports server CPU per delivery, latency
// (broadcast start -> client receipt) p50/p99/max and server RSS per
// connection. The order of binaries alternates between rounds.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

type server struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	addr string
}

func startServer(bin string, extra []string) *server {
	cmd := exec.Command(bin, extra...)
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	s := &server{cmd: cmd, in: in, out: bufio.NewScanner(outp)}
	line := s.read()
	s.addr = strings.TrimPrefix(line, "LISTEN ")
	return s
}

func (s *server) read() string {
	if !s.out.Scan() {
		log.Fatalf("server exited: %v", s.out.Err())
	}
	return s.out.Text()
}

func (s *server) cmdline(c string) []string {
	fmt.Fprintln(s.in, c)
	return strings.Fields(s.read())
}

func (s *server) rusage() (cpuUS, rssKB int64) {
	f := s.cmdline("R")
	cpuUS, _ = strconv.ParseInt(f[1], 10, 64)
	rssKB, _ = strconv.ParseInt(f[2], 10, 64)
	return
}

func (s *server) stop() {
	s.cmdline("Q")
	s.in.Close()
	s.cmd.Wait()
}

type result struct {
	name           string
	n, m           int
	cpuPerDelivery float64 // µs
	p50, p99, pmax time.Duration
	rssPerConnKB   float64
	missing        int64
}

func run(name, bin string, n, m int, interval time.Duration, extra []string) result {
	s := startServer(bin, extra)
	defer s.stop()
	_, rss0 := s.rusage()

	tr := &http2.Transport{}
	tlsConf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}
	lat := make([][]time.Duration, n)
	var got atomic.Int64
	var wg sync.WaitGroup
	var conns []*http2.ClientConn
	var mu sync.Mutex
	sem := make(chan struct{}, 64)
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			tc, err := tls.Dial("tcp", s.addr, tlsConf)
			if err != nil {
				log.Fatal(err)
			}
			cc, err := tr.NewClientConn(tc)
			if err != nil {
				log.Fatal(err)
			}
			req, _ := http.NewRequest("GET", "https://"+s.addr+"/sse", nil)
			resp, err := cc.RoundTrip(req)
			if err != nil {
				log.Fatal(err)
			}
			<-sem
			mu.Lock()
			conns = append(conns, cc)
			mu.Unlock()
			lat[i] = make([]time.Duration, 0, m)
			br := bufio.NewReaderSize(resp.Body, 4096)
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if !bytes.HasPrefix(line, []byte("data: ")) {
					continue
				}
				now := time.Now().UnixNano()
				j := bytes.Index(line, []byte(`"ts":`))
				k := bytes.IndexByte(line[j+5:], ',')
				ts, _ := strconv.ParseInt(string(line[j+5:j+5+k]), 10, 64)
				lat[i] = append(lat[i], time.Duration(now-ts))
				got.Add(1)
			}
		}(i)
	}
	for {
		f := s.cmdline("C")
		if c, _ := strconv.Atoi(f[1]); c == n {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	cpu0, rss1 := s.rusage()
	s.cmdline("P1")
	for j := 0; j < m; j++ {
		f := s.cmdline(fmt.Sprintf("B %d", j))
		if f[2] != "0" {
			log.Printf("%s: broadcast %d dropped %s", name, j, f[2])
		}
		time.Sleep(interval)
	}
	want := int64(n * m)
	deadline := time.Now().Add(30 * time.Second)
	for got.Load() < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cpu1, _ := s.rusage()
	s.cmdline("P0")
	for _, cc := range conns {
		cc.Close()
	}
	wg.Wait()

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	r := result{name: name, n: n, m: m, missing: want - got.Load()}
	r.cpuPerDelivery = float64(cpu1-cpu0) / float64(got.Load())
	if len(all) > 0 {
		r.p50 = all[len(all)/2]
		r.p99 = all[len(all)*99/100]
		r.pmax = all[len(all)-1]
	}
	r.rssPerConnKB = float64(rss1-rss0) / float64(n)
	return r
}

func main() {
	n := flag.Int("n", 1000, "connections (one SSE stream each)")
	m := flag.Int("m", 50, "messages to broadcast")
	interval := flag.Duration("interval", 200*time.Millisecond, "time between broadcasts")
	rounds := flag.Int("rounds", 3, "rounds (binary order alternates)")
	bins := flag.String("bins", "unpatched=./bin/h2srv-unpatched,patched=./bin/h2srv-patched", "name=path,...")
	srvArgs := flag.String("srvargs", "", "extra server args (space separated)")
	flag.Parse()
	_ = context.Background

	type bin struct{ name, path string }
	var bs []bin
	for _, kv := range strings.Split(*bins, ",") {
		k, v, _ := strings.Cut(kv, "=")
		bs = append(bs, bin{k, v})
	}
	var extra []string
	if *srvArgs != "" {
		extra = strings.Fields(*srvArgs)
	}
	res := map[string][]result{}
	fmt.Printf("n=%d m=%d interval=%v rounds=%d\n", *n, *m, *interval, *rounds)
	fmt.Printf("%-6s %-10s %12s %10s %10s %10s %12s %8s\n", "round", "server", "cpu/deliv", "p50", "p99", "max", "rss/conn", "missing")
	for r := 0; r < *rounds; r++ {
		order := slices.Clone(bs)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, b := range order {
			x := run(b.name, b.path, *n, *m, *interval, extra)
			res[b.name] = append(res[b.name], x)
			fmt.Printf("%-6d %-10s %10.2fµs %10v %10v %10v %9.1fKiB %8d\n", r, b.name, x.cpuPerDelivery,
				x.p50.Round(time.Microsecond), x.p99.Round(time.Microsecond), x.pmax.Round(time.Microsecond), x.rssPerConnKB, x.missing)
		}
	}
	if len(bs) == 2 {
		a, b := res[bs[0].name], res[bs[1].name]
		fmt.Printf("per-round ratio %s/%s:\n", bs[1].name, bs[0].name)
		for i := range a {
			fmt.Printf("  round %d: cpu/deliv %.3f  p50 %.3f  p99 %.3f\n", i,
				b[i].cpuPerDelivery/a[i].cpuPerDelivery,
				float64(b[i].p50)/float64(a[i].p50), float64(b[i].p99)/float64(a[i].p99))
		}
	}
}
