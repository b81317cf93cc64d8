package integration_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/integration_test/harness"
	"github.com/caddy-realtime/realtime/internal/testredis"
	"github.com/gorilla/websocket"
)

// The examples under examples/, run the way their READMEs say: each
// example's own Caddyfile (ports and URLs through its {$ENV:default}
// variables), its own backend built from its directory or its own shell
// script, and the checks its README promises.

// exampleWait bounds each wait of these tests.
const exampleWait = 10 * time.Second

// exampleBuildTimeout bounds `go build` of an example's app.
const exampleBuildTimeout = 3 * time.Minute

// repoRoot is the repository root, where the READMEs' commands run.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "examples")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}

// lockedBuffer collects a process's output for the test and its log.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// proc is a child process of a test: stopped by its PID when the test
// ends, its output printed if the test failed.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, set before done is closed
}

// startProc runs bin in dir with the environment plus env.
func startProc(t *testing.T, name, dir string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: new(lockedBuffer), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	// its own process group (a script's redis-cli children too), and
	// killed if the test process dies
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	return p
}

// stop ends the process: SIGTERM to its PID, then SIGKILL to its
// process group (the one Setpgid made for it) if it lingers.
func (p *proc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(5 * time.Second):
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Errorf("%s (pid %d) still running 5s after SIGKILL", p.name, pid)
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// error.
func (p *proc) wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s did not exit within %v", p.name, timeout)
	}
}

// run runs a command of a README to its end within exampleWait and
// returns its output.
func run(t *testing.T, name, dir string, env []string, bin string, args ...string) string {
	t.Helper()
	p := startProc(t, name, dir, env, bin, args...)
	if err := p.wait(exampleWait); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, p.out.String())
	}
	return p.out.String()
}

// waitListening waits until addr accepts TCP connections, failing early
// if p exits first.
func waitListening(t *testing.T, p *proc, addr string) {
	t.Helper()
	deadline := time.Now().Add(harness.StartTimeout)
	for {
		select {
		case <-p.done:
			t.Fatalf("%s exited before listening on %s (%v):\n%s", p.name, addr, p.err, p.out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on %s within %v: %v", p.name, addr, harness.StartTimeout, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// startApp builds the Go app of an example into the test's directory,
// as `go run ./examples/<name>` would, and starts it on a free port.
func startApp(t *testing.T, name string, args ...string) (p *proc, port int) {
	t.Helper()
	root := repoRoot(t)
	bin := filepath.Join(t.TempDir(), name)
	ctx, cancel := context.WithTimeout(context.Background(), exampleBuildTimeout)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./examples/"+name)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./examples/%s: %v\n%s", name, err, out)
	}
	port = harness.FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p = startProc(t, name+" app", root, nil, bin, append([]string{"-addr", addr}, args...)...)
	waitListening(t, p, addr)
	return p, port
}

// example is one example's Caddy, run as its README says.
type example struct {
	base  string // http://127.0.0.1:<port>, also the Origin of its pages
	caddy *proc
}

func (e *example) url(path string) string { return e.base + path }

// startExample runs `caddy run --config examples/<name>/Caddyfile
// --adapter caddyfile` from the repository root, with the example's port
// variables pointing at free ports and env added, and waits until it
// serves.
func startExample(t *testing.T, name string, env ...string) *example {
	t.Helper()
	root := repoRoot(t)
	port, admin := harness.FreePort(t), harness.FreePort(t)
	home := t.TempDir()
	vars := []string{
		"HOME=" + home,
		"XDG_DATA_HOME=" + filepath.Join(home, "data"),
		"XDG_CONFIG_HOME=" + filepath.Join(home, "config"),
		"EXAMPLE_PORT=" + strconv.Itoa(port),
		"EXAMPLE_ADMIN_PORT=" + strconv.Itoa(admin),
	}
	p := startProc(t, name+" caddy", root, append(vars, env...), harness.Binary(t),
		"run", "--config", filepath.Join("examples", name, "Caddyfile"), "--adapter", "caddyfile")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	waitListening(t, p, addr)
	return &example{base: "http://" + addr, caddy: p}
}

// subscribeSSE opens an event stream and waits until it is live (the
// hub's `retry:` field comes once the subscriptions are).
func subscribeSSE(t *testing.T, rawURL string, header http.Header) *harness.SSEReader {
	t.Helper()
	client := harness.HTTP1Client()
	t.Cleanup(client.CloseIdleConnections)
	r := harness.OpenSSE(t, client, rawURL, header)
	if resp := r.ResponseWithin(t, exampleWait); resp.StatusCode != http.StatusOK {
		t.Fatalf("subscribing to %s: status %d", redactTicket(rawURL), resp.StatusCode)
	}
	for {
		if it := r.Next(t, exampleWait); it.Kind == harness.KindRetry {
			return r
		}
	}
}

// login logs name in at an example app through Caddy, as the page's
// form does, and returns the Cookie header that carries the login.
func login(t *testing.T, e *example, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), exampleWait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url("/login?name="+name), nil)
	client := harness.HTTP1Client()
	defer client.CloseIdleConnections()
	resp, err := client.Transport.RoundTrip(req) // no redirects
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login %s: status %d, want 303", name, resp.StatusCode)
	}
	var cookies []string
	for _, c := range resp.Cookies() {
		cookies = append(cookies, c.Name+"="+c.Value)
	}
	if len(cookies) == 0 {
		t.Fatalf("login %s: no cookie set", name)
	}
	return strings.Join(cookies, "; ")
}

