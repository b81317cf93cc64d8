package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// Transports a subscriber can use.
const (
	tSSE      = "sse"
	tWS       = "ws"
	tLongPoll = "longpoll"
	// tSSEH2 is SSE over cleartext HTTP/2 (h2c), streams sharing
	// connections as a browser's do (the hub only: it reports the
	// per-stream cost over HTTP/2, where a stream cannot leave its
	// request)
	tSSEH2 = "sseh2"
	// The TLS loads (see tls.go): SSE over HTTP/2 on a TLS connection per
	// subscriber, WebSocket over TLS, and SSE over HTTP/3 (the hub; Nchan,
	// which has no HTTP/3, serves that load over HTTP/2 as the reference).
	tSSETLS = "sseh2tls"
	tWSS    = "wss"
	tSSEH3  = "sseh3"
	// tSSEH1TLS is SSE over HTTP/1.1 with TLS: what a hub listener limited
	// to HTTP/1.1 serves browsers (the README's recipe)
	tSSEH1TLS = "sseh1tls"
)

// isTLS reports whether transport is one of the TLS loads.
func isTLS(transport string) bool {
	return transport == tSSETLS || transport == tWSS || transport == tSSEH3 || transport == tSSEH1TLS
}

// Ways to publish.
const (
	pubRedisPublish = "publish"
	pubRedisXAdd    = "xadd"
	pubHTTP         = "http"
)

// target is a server under load: the realtime hub or Nchan.
type target struct {
	Kind       string // "hub" or "nchan"
	Addr       string // 127.0.0.1:port
	TLSAddr    string // 127.0.0.1:port of the TLS listener (HTTP/3 too, for the hub)
	TLS        *tls.Config
	Admin      string // Caddy's admin address (hub only), for profiles
	SubPath    string // "/hub" or "/sub"
	PubPath    string // "/hub" or "/pub"
	PublishKey string
	RedisAddr  string
	Prefix     string
	PID        int // server process (tree) measured through /proc
	RedisPID   int // redis-server, when the server uses it (its CPU is reported apart)
}

// loadSpec is one load: N subscribers on one channel.
type loadSpec struct {
	N           int
	Transport   string
	Channel     string
	ConnectRate float64 // new subscribers per second
	ConnectConc int     // connects in progress at once
}

// roundSpec is one publishing round: M messages at Rate per second.
type roundSpec struct {
	M    int
	Rate float64
	Pub  string
}

// sub is one subscriber. Only its own goroutine writes lat, under mu; the
// collector swaps lat out under mu.
type sub struct {
	idx   int
	mu    sync.Mutex
	round int
	lat   []int32 // per seq: latency in µs + 1; 0 = not received
	dup   int
	stray int
	conn  io.Closer
	gone  atomic.Bool // disconnected after being live
}

// record stores one delivery read from the wire at time now.
func (s *sub) record(p []byte, now int64, got *atomic.Int64) {
	due, seq, round, ok := parsePayload(p)
	s.mu.Lock()
	if !ok || round != s.round || seq >= len(s.lat) {
		s.stray++
		s.mu.Unlock()
		return
	}
	if s.lat[seq] != 0 {
		s.dup++
		s.mu.Unlock()
		return
	}
	us := (now - due) / 1000
	if us < 0 {
		us = 0
	}
	if us > 1<<30 {
		us = 1 << 30
	}
	s.lat[seq] = int32(us) + 1
	s.mu.Unlock()
	got.Add(1)
}

// swarm is a set of connected subscribers.
type swarm struct {
	tgt      target
	spec     loadSpec
	subs     []*sub
	live     []*sub
	fails    int
	failErr  string
	received atomic.Int64 // deliveries of the current round
	cancel   context.CancelFunc
	h2Once   sync.Once
	h2       *http.Transport // the HTTP/2 subscribers' connections (tls.go)
	wg       sync.WaitGroup
}

// srcIPs spreads client sockets over several loopback source addresses so
// 10,000+ connections never run short of ephemeral ports.
const srcIPs = 8

var srcCounter atomic.Uint64

