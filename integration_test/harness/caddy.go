package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Bounds of the Caddy process lifecycle.
const (
	// StartTimeout bounds the wait for the admin endpoint and every
	// listener of a new Caddy (including its internal CA's first
	// certificates).
	StartTimeout = 20 * time.Second
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	StopTimeout = 5 * time.Second
	// adminTimeout bounds one admin API call; /load waits for the old
	// config's servers to shut down, so it gets more.
	adminTimeout = 10 * time.Second
	loadTimeout  = 30 * time.Second
	// logTail is how many of Caddy's last log lines a failed test
	// prints; the whole log is saved to a file (logDir).
	logTail = 12
)

// Ports are the loopback ports of one Caddy: its `http_port`,
// `https_port` and admin endpoint. They are kept across Restart.
type Ports struct {
	HTTP, HTTPS, Admin int
}

// Option changes how StartCaddy runs Caddy.
type Option func(*settings)

type settings struct {
	vars          map[string]any
	env           []string
	keepRedirects bool
}

// Var makes value available to the Caddyfile template as {{.name}}, for
// example Var("Upstream", up.Addr()) for `reverse_proxy {{.Upstream}}`.
func Var(name string, value any) Option {
	return func(s *settings) { s.vars[name] = value }
}

// Env adds an environment variable to the Caddy process (for `{env.X}`
// placeholders).
func Env(key, value string) Option {
	return func(s *settings) { s.env = append(s.env, key+"="+value) }
}

// KeepRedirects leaves Caddy's automatic HTTP->HTTPS redirects on; by
// default the harness disables them so an http:// site and an https://
// site of the same host can live in one Caddyfile.
func KeepRedirects() Option {
	return func(s *settings) { s.keepRedirects = true }
}

// Caddy is one running `caddy run` child process.
type Caddy struct {
	t        testing.TB
	bin      string
	dir      string
	ports    Ports
	settings settings
	admin    *http.Client
	logs     *syncBuffer

	mu        sync.Mutex
	template  string // current Caddyfile template, for Restart
	config    string // current rendered Caddyfile
	cmd       *exec.Cmd
	done      chan struct{} // closed when cmd has exited
	startedAt time.Time
}

// StartCaddy starts Caddy with caddyfile, a text/template. The template
// sees {{.HTTPPort}}, {{.HTTPSPort}}, {{.AdminPort}}, {{.AdminAddr}} and
// every Var. The harness adds its own global options (admin address,
// http_port, https_port, local_certs, skip_install_trust and
// `auto_https disable_redirects`) to the Caddyfile's global options
// block, or adds such a block; a test must not set these itself.
//
// StartCaddy returns when the admin endpoint answers and every listener
// of the config accepts connections, and stops Caddy when the test ends,
// printing its output if the test failed.
func StartCaddy(t testing.TB, caddyfile string, opts ...Option) *Caddy {
	t.Helper()
	c := &Caddy{
		t:        t,
		bin:      Binary(t),
		dir:      t.TempDir(),
		settings: settings{vars: map[string]any{}},
		admin:    &http.Client{Timeout: loadTimeout},
		logs:     new(syncBuffer),
		template: caddyfile,
	}
	for _, o := range opts {
		o(&c.settings)
	}
	for _, d := range []string{"home", "data", "config"} {
		if err := os.Mkdir(filepath.Join(c.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ran := len(c.Logs()) // what Caddy logged while the test ran, before its shutdown
		c.Stop()
		if t.Failed() {
			t.Log(c.failureLog(t.Name(), ran))
		}
	})
	// A port handed out free may be taken by another process before
	// Caddy binds it; then try again with new ports.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		c.ports = Ports{HTTP: FreePort(t), HTTPS: FreePort(t), Admin: FreePort(t)}
		if err = c.render(caddyfile); err != nil {
			t.Fatal(err)
		}
		if err = c.start(); !errors.Is(err, errPortInUse) {
			break
		}
	}
	if err != nil {
		t.Fatalf("starting caddy: %v", err)
	}
	return c
}

var errPortInUse = errors.New("a port was already in use")

// render fills in the template and writes the Caddyfile.
func (c *Caddy) render(tmpl string) error {
	text, err := c.Render(tmpl)
	if err != nil {
		return err
	}
	if err := os.WriteFile(c.configPath(), []byte(text), 0o600); err != nil {
		return err
	}
	c.mu.Lock()
	c.template, c.config = tmpl, text
	c.mu.Unlock()
	return nil
}