// ticket asks the hub's built-in endpoint for a ticket with cookie, as
// realtime.js does with ticketURL.
func ticket(t *testing.T, e *example, cookie string, channels ...string) string {
	t.Helper()
	body, _ := json.Marshal(map[string][]string{"channels": channels})
	r := do(t, http.MethodPost, e.url("/hub/ticket"), http.Header{"Cookie": {cookie}, "Content-Type": {"application/json"}}, string(body))
	expect(t, "ticket", r, http.StatusOK, "")
	var v struct {
		Ticket    string `json:"ticket"`
		ExpiresIn int    `json:"expires_in"`
	}
	if err := json.Unmarshal([]byte(r.body), &v); err != nil || v.Ticket == "" || v.ExpiresIn <= 0 {
		t.Fatalf("ticket answer %q: %v", r.body, err)
	}
	return v.Ticket
}

// checkPage fetches a page and checks that it contains each of want.
func checkPage(t *testing.T, rawURL string, want ...string) {
	t.Helper()
	r := do(t, http.MethodGet, rawURL, nil, "")
	expect(t, "GET "+rawURL, r, http.StatusOK, "")
	for _, w := range want {
		if !strings.Contains(r.body, w) {
			t.Fatalf("GET %s: the page lacks %q", rawURL, w)
		}
	}
}

// checkClientServed checks that the hub serves the browser client the
// pages load.
func checkClientServed(t *testing.T, e *example) {
	t.Helper()
	r := do(t, http.MethodGet, e.url("/hub/realtime.js"), nil, "")
	expect(t, "GET /hub/realtime.js", r, http.StatusOK, "")
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") || !strings.Contains(r.body, "Realtime") {
		t.Fatalf("GET /hub/realtime.js: %s, %d bytes", ct, len(r.body))
	}
}