func dialer() *net.Dialer {
	n := srcCounter.Add(1)
	ip := net.IPv4(127, 0, 0, byte(1+n%srcIPs))
	return &net.Dialer{
		Timeout:   10 * time.Second,
		LocalAddr: &net.TCPAddr{IP: ip},
		Control: func(network, address string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) {
				// IP_BIND_ADDRESS_NO_PORT: choose the port at connect, by 4-tuple
				_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, 24, 1)
			})
		},
	}
}

// connectSwarm opens spec.N subscribers at a bounded rate and returns once
// every one of them is live or has failed.
func connectSwarm(ctx context.Context, tgt target, spec loadSpec) *swarm {
	cctx, cancel := context.WithCancel(ctx)
	sw := &swarm{tgt: tgt, spec: spec, cancel: cancel}
	if spec.ConnectRate <= 0 {
		spec.ConnectRate = 2000
	}
	if spec.ConnectConc <= 0 {
		spec.ConnectConc = 256
	}
	sem := make(chan struct{}, spec.ConnectConc)
	type res struct {
		s   *sub
		err error
	}
	results := make(chan res, spec.N)
	// Fail fast: when the first connects all fail, the server is not
	// serving subscriptions; do not wait for N timeouts.
	var nLive, nFail atomic.Int64
	failFast := int64(min(spec.N, 32))
	start := time.Now()
	for i := 0; i < spec.N; i++ {
		due := start.Add(time.Duration(float64(i) / spec.ConnectRate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			results <- res{err: ctx.Err()}
			continue
		}
		if nFail.Load() >= failFast && nLive.Load() == 0 {
			results <- res{err: errors.New("not tried: the first connects all failed")}
			continue
		}
		sem <- struct{}{}
		if nFail.Load() >= failFast && nLive.Load() == 0 {
			<-sem
			results <- res{err: errors.New("not tried: the first connects all failed")}
			continue
		}
		s := &sub{idx: i, round: -1}
		sw.subs = append(sw.subs, s)
		sw.wg.Add(1)
		go func() {
			defer sw.wg.Done()
			var once sync.Once
			ready := func(err error) {
				once.Do(func() {
					if err != nil {
						nFail.Add(1)
					} else {
						nLive.Add(1)
					}
					<-sem
					results <- res{s: s, err: err}
				})
			}
			err := sw.runSub(cctx, s, ready)
			ready(err) // no-op when already live
			if cctx.Err() == nil {
				s.gone.Store(true) // it ended on its own
			}
		}()
	}
	for i := 0; i < spec.N; i++ {
		r := <-results
		if r.err != nil {
			sw.fails++
			if sw.failErr == "" || strings.HasPrefix(sw.failErr, "not tried") {
				sw.failErr = r.err.Error()
			}
			continue
		}
		sw.live = append(sw.live, r.s)
	}
	return sw
}

// close disconnects every subscriber and waits for their goroutines.
func (sw *swarm) close() {
	sw.cancel()
	for _, s := range sw.subs {
		s.mu.Lock()
		c := s.conn
		s.mu.Unlock()
		if c != nil {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // no TIME_WAIT pile-up between runs
			}
			_ = c.Close()
		}
	}
	done := make(chan struct{})
	go func() { sw.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
	}
}

func (sw *swarm) runSub(ctx context.Context, s *sub, ready func(error)) error {
	switch sw.spec.Transport {
	case tWS, tWSS:
		return sw.runWS(ctx, s, ready)
	case tLongPoll:
		return sw.runLongPoll(ctx, s, ready)
	case tSSEH2:
		return sw.runSSEH2(ctx, s, ready)
	case tSSETLS:
		return sw.runSSETLS(ctx, s, ready)
	case tSSEH3:
		return sw.runSSEH3(ctx, s, ready)
	default: // tSSE, tSSEH1TLS
		return sw.runSSE(ctx, s, ready)
	}
}

func (sw *swarm) subURL(scheme string) string { return sw.subURLAt(scheme, sw.tgt.Addr) }

func (sw *swarm) subURLAt(scheme, addr string) string {
	return fmt.Sprintf("%s://%s%s?channel=%s", scheme, addr, sw.tgt.SubPath, url.QueryEscape(sw.spec.Channel))
}

// h2cClient is shared by every HTTP/2 subscriber: Go opens another
// connection whenever one has as many streams as the server allows.
var h2cClient = func() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p, DialContext: dialer().DialContext}}
}()