// Render returns the Caddyfile that tmpl becomes for this Caddy: the
// template filled in and the harness's global options added.
func (c *Caddy) Render(tmpl string) (string, error) {
	data := map[string]any{
		"HTTPPort":  c.ports.HTTP,
		"HTTPSPort": c.ports.HTTPS,
		"AdminPort": c.ports.Admin,
		"AdminAddr": c.AdminAddr(),
	}
	for k, v := range c.settings.vars {
		data[k] = v
	}
	tp, err := template.New("Caddyfile").Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return "", fmt.Errorf("caddyfile template: %w", err)
	}
	var b strings.Builder
	if err := tp.Execute(&b, data); err != nil {
		return "", fmt.Errorf("caddyfile template: %w", err)
	}
	globals := fmt.Sprintf("\tadmin %s\n\thttp_port %d\n\thttps_port %d\n\tlocal_certs\n\tskip_install_trust\n",
		c.AdminAddr(), c.ports.HTTP, c.ports.HTTPS)
	if !c.settings.keepRedirects {
		globals += "\tauto_https disable_redirects\n"
	}
	text, err := injectGlobals(b.String(), globals)
	if err != nil {
		return "", err
	}
	// formatted as `caddy fmt` would, so that Caddy does not warn that
	// it is not
	return string(caddyfile.Format([]byte(text))), nil
}

// injectGlobals adds globals to the global options block of a Caddyfile,
// or puts a global options block in front of it.
func injectGlobals(caddyfile, globals string) (string, error) {
	lines := strings.SplitAfter(caddyfile, "\n")
	for i, line := range lines {
		s := strings.TrimSpace(line)
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if s == "{" {
			out := strings.Join(lines[:i+1], "") + "\t# added by the test harness\n" + globals + strings.Join(lines[i+1:], "")
			return out, nil
		}
		if strings.HasPrefix(s, "{") {
			return "", fmt.Errorf("caddyfile template: put the opening brace of the global options block on a line of its own")
		}
		break
	}
	return "{\n\t# added by the test harness\n" + globals + "}\n\n" + caddyfile, nil
}

// logDir keeps the whole Caddy log of each failed test, after the
// test's temporary directory is gone.
var logDir = filepath.Join(os.TempDir(), "realtime-test-logs")

// failureLog saves Caddy's whole output to a file in logDir and returns,
// for a failed test's log, the file's name and the last lines Caddy
// logged while the test ran (the first ran bytes: its shutdown, which
// follows, says nothing about the failure).
func (c *Caddy) failureLog(test string, ran int) string {
	logs := c.Logs()
	lines := strings.SplitAfter(strings.TrimRight(logs[:ran], "\n"), "\n")
	tail := lines[max(0, len(lines)-logTail):]
	where := "not saved"
	name := filepath.Join(logDir, strings.NewReplacer("/", "_", " ", "_").Replace(test)+"-"+strconv.Itoa(os.Getpid())+".log")
	if err := os.MkdirAll(logDir, 0o755); err == nil && os.WriteFile(name, []byte(logs), 0o644) == nil {
		where = name
	}
	return fmt.Sprintf("caddy output while the test ran, last %d lines (whole log: %s):\n%s", len(tail), where, strings.Join(tail, ""))
}

func (c *Caddy) configPath() string { return filepath.Join(c.dir, "Caddyfile") }

// start runs the process and waits until it serves.
func (c *Caddy) start() error {
	cmd := exec.Command(c.bin, "run", "--config", c.configPath(), "--adapter", "caddyfile")
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(),
		"HOME="+filepath.Join(c.dir, "home"),
		"XDG_DATA_HOME="+filepath.Join(c.dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(c.dir, "config"),
	)
	cmd.Env = append(cmd.Env, c.settings.env...)
	cmd.Stdout = c.logs
	cmd.Stderr = c.logs
	// its own process group, and killed if the test process dies
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(c.logs, "=== harness: caddy run (%s) ports http=%d https=%d admin=%d\n",
		time.Now().Format(time.RFC3339Nano), c.ports.HTTP, c.ports.HTTPS, c.ports.Admin)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running %s: %w", c.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c.mu.Lock()
	c.cmd, c.done, c.startedAt = cmd, done, time.Now()
	c.mu.Unlock()
	return c.waitReady(done)
}