// dashboard: publish.sh PUBLISHes to Redis, the page's SSE stream (plain
// and ?format=json, as realtime.js reads it) shows every update, and no
// one can publish over HTTP.
func TestExampleDashboard(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	rs := testredis.Start(t)
	e := startExample(t, "dashboard", "REDIS_URL="+rs.URL())

	checkPage(t, e.url("/"), `<script src="/hub/realtime.js">`, "channels: ['metrics']")
	checkClientServed(t, e)
	expect(t, "HTTP publish without publish_key", do(t, http.MethodPost, e.url("/hub?channel=metrics"), nil, "{}"), http.StatusForbidden, "")

	plain := subscribeSSE(t, e.url("/hub?channel=metrics"), sseHeader())
	asPage := subscribeSSE(t, e.url("/hub?channel=metrics&format=json"), sseHeader("Origin", e.base))

	const count = 3
	out := run(t, "publish.sh", root, []string{"REDIS_URL=" + rs.URL(), "COUNT=" + strconv.Itoa(count), "INTERVAL=0.2"},
		"/bin/sh", "examples/dashboard/publish.sh")
	if !strings.Contains(out, fmt.Sprintf("published #%d to 1 node(s)", count)) {
		t.Fatalf("publish.sh output:\n%s", out)
	}

	type metrics struct {
		Seq                  int
		Time                 string
		Load1, Load5, Load15 *float64
		MemUsedPct           *float64 `json:"mem_used_pct"`
	}
	check := func(where, data string, seq int) {
		t.Helper()
		var m metrics
		if err := json.Unmarshal([]byte(data), &m); err != nil {
			t.Fatalf("%s: update %q: %v", where, data, err)
		}
		if m.Seq != seq || m.Time == "" || m.Load1 == nil || m.Load5 == nil || m.Load15 == nil || m.MemUsedPct == nil {
			t.Fatalf("%s: update %q, want seq %d with time, loads and memory", where, data, seq)
		}
	}
	for seq := 1; seq <= count; seq++ {
		ev := plain.NextEvent(t, exampleWait)
		if ev.Event != "message" || ev.ID == "" {
			t.Fatalf("plain SSE: %v", ev)
		}
		check("plain SSE", ev.Data, seq)

		ev = asPage.NextEvent(t, exampleWait)
		var msg struct{ Channel, ID, Data string }
		if err := json.Unmarshal([]byte(ev.Data), &msg); err != nil || msg.Channel != "metrics" || msg.ID != ev.ID {
			t.Fatalf("format=json SSE: %v (%v)", ev, err)
		}
		check("format=json SSE", msg.Data, seq)
	}
}

// wsConn is a hub WebSocket of a test.
type wsConn struct {
	t    *testing.T
	conn *websocket.Conn
}

// dialExampleWS opens a hub WebSocket as a page of origin would and
// waits for the subscribed frame.
func dialExampleWS(t *testing.T, e *example, path, origin string) *wsConn {
	t.Helper()
	conn, resp, err := harness.WSDialer().Dial(harness.WSURL(e.url(path)), http.Header{"Origin": {origin}})
	if err != nil {
		t.Fatalf("dialing %s: %v (status %d)", redactTicket(path), err, statusOf(resp))
	}
	t.Cleanup(func() { conn.Close() })
	if f := readFrame(t, conn); f["type"] != "subscribed" {
		t.Fatalf("first frame %v, want subscribed", f)
	}
	return &wsConn{t: t, conn: conn}
}

// wsRefused dials and expects the upgrade refused with status.
func wsRefused(t *testing.T, e *example, path, origin string, status int) {
	t.Helper()
	conn, resp, err := harness.WSDialer().Dial(harness.WSURL(e.url(path)), http.Header{"Origin": {origin}})
	if err == nil {
		conn.Close()
		t.Fatalf("dialing %s: upgraded, want %d", redactTicket(path), status)
	}
	if statusOf(resp) != status {
		t.Fatalf("dialing %s: %v (status %d), want %d", redactTicket(path), err, statusOf(resp), status)
	}
}

// until reads frames until one satisfies ok, within exampleWait.
func (w *wsConn) until(what string, ok func(map[string]any) bool) map[string]any {
	w.t.Helper()
	deadline := time.Now().Add(exampleWait)
	for time.Now().Before(deadline) {
		if f := readFrame(w.t, w.conn); ok(f) {
			return f
		}
	}
	w.t.Fatalf("no %s within %v", what, exampleWait)
	return nil
}

func isType(typ string) func(map[string]any) bool {
	return func(f map[string]any) bool { return f["type"] == typ }
}

// isChatMessage is a frame of a chat message: no control frame, no
// realtime.join or realtime.leave.
func isChatMessage(f map[string]any) bool {
	_, ctl := f["type"]
	ev, _ := f["event"].(string)
	return !ctl && !strings.HasPrefix(ev, "realtime.")
}