// runSSEH2 is one SSE subscriber as a stream of a shared HTTP/2
// connection.
func (sw *swarm) runSSEH2(ctx context.Context, s *sub, ready func(error)) error {
	return sw.getSSE(ctx, h2cClient.Transport, sw.subURL("http"), 2, s, ready)
}

// getSSE opens an event stream with rt, which must answer over HTTP
// major version proto, and reads it (readSSE).
func (sw *swarm) getSSE(ctx context.Context, rt http.RoundTripper, url string, proto int, s *sub, ready func(error)) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != proto {
		return fmt.Errorf("status %d over %s, not HTTP/%d", resp.StatusCode, resp.Proto, proto)
	}
	return sw.readSSE(resp, s, ready)
}

// runSSE is one SSE subscriber on a raw TCP connection: one goroutine, no
// net/http client machinery; http.ReadResponse decodes the chunked body.
func (sw *swarm) runSSE(ctx context.Context, s *sub, ready func(error)) error {
	addr, scheme := sw.tgt.Addr, "http"
	if sw.spec.Transport == tSSEH1TLS {
		addr, scheme = sw.tgt.TLSAddr, "https"
	}
	conn, err := dialer().DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	if scheme == "https" {
		tc := tls.Client(conn, sw.clientTLS("http/1.1"))
		hctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			conn.Close()
			return fmt.Errorf("tls handshake: %w", err)
		}
		conn = tc
	}
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	if ctx.Err() != nil {
		conn.Close()
		return ctx.Err()
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	u := sw.subURLAt(scheme, addr)
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if err := req.Write(conn); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return fmt.Errorf("status 200 with content-type %q, not an event stream", ct)
	}
	body := br
	if resp.Body != nil {
		if len(resp.TransferEncoding) > 0 {
			body = bufio.NewReaderSize(resp.Body, 4096)
		}
	}
	// The hub says it is live with `retry:`; Nchan subscribes before it
	// sends its headers.
	waitRetry := sw.tgt.Kind == "hub"
	if !waitRetry {
		_ = conn.SetDeadline(time.Time{})
		ready(nil)
	}
	for {
		line, err := body.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if waitRetry {
				return fmt.Errorf("before retry line: %w", err)
			}
			return err
		}
		now := time.Now().UnixNano()
		if p, ok := sseData(line); ok {
			s.record(p, now, &sw.received)
		} else if waitRetry && bytes.HasPrefix(line, []byte("retry:")) {
			waitRetry = false
			_ = conn.SetDeadline(time.Time{})
			ready(nil)
		}
	}
}

