// Command h2srv is the server half of the HTTP/2 SSE broadcast benchmark.
//
// It serves /sse over TLS with golang.org/x/net/http2 wired in through
// http2.ConfigureServer (as Caddy does), keeps every stream open, and on a
// "B <seq>" line on stdin writes one ~200-byte SSE event (carrying the
// broadcast time) to every subscriber with Write+Flush. It answers each
// stdin command with one line on stdout, so a driver in another process can
// measure this process's CPU alone (the "R" command returns getrusage).
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

type hub struct {
	mu   sync.Mutex
	subs map[chan []byte]struct{}
}

func (h *hub) add(c chan []byte) {
	h.mu.Lock()
	h.subs[c] = struct{}{}
	h.mu.Unlock()
}

func (h *hub) del(c chan []byte) {
	h.mu.Lock()
	delete(h.subs, c)
	h.mu.Unlock()
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

func (h *hub) broadcast(msg []byte) (dropped int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.subs {
		select {
		case c <- msg:
		default:
			dropped++
		}
	}
	return dropped
}

func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func cpuMicros() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Sec*1e6 + int64(ru.Utime.Usec) + ru.Stime.Sec*1e6 + int64(ru.Stime.Usec)
}

func rssKB() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the broadcast phase (P1/P0 commands)")
	flag.Parse()

	h := &hub{subs: map[chan []byte]struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(200)
		fl := w.(http.Flusher)
		fl.Flush()
		ch := make(chan []byte, 64)
		h.add(ch)
		defer h.del(ch)
		for {
			select {
			case msg := <-ch:
				if _, err := w.Write(msg); err != nil {
					return
				}
				fl.Flush()
			case <-r.Context().Done():
				return
			}
		}
	})

	srv := &http.Server{
		Handler:   mux,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{selfSigned()}},
		ErrorLog:  log.New(os.Stderr, "h2srv: ", 0),
	}
	if err := http2.ConfigureServer(srv, &http2.Server{}); err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	fmt.Printf("LISTEN %s\n", ln.Addr())

	pad := strings.Repeat("x", 150)
	sc := bufio.NewScanner(os.Stdin)
	var prof *os.File
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "C": // subscriber count
			fmt.Printf("C %d\n", h.count())
		case "R": // cpu usage (µs) and RSS (KiB)
			fmt.Printf("R %d %d\n", cpuMicros(), rssKB())
		case "B": // broadcast: B <seq>
			ts := time.Now().UnixNano()
			msg := []byte(fmt.Sprintf("id: %s\nevent: tick\ndata: {\"seq\":%s,\"ts\":%d,\"pad\":\"%s\"}\n\n", f[1], f[1], ts, pad))
			d := h.broadcast(msg)
			fmt.Printf("B %d %d\n", len(msg), d)
		case "P1":
			if *cpuprofile != "" {
				prof, _ = os.Create(*cpuprofile)
				pprof.StartCPUProfile(prof)
			}
			fmt.Println("P1")
		case "P0":
			if prof != nil {
				pprof.StopCPUProfile()
				prof.Close()
			}
			fmt.Println("P0")
		case "Q":
			fmt.Println("Q")
			return
		}
	}
}