// waitReady polls until the admin endpoint answers and every TCP
// listener of the running config accepts.
func (c *Caddy) waitReady(done <-chan struct{}) error {
	deadline := time.Now().Add(StartTimeout)
	var last error
	for {
		select {
		case <-done:
			if strings.Contains(c.logs.String(), "address already in use") {
				return errPortInUse
			}
			return fmt.Errorf("caddy exited during startup (%v); see its output", c.exitState())
		default:
		}
		if last = c.ready(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			c.Kill()
			return fmt.Errorf("caddy not ready within %v: %v", StartTimeout, last)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (c *Caddy) ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.AdminURL("/config/apps/http/servers"), nil)
	resp, err := c.admin.Do(req)
	if err != nil {
		return fmt.Errorf("admin endpoint: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("admin endpoint: %s: %s", resp.Status, body)
	}
	var servers map[string]struct {
		Listen []string          `json:"listen"`
		TLS    []json.RawMessage `json:"tls_connection_policies"`
		Routes []struct {
			Match []struct {
				Host []string `json:"host"`
			} `json:"match"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(body, &servers); err != nil && strings.TrimSpace(string(body)) != "null" {
		return fmt.Errorf("admin endpoint: servers: %w", err)
	}
	for name, s := range servers {
		for _, l := range s.Listen {
			port, ok := tcpPort(l)
			if !ok {
				continue
			}
			addr := net.JoinHostPort("127.0.0.1", port)
			if s.TLS == nil && port != strconv.Itoa(c.ports.HTTPS) {
				conn, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					return fmt.Errorf("server %s listener %s: %w", name, l, err)
				}
				_ = conn.Close()
				continue
			}
			// A TLS listener accepts before its certificates are issued:
			// wait until a handshake for each site name succeeds.
			names := []string{""}
			for _, r := range s.Routes {
				for _, m := range r.Match {
					for _, h := range m.Host {
						if !strings.ContainsAny(h, "*{") {
							names = append(names, h)
						}
					}
				}
			}
			if len(names) > 1 {
				names = names[1:]
			}
			for _, sni := range names {
				d := &tls.Dialer{
					NetDialer: &net.Dialer{Timeout: time.Second},
					Config:    &tls.Config{ServerName: sni, InsecureSkipVerify: true}, //nolint:gosec // readiness probe
				}
				conn, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					return fmt.Errorf("server %s listener %s: TLS handshake for %q: %w", name, l, sni, err)
				}
				_ = conn.Close()
			}
		}
	}
	return nil
}

// tcpPort returns the port of a Caddy listen address such as ":8080",
// "127.0.0.1:8080" or "tcp/:8080"; other networks do not count.
func tcpPort(listen string) (string, bool) {
	if i := strings.Index(listen, "/"); i >= 0 {
		if network := listen[:i]; !strings.HasPrefix(network, "tcp") {
			return "", false
		}
		listen = listen[i+1:]
	}
	_, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" || strings.Contains(port, "-") {
		return "", false
	}
	return port, true
}

func (c *Caddy) exitState() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.ProcessState == nil {
		return "running"
	}
	return c.cmd.ProcessState.String()
}

// Ports returns the ports of this Caddy.
func (c *Caddy) Ports() Ports { return c.ports }

// Dir is the test's directory of this Caddy (Caddyfile, storage).
func (c *Caddy) Dir() string { return c.dir }

// Caddyfile returns the rendered Caddyfile Caddy runs (or last loaded).
func (c *Caddy) Caddyfile() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.config
}

// URL is an http:// URL of path on the http_port.
func (c *Caddy) URL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", c.ports.HTTP, path)
}

// HTTPSURL is an https:// URL of path on the https_port; a site
// `https://127.0.0.1:{{.HTTPSPort}}` serves it with a certificate of
// Caddy's internal CA.
func (c *Caddy) HTTPSURL(path string) string {
	return fmt.Sprintf("https://127.0.0.1:%d%s", c.ports.HTTPS, path)
}

// AdminAddr is host:port of the admin endpoint.
func (c *Caddy) AdminAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.ports.Admin))
}

// AdminURL is the URL of path on the admin endpoint.
func (c *Caddy) AdminURL(path string) string { return "http://" + c.AdminAddr() + path }

// PID is the process ID of the running Caddy, 0 when it is not running.
func (c *Caddy) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	select {
	case <-c.done:
		return 0
	default:
	}
	return c.cmd.Process.Pid
}

// Logs returns everything Caddy wrote to stdout and stderr so far, over
// all its runs.
func (c *Caddy) Logs() string { return c.logs.String() }

// Exited is closed when the current Caddy process has exited.
func (c *Caddy) Exited() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return c.done
}

// Stop ends Caddy gracefully: SIGTERM, then SIGKILL to its process group
// if it has not exited within StopTimeout. It returns when the process has
// exited; stopping a stopped Caddy does nothing.
func (c *Caddy) Stop() {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		fmt.Fprintf(c.logs, "=== harness: caddy stopped (%s)\n", time.Now().Format(time.RFC3339Nano))
		return
	case <-time.After(StopTimeout):
		fmt.Fprintf(c.logs, "=== harness: caddy did not stop within %v of SIGTERM; killing it\n", StopTimeout)
	}
	c.Kill()
}

// Kill ends Caddy at once with SIGKILL to its process group, and returns
// when it has exited.
func (c *Caddy) Kill() {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	// the group is the one Setpgid made for this child: only ours
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-done:
		fmt.Fprintf(c.logs, "=== harness: caddy killed (%s)\n", time.Now().Format(time.RFC3339Nano))
	case <-time.After(5 * time.Second):
		c.t.Errorf("caddy (pid %d) still running 5s after SIGKILL", cmd.Process.Pid)
	}
}