// runWS is one WebSocket subscriber (gorilla/websocket), over TLS for
// the wss load.
func (sw *swarm) runWS(ctx context.Context, s *sub, ready func(error)) error {
	d := websocket.Dialer{
		NetDialContext:   dialer().DialContext,
		HandshakeTimeout: 15 * time.Second,
		ReadBufferSize:   2048,
		WriteBufferSize:  512,
	}
	u := sw.subURL("ws")
	if sw.spec.Transport == tWSS {
		d.TLSClientConfig = sw.clientTLS("http/1.1")
		u = sw.subURLAt("wss", sw.tgt.TLSAddr)
	}
	hctx, hcancel := context.WithTimeout(ctx, 15*time.Second)
	c, resp, err := d.DialContext(hctx, u, nil)
	hcancel()
	if err != nil {
		if resp != nil {
			return fmt.Errorf("websocket handshake: status %d", resp.StatusCode)
		}
		return fmt.Errorf("websocket handshake: %w", err)
	}
	s.mu.Lock()
	s.conn = c.NetConn()
	s.mu.Unlock()
	if ctx.Err() != nil {
		c.Close()
		return ctx.Err()
	}
	defer c.Close()
	c.SetReadLimit(1 << 20)
	waitSubscribed := sw.tgt.Kind == "hub"
	if waitSubscribed {
		_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	} else {
		ready(nil)
	}
	buf := make([]byte, 0, 1024)
	for {
		_, r, err := c.NextReader()
		if err != nil {
			if waitSubscribed {
				return fmt.Errorf("before subscribed frame: %w", err)
			}
			return err
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		now := time.Now().UnixNano()
		if len(buf) > 0 && buf[0] == '{' {
			if p := payloadFromJSON(buf); p != nil && !bytes.Contains(buf[:min(len(buf), 40)], []byte(`"type"`)) {
				s.record(p, now, &sw.received)
				continue
			}
			if waitSubscribed && bytes.Contains(buf, []byte(`"subscribed"`)) {
				waitSubscribed = false
				_ = c.SetReadDeadline(time.Time{})
				ready(nil)
			}
			continue
		}
		s.record(buf, now, &sw.received) // Nchan: the raw payload
	}
}

var lpTransport = &http.Transport{
	DialContext:         func(ctx context.Context, n, a string) (net.Conn, error) { return dialer().DialContext(ctx, n, a) },
	MaxIdleConnsPerHost: 20000,
	MaxIdleConns:        20000,
	IdleConnTimeout:     30 * time.Second,
	DisableCompression:  true,
}

// runLongPoll is one long-polling subscriber. It counts as live once its
// first poll is on the wire; the caller then waits a settle period.
func (sw *swarm) runLongPoll(ctx context.Context, s *sub, ready func(error)) error {
	client := &http.Client{Transport: lpTransport, Timeout: 60 * time.Second}
	last := ""
	var etag, lastMod string
	first := true
	for ctx.Err() == nil {
		u := sw.subURL("http")
		if last != "" {
			u += "&last_event_id=" + url.QueryEscape(last)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		req.Header.Set("Accept", "application/json")
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		if lastMod != "" {
			req.Header.Set("If-Modified-Since", lastMod)
		}
		if first {
			first = false
			go func() { time.Sleep(200 * time.Millisecond); ready(nil) }()
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		resp.Body.Close()
		now := time.Now().UnixNano()
		if err != nil {
			return err
		}
		if sw.tgt.Kind == "nchan" {
			etag, lastMod = resp.Header.Get("Etag"), resp.Header.Get("Last-Modified")
			if resp.StatusCode == http.StatusOK {
				s.record(b, now, &sw.received)
			} else if resp.StatusCode != http.StatusNotModified && resp.StatusCode != http.StatusRequestTimeout {
				return fmt.Errorf("long-poll status %d", resp.StatusCode)
			}
			continue
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("long-poll status %d: %s", resp.StatusCode, bytes.TrimSpace(b[:min(len(b), 200)]))
		}
		var lp struct {
			Messages []struct {
				Data string `json:"data"`
			} `json:"messages"`
			LastEventID string `json:"last_event_id"`
		}
		if err := json.Unmarshal(b, &lp); err != nil {
			return fmt.Errorf("long-poll body: %w", err)
		}
		for _, m := range lp.Messages {
			s.record([]byte(m.Data), now, &sw.received)
		}
		if lp.LastEventID != "" {
			last = lp.LastEventID
		}
	}
	return ctx.Err()
}

// ---- publishing ----

// publisher sends message i at start + i/rate whatever the server's answer
// time: requests and replies are decoupled.
type publisher interface {
	send(payload []byte) // must not block on the server's answer
	finish(timeout time.Duration) (errs int, firstErr string)
}

type redisPublisher struct {
	conn    net.Conn
	bw      *bufio.Writer
	cmd     string
	key     string
	sent    int64
	got     atomic.Int64
	closing atomic.Bool
	mu      sync.Mutex
	errs    int
	first   string
	done    chan struct{}
}

func newRedisPublisher(addr, mode, key string) (*redisPublisher, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	p := &redisPublisher{conn: conn, bw: bufio.NewWriterSize(conn, 4096), key: key, done: make(chan struct{})}
	p.cmd = "PUBLISH"
	if mode == pubRedisXAdd {
		p.cmd = "XADD"
	}
	go p.readReplies()
	return p, nil
}

func (p *redisPublisher) fail(err string) {
	p.mu.Lock()
	p.errs++
	if p.first == "" {
		p.first = err
	}
	p.mu.Unlock()
}

// readReplies reads one RESP reply per command sent (integers, bulk
// strings, errors) until the connection is closed.
func (p *redisPublisher) readReplies() {
	defer close(p.done)
	br := bufio.NewReader(p.conn)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if !p.closing.Load() {
				p.fail("redis reply: " + err.Error())
			}
			return
		}
		switch {
		case len(line) > 0 && line[0] == '-':
			p.fail(strings.TrimSpace(line))
		case len(line) > 3 && line[0] == '$':
			n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
			if n >= 0 {
				_, _ = br.Discard(n + 2)
			}
		}
		p.got.Add(1)
	}
}

func (p *redisPublisher) send(payload []byte) {
	w := p.bw
	if p.cmd == "XADD" {
		fmt.Fprintf(w, "*5\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n$4\r\ndata\r\n$%d\r\n", len(p.key), p.key, len(payload))
	} else {
		fmt.Fprintf(w, "*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n", len(p.key), p.key, len(payload))
	}
	w.Write(payload)
	w.WriteString("\r\n")
	if err := w.Flush(); err != nil {
		p.fail("redis write: " + err.Error())
	}
	p.sent++
}

func (p *redisPublisher) finish(timeout time.Duration) (int, string) {
	deadline := time.Now().Add(timeout)
	for p.got.Load() < p.sent && time.Now().Before(deadline) {
		select {
		case <-p.done:
			deadline = time.Now()
		case <-time.After(5 * time.Millisecond):
		}
	}
	if missing := p.sent - p.got.Load(); missing > 0 {
		p.fail(fmt.Sprintf("%d redis replies missing", missing))
	}
	p.closing.Store(true)
	p.conn.Close()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errs, p.first
}

type httpPublisher struct {
	url    string
	key    string
	client *http.Client
	sem    chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   int
	first  string
}

func newHTTPPublisher(tgt target, channel string) *httpPublisher {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 256,
		MaxConnsPerHost:     256,
		DisableCompression:  true,
	}
	return &httpPublisher{
		url:    fmt.Sprintf("http://%s%s?channel=%s", tgt.Addr, tgt.PubPath, url.QueryEscape(channel)),
		key:    tgt.PublishKey,
		client: &http.Client{Transport: tr, Timeout: 15 * time.Second},
		sem:    make(chan struct{}, 256),
	}
}