// chat: a cookie login, a ticket from /hub/ticket approved by the app,
// WebSocket publish frames that reach the other user, and the refusals
// the README lists.
func TestExampleChat(t *testing.T) {
	t.Parallel()
	_, appPort := startApp(t, "chat")
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	e := startExample(t, "chat", "EXAMPLE_APP_PORT="+strconv.Itoa(appPort), "CHAT_TICKET_SECRET="+hex.EncodeToString(secret))

	checkPage(t, e.url("/"), `<script src="/hub/realtime.js">`, "ticketURL: '/hub/ticket'", "rt.publish(")
	checkClientServed(t, e)
	if r := do(t, http.MethodPost, e.url("/internal/authorize"), nil, "{}"); r.status != http.StatusNotFound {
		t.Fatalf("authorize from outside: status %d, want 404", r.status)
	}
	expect(t, "ticket without login", do(t, http.MethodPost, e.url("/hub/ticket"), nil, `{"channels":["chat:lobby"]}`), http.StatusUnauthorized, "not logged in")

	alice, bob := login(t, e, "alice"), login(t, e, "bob")
	me := do(t, http.MethodGet, e.url("/me"), http.Header{"Cookie": {alice}}, "")
	expect(t, "GET /me", me, http.StatusOK, `"name":"alice"`)

	ta := ticket(t, e, alice, "chat:lobby")
	wa := dialExampleWS(t, e, "/hub?channel=chat:lobby&ticket="+ta, e.base)
	wb := dialExampleWS(t, e, "/hub?channel=chat:lobby&ticket="+ticket(t, e, bob, "chat:lobby"), e.base)

	// the room tracks who is in it (channels chat:* { presence events }):
	// alice sees bob join, and the presence endpoint lists both
	join := wa.until("bob's join", func(f map[string]any) bool {
		return f["event"] == "realtime.join" && f["data"] == `{"channel":"chat:lobby","sub":"bob"}`
	})
	if id, _ := join["id"].(string); id == "" {
		t.Fatalf("join %v without id", join)
	}
	pr := do(t, http.MethodGet, e.url("/hub/presence?channel=chat:lobby"), http.Header{"Authorization": {"Bearer " + ticket(t, e, bob, "chat:lobby")}}, "")
	expect(t, "GET /hub/presence with a ticket", pr, http.StatusOK, "")
	var snap struct {
		Connections int `json:"connections"`
		Members     []struct {
			Sub         string `json:"sub"`
			Connections int    `json:"connections"`
		} `json:"members"`
	}
	if err := json.Unmarshal([]byte(pr.body), &snap); err != nil {
		t.Fatalf("presence answer %q: %v", pr.body, err)
	}
	subs := []string{}
	for _, m := range snap.Members {
		subs = append(subs, fmt.Sprintf("%s:%d", m.Sub, m.Connections))
	}
	sort.Strings(subs)
	if snap.Connections != 2 || strings.Join(subs, ",") != "alice:1,bob:1" {
		t.Fatalf("presence %s: want alice and bob, one connection each", pr.body)
	}
	expect(t, "GET /hub/presence without login", do(t, http.MethodGet, e.url("/hub/presence?channel=chat:lobby"), nil, ""), http.StatusUnauthorized, "")

	// alice says hi over her WebSocket, as rt.publish does
	const hi = `{"from":"alice","text":"hi bob"}`
	if err := wa.conn.WriteJSON(map[string]string{"type": "publish", "channel": "chat:lobby", "data": hi}); err != nil {
		t.Fatal(err)
	}
	ack := wa.until("ack", isType("ack"))
	if id, _ := ack["id"].(string); id == "" {
		t.Fatalf("ack %v without id", ack)
	}
	got := wb.until("message", isChatMessage)
	if got["channel"] != "chat:lobby" || got["data"] != hi || got["id"] != ack["id"] {
		t.Fatalf("bob got %v, want alice's message with id %v", got, ack["id"])
	}

	// the ticket allows chat:* only
	if err := wa.conn.WriteJSON(map[string]string{"type": "publish", "channel": "news", "data": "x"}); err != nil {
		t.Fatal(err)
	}
	if f := wa.until("error", isType("error")); !strings.Contains(fmt.Sprint(f["reason"]), "news") {
		t.Fatalf("publish to news: %v", f)
	}

	// a ticket works once; another origin is refused
	wsRefused(t, e, "/hub?channel=chat:lobby&ticket="+ta, e.base, http.StatusUnauthorized)
	wsRefused(t, e, "/hub?channel=chat:lobby&ticket="+ticket(t, e, alice, "chat:lobby"), "https://evil.example", http.StatusForbidden)

	// a fresh ticket publishes over HTTP, as rt.publish does off WebSocket
	r := do(t, http.MethodPost, e.url("/hub?channel=chat:lobby"), http.Header{"Authorization": {"Bearer " + ticket(t, e, alice, "chat:lobby")}}, `{"from":"alice","text":"over http"}`)
	expect(t, "HTTP publish with a ticket", r, http.StatusOK, `"id"`)
	got = wb.until("message", isChatMessage)
	if got["data"] != `{"from":"alice","text":"over http"}` {
		t.Fatalf("bob got %v, want the HTTP publish", got)
	}
}