// Restart stops Caddy gracefully and starts it again with the same ports
// and its current Caddyfile (the last one loaded by Reload).
func (c *Caddy) Restart(t testing.TB) {
	t.Helper()
	c.Stop()
	if err := c.start(); err != nil {
		t.Fatalf("restarting caddy: %v", err)
	}
}

// Reload loads a new Caddyfile template into the running Caddy through
// the admin API (POST /load), as `caddy reload` does, and fails the test
// if Caddy refuses it.
func (c *Caddy) Reload(t testing.TB, caddyfile string) {
	t.Helper()
	if err := c.TryReload(caddyfile); err != nil {
		t.Fatalf("reloading caddy: %v", err)
	}
}

// TryReload is Reload returning the error, for a test that expects a
// config to be refused. A refused config leaves the running one (and the
// Caddyfile Restart uses) as it was.
func (c *Caddy) TryReload(caddyfile string) error {
	text, err := c.Render(caddyfile)
	if err != nil {
		return err
	}
	old, err := c.listeners()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.AdminURL("/load"), strings.NewReader(text))
	req.Header.Set("Content-Type", "text/caddyfile")
	// load even if the config is unchanged, like `caddy reload --force`
	req.Header.Set("Cache-Control", "must-revalidate")
	resp, err := c.admin.Do(req)
	if err != nil {
		return fmt.Errorf("POST /load: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /load: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	if err := c.waitOldListenersClosed(old); err != nil {
		return err
	}
	return c.render(caddyfile)
}

// waitOldListenersClosed waits until the config a reload replaced has
// closed its listeners (old: the listening sockets before the reload).
// Caddy binds the new config's listeners beside the old ones
// (SO_REUSEPORT) and closes the old ones as the old servers shut down,
// which may be after /load has answered; the kernel spreads new
// connections over both, and a connection still queued on an old
// listener when it closes is reset. Waiting here makes a test's first
// request after a reload reach the new config, as it would a moment
// later in production.
func (c *Caddy) waitOldListenersClosed(old map[string]bool) error {
	deadline := time.Now().Add(loadTimeout)
	for {
		now, err := c.listeners()
		if err != nil {
			return err
		}
		open := 0
		for inode := range old {
			if now[inode] {
				open++
			}
		}
		if open == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("reload: %d listeners of the old config still open %v after /load", open, loadTimeout)
		}
		time.Sleep(10 * time.Millisecond) // polling the kernel's socket table: no event to await
	}
}

// listeners returns the inodes of the TCP sockets Caddy listens on for
// its servers (the admin endpoint's excluded: a reload may keep it).
func (c *Caddy) listeners() (map[string]bool, error) {
	pid := c.PID()
	owned := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, fmt.Errorf("caddy's sockets: %w", err)
	}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			owned[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	out := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue // no IPv6
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st ... uid timeout inode
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" || !owned[f[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			if port, err := strconv.ParseInt(hexPort, 16, 32); err == nil && int(port) != c.ports.Admin {
				out[f[9]] = true
			}
		}
	}
	return out, nil
}

// Admin performs a request on the admin endpoint and returns the status
// and body; it fails the test on a transport error.
func (c *Caddy) Admin(t testing.TB, method, path string, body io.Reader) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.AdminURL(path), body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.admin.Do(req)
	if err != nil {
		t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("admin %s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// Metrics returns the Prometheus text of the admin /metrics endpoint.
func (c *Caddy) Metrics(t testing.TB) string {
	t.Helper()
	status, body := c.Admin(t, http.MethodGet, "/metrics", nil)
	if status != http.StatusOK {
		t.Fatalf("admin /metrics: status %d: %s", status, body)
	}
	return string(body)
}

// Goroutines returns the number of goroutines in the Caddy process, from
// the admin endpoint's goroutine profile.
func (c *Caddy) Goroutines(t testing.TB) int {
	t.Helper()
	status, body := c.Admin(t, http.MethodGet, "/debug/pprof/goroutine?debug=1", nil)
	if status != http.StatusOK {
		t.Fatalf("admin goroutine profile: status %d: %s", status, body)
	}
	first, _, _ := strings.Cut(string(body), "\n")
	const prefix = "goroutine profile: total "
	if !strings.HasPrefix(first, prefix) {
		t.Fatalf("admin goroutine profile: unexpected first line %q", first)
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(first, prefix)))
	if err != nil {
		t.Fatalf("admin goroutine profile: %q: %v", first, err)
	}
	return n
}

// syncBuffer is a bytes.Buffer safe for the two copiers of stdout and
// stderr and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