func (p *httpPublisher) fail(err string) {
	p.mu.Lock()
	p.errs++
	if p.first == "" {
		p.first = err
	}
	p.mu.Unlock()
}

func (p *httpPublisher) send(payload []byte) {
	body := append([]byte(nil), payload...)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.sem <- struct{}{}
		defer func() { <-p.sem }()
		req, _ := http.NewRequest(http.MethodPost, p.url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "text/plain")
		if p.key != "" {
			req.Header.Set("Authorization", "Bearer "+p.key)
		}
		resp, err := p.client.Do(req)
		if err != nil {
			p.fail(err.Error())
			return
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			p.fail(fmt.Sprintf("publish status %d", resp.StatusCode))
		}
	}()
}

func (p *httpPublisher) finish(timeout time.Duration) (int, string) {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		p.fail("publishes still in flight at the end")
	}
	p.client.CloseIdleConnections()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errs, p.first
}

// ---- a round ----

type roundResult struct {
	Rate          float64 `json:"rate"`
	Messages      int     `json:"messages"`
	Subscribers   int     `json:"subscribers"`
	Deliveries    int64   `json:"deliveries"`
	Expected      int64   `json:"expected"`
	Lost          int64   `json:"lost"`
	Dup           int64   `json:"dup"`
	Stray         int64   `json:"stray"`
	Dropped       int     `json:"dropped_subscribers"`
	P50           float64 `json:"p50_ms"`
	P99           float64 `json:"p99_ms"`
	Max           float64 `json:"max_ms"`
	PubErrors     int     `json:"publish_errors"`
	PubErr        string  `json:"publish_error,omitempty"`
	PubLateMax    float64 `json:"publish_late_max_ms"`
	CPUSeconds    float64 `json:"server_cpu_s"`
	SysCPUSeconds float64 `json:"server_sys_cpu_s"` // the kernel-mode part of CPUSeconds
	GenCPUSeconds float64 `json:"generator_cpu_s"`
	RedisCPU      float64 `json:"redis_cpu_s,omitempty"`
	OtherCPU      float64 `json:"other_processes_cpu_s"`
	RSSMax        int64   `json:"server_rss_max_bytes"`
	PublishSecond float64 `json:"publish_seconds"`
}