// notifications: user:<name> bound to the login; notify.sh and an HTTP
// publish with the publish_key reach alice only; bob and strangers are
// refused alice's channel.
func TestExampleNotifications(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	rs := testredis.Start(t)
	_, appPort := startApp(t, "notifications")
	const key = "examples-test-publish-key"
	e := startExample(t, "notifications", "REDIS_URL="+rs.URL(), "EXAMPLE_APP_PORT="+strconv.Itoa(appPort), "NOTIFY_PUBLISH_KEY="+key)

	checkPage(t, e.url("/"), `<script src="/hub/realtime.js">`, "ticketURL: '/hub/ticket'")
	checkClientServed(t, e)
	alice, bob := login(t, e, "alice"), login(t, e, "bob")

	// alice with a ticket, and with her cookie alone; bob on his channel
	withTicket := subscribeSSE(t, e.url("/hub?channel=user:alice&ticket="+ticket(t, e, alice, "user:alice")), sseHeader())
	withCookie := subscribeSSE(t, e.url("/hub?channel=user:alice"), sseHeader("Cookie", alice))
	bobs := subscribeSSE(t, e.url("/hub?channel=user:bob&ticket="+ticket(t, e, bob, "user:bob")), sseHeader())

	env := []string{"REDIS_URL=" + rs.URL()}
	out := run(t, "notify.sh", root, env, "/bin/sh", "examples/notifications/notify.sh", "alice", "Your build passed")
	if !regexp.MustCompile(`notified alice on [1-9]\d* node`).MatchString(out) {
		t.Fatalf("notify.sh output: %q", out)
	}
	r := do(t, http.MethodPost, e.url("/hub?channel=user:alice&event=invoice"), http.Header{"Authorization": {"Bearer " + key}}, "Invoice #42 is ready")
	expect(t, "HTTP publish with the publish_key", r, http.StatusOK, `"id"`)
	for name, s := range map[string]*harness.SSEReader{"ticket": withTicket, "cookie": withCookie} {
		if ev := s.NextEvent(t, exampleWait); ev.Data != "Your build passed" || ev.Event != "message" {
			t.Fatalf("alice (%s): %v", name, ev)
		}
		if ev := s.NextEvent(t, exampleWait); ev.Data != "Invoice #42 is ready" || ev.Event != "invoice" {
			t.Fatalf("alice (%s): %v", name, ev)
		}
	}
	// bob's first notification is his own: he never saw alice's
	run(t, "notify.sh", root, env, "/bin/sh", "examples/notifications/notify.sh", "bob", "for bob")
	if ev := bobs.NextEvent(t, exampleWait); ev.Data != "for bob" {
		t.Fatalf("bob: %v, want only his own notification", ev)
	}

	// bob can't listen to alice: with his cookie, with a ticket he got
	// for her channel (it covers user:bob only), over SSE and WebSocket
	expect(t, "bob's cookie for user:alice", do(t, http.MethodGet, e.url("/hub?channel=user:alice"), sseHeader("Cookie", bob), ""), http.StatusForbidden, "user:alice")
	expect(t, "bob's ticket for user:alice", do(t, http.MethodGet, e.url("/hub?channel=user:alice&ticket="+ticket(t, e, bob, "user:alice")), sseHeader(), ""), http.StatusForbidden, "user:alice")
	wsRefused(t, e, "/hub?channel=user:alice&ticket="+ticket(t, e, bob, "user:alice"), e.base, http.StatusForbidden)
	// nobody logged in
	expect(t, "no login", do(t, http.MethodGet, e.url("/hub?channel=user:alice"), sseHeader(), ""), http.StatusUnauthorized, "not logged in")
	expect(t, "ticket without login", do(t, http.MethodPost, e.url("/hub/ticket"), nil, `{"channels":["user:alice"]}`), http.StatusUnauthorized, "not logged in")
	// a page's publish (no publish rights, no key) is refused
	r = do(t, http.MethodPost, e.url("/hub?channel=user:alice"), http.Header{"Authorization": {"Bearer " + ticket(t, e, alice, "user:alice")}}, "spoof")
	if r.status != http.StatusForbidden {
		t.Fatalf("publish with alice's ticket: %d %q, want 403", r.status, r.reason())
	}
}

// passthrough: the app's own stream gets the no-buffering headers, every
// event at once, a heartbeat while the app stalls, and Origin checks
// before the app.
func TestExamplePassthrough(t *testing.T) {
	t.Parallel()
	app, appPort := startApp(t, "passthrough") // the README's defaults: bursts of 3, stalls of 12s
	e := startExample(t, "passthrough", "EXAMPLE_APP_PORT="+strconv.Itoa(appPort))

	checkPage(t, e.url("/"), "new EventSource('/events')")

	// another origin: 403, and the app never hears of it
	expect(t, "disallowed Origin", do(t, http.MethodGet, e.url("/events"), sseHeader("Origin", "https://evil.example"), ""), http.StatusForbidden, "origin")
	if strings.Contains(app.out.String(), "evil.example") {
		t.Fatalf("the app saw the refused request:\n%s", app.out.String())
	}
	// listed origins pass
	for _, origin := range []string{"http://localhost:3000", "https://app.example.com"} {
		expect(t, "Origin "+origin, do(t, http.MethodGet, e.url("/events"), sseHeader("Origin", origin), ""), http.StatusOK, "")
	}

	// the page's stream (its own origin)
	client := harness.HTTP1Client()
	t.Cleanup(client.CloseIdleConnections)
	s := harness.OpenSSE(t, client, e.url("/events"), sseHeader("Origin", e.base))
	resp := s.ResponseWithin(t, exampleWait)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: status %d", resp.StatusCode)
	}
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Content-Length": ""} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("stream: %s %q, want %q", k, got, want)
		}
	}
	if resp.ContentLength != -1 {
		t.Errorf("stream: content length %d, want none", resp.ContentLength)
	}

	// the burst, one event a second, each as it is written
	var last harness.SSEItem
	for i := 1; i <= 3; i++ {
		ev := s.NextEvent(t, exampleWait)
		if ev.ID != strconv.Itoa(i) || ev.Event != "tick" || !strings.HasPrefix(ev.Data, fmt.Sprintf("tick %d ", i)) {
			t.Fatalf("event %d: %v", i, ev)
		}
		if i > 1 && ev.At.Sub(last.At) < 500*time.Millisecond {
			t.Fatalf("event %d arrived %v after event %d: buffered, not streamed", i, ev.At.Sub(last.At), i-1)
		}
		last = ev
	}
	// then the app stalls: a heartbeat comes after 5s of silence,
	// before its next burst 12s later
	hb, err := s.TryNext(9 * time.Second)
	if err != nil {
		t.Fatalf("no heartbeat while the app stalls: %v", err)
	}
	if hb.Kind != harness.KindComment || hb.Text != "heartbeat" {
		t.Fatalf("after the burst: %v, want a heartbeat comment", hb)
	}
	if gap := hb.At.Sub(last.At); gap < 4*time.Second {
		t.Fatalf("heartbeat %v after the last event, want about 5s", gap)
	}
}