var roundCounter atomic.Int64

// runRound publishes rs.M messages on the fixed schedule and collects every
// live subscriber's deliveries.
func (sw *swarm) runRound(ctx context.Context, rs roundSpec, drain time.Duration) (*roundResult, error) {
	round := int(roundCounter.Add(1) % 10000)
	// subscribers that went away in an earlier round are not counted
	alive := sw.live[:0:0]
	for _, s := range sw.live {
		if !s.gone.Load() {
			alive = append(alive, s)
		}
	}
	sw.live = alive
	for _, s := range sw.live {
		s.mu.Lock()
		s.round = round
		s.lat = make([]int32, rs.M)
		s.dup, s.stray = 0, 0
		s.mu.Unlock()
	}
	sw.received.Store(0)
	var pub publisher
	switch rs.Pub {
	case pubRedisPublish, pubRedisXAdd:
		rp, err := newRedisPublisher(sw.tgt.RedisAddr, rs.Pub, sw.tgt.Prefix+sw.spec.Channel)
		if err != nil {
			return nil, err
		}
		pub = rp
	default:
		pub = newHTTPPublisher(sw.tgt, sw.spec.Channel)
	}
	sys0, ours0 := systemBusy(), benchCPU()
	cpu0, sys0cpu, gen0, redis0 := cpuSeconds(sw.tgt.PID), sysSeconds(sw.tgt.PID), selfCPU(), 0.0
	if sw.tgt.RedisPID > 0 {
		redis0 = cpuSeconds(sw.tgt.RedisPID)
	}
	rss := sampleRSS(sw.tgt.PID, 100*time.Millisecond)
	period := time.Duration(float64(time.Second) / rs.Rate)
	start := time.Now().Add(50 * time.Millisecond)
	buf := make([]byte, payloadSize)
	var lateMax time.Duration
	for i := 0; i < rs.M && ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(i) * period)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		if l := time.Since(due); l > lateMax {
			lateMax = l
		}
		pub.send(makePayload(buf, due, i, round))
	}
	pubDur := time.Since(start)
	perrs, perr := pub.finish(10 * time.Second)
	expected := int64(len(sw.live)) * int64(rs.M)
	deadline := time.Now().Add(drain)
	for time.Now().Before(deadline) && sw.received.Load() < expected && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	cpu1, sys1cpu, gen1 := cpuSeconds(sw.tgt.PID), sysSeconds(sw.tgt.PID), selfCPU()
	other := (systemBusy() - sys0) - (benchCPU() - ours0)
	rssMax := rss.Stop()
	redisCPU := 0.0
	if sw.tgt.RedisPID > 0 {
		redisCPU = cpuSeconds(sw.tgt.RedisPID) - redis0
	}

	r := &roundResult{Rate: rs.Rate, Messages: rs.M, Subscribers: len(sw.live), Expected: expected,
		PubErrors: perrs, PubErr: perr, PubLateMax: ms(lateMax), CPUSeconds: cpu1 - cpu0, SysCPUSeconds: sys1cpu - sys0cpu, GenCPUSeconds: gen1 - gen0, RedisCPU: redisCPU, OtherCPU: max(0, other), RSSMax: rssMax,
		PublishSecond: pubDur.Seconds()}
	all := make([]int32, 0, expected)
	for _, s := range sw.live {
		s.mu.Lock()
		for _, v := range s.lat {
			if v == 0 {
				r.Lost++
			} else {
				all = append(all, v-1)
			}
		}
		r.Dup += int64(s.dup)
		r.Stray += int64(s.stray)
		s.lat = nil
		s.round = -1
		s.mu.Unlock()
		if s.gone.Load() {
			r.Dropped++
		}
	}
	r.Deliveries = int64(len(all))
	st := statsMicros(all)
	r.P50, r.P99, r.Max = ms(st.P50), ms(st.P99), ms(st.Max)
	return r, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sseData returns the payload of an SSE data line (one space after the
// colon dropped, as an EventSource does).
func sseData(line []byte) ([]byte, bool) {
	p, ok := bytes.CutPrefix(line, []byte("data:"))
	if ok && len(p) > 0 && p[0] == ' ' {
		p = p[1:]
	}
	return p, ok
}
