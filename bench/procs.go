package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procs tracks every child process the bench starts so that all of them are
// stopped (by PID) at the end, on error and on interrupt.
type procs struct {
	mu   sync.Mutex
	list []*exec.Cmd
}

var children procs

func (p *procs) add(c *exec.Cmd) {
	p.mu.Lock()
	p.list = append(p.list, c)
	p.mu.Unlock()
}

// stop ends one child: SIGTERM to it, SIGKILL after a grace period.
func stopProc(c *exec.Cmd, grace time.Duration) {
	if c == nil || c.Process == nil {
		return
	}
	if c.ProcessState != nil {
		return
	}
	_ = c.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _, _ = c.Process.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		_ = c.Process.Kill()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
	}
}

// stopAll ends every child still running, newest first.
func (p *procs) stopAll() {
	p.mu.Lock()
	list := p.list
	p.list = nil
	p.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		stopProc(list[i], 3*time.Second)
	}
}

// startChild starts a command with stdout/stderr to logPath, tracked for
// cleanup. The child gets its own process group so a terminal ^C reaches
// only the bench, which then stops its children itself.
func startChild(name string, args []string, dir, logPath string) (*exec.Cmd, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	c := exec.Command(name, args...)
	c.Dir = dir
	c.Env = childEnv(dir)
	c.Stdout = lf
	c.Stderr = lf
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	lf.Close() // the child holds its own descriptor
	children.add(c)
	return c, nil
}

// freePort asks the kernel for a free loopback TCP port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitPort waits until something accepts TCP connections on addr.
func waitPort(ctx context.Context, addr string, c *exec.Cmd, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return nil
		}
		if c != nil && exited(c) {
			return fmt.Errorf("process exited before listening on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing listening on %s after %s", addr, timeout)
}

// exited reports whether a child has exited, without reaping anything else.
func exited(c *exec.Cmd) bool {
	if c.Process == nil {
		return true
	}
	return syscall.Kill(c.Process.Pid, 0) != nil || isZombie(c.Process.Pid)
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// raiseNoFile raises this process's open-file limit to its hard limit;
// children inherit it.
func raiseNoFile() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	rl.Cur = rl.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	return rl.Cur
}

// ---- /proc sampling of a server's process tree ----

var clkTck = 100.0 // USER_HZ; 100 on every Linux this runs on

// procTree returns pid and all its descendants.
func procTree(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out) && i < 64; i++ {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", out[i]))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(f); err == nil {
					out = append(out, n)
				}
			}
		}
	}
	return out
}

// cpuSeconds is user+system CPU time of pid's process tree.
func cpuSeconds(pid int) float64 {
	var total float64
	for _, p := range procTree(pid) {
		total += procCPU(strconv.Itoa(p))
	}
	return total
}

// selfCPU is the load generator's own CPU time (without its children).
func selfCPU() float64 { return procCPU("self") }

func procCPU(pid string) float64 {
	u, s := procCPUSplit(pid)
	return u + s
}

// sysSeconds is the kernel-mode part of cpuSeconds: for these servers,
// mostly the socket writes.
func sysSeconds(pid int) float64 {
	var total float64
	for _, p := range procTree(pid) {
		_, s := procCPUSplit(strconv.Itoa(p))
		total += s
	}
	return total
}

// procCPUSplit is a process's user and system CPU seconds.
func procCPUSplit(pid string) (user, sys float64) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0
	}
	f := strings.Fields(string(b[i+1:]))
	// after ')': state(0) ppid(1) ... utime is field 14 overall, index 11 here
	if len(f) <= 12 {
		return 0, 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return u / clkTck, s / clkTck
}

// rssBytes is the resident set size of pid's process tree.
func rssBytes(pid int) int64 {
	var total int64
	for _, p := range procTree(pid) {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "VmRSS:") {
				fs := strings.Fields(line)
				if len(fs) >= 2 {
					kb, _ := strconv.ParseInt(fs[1], 10, 64)
					total += kb * 1024
				}
				break
			}
		}
		f.Close()
	}
	return total
}

// rssSampler records the largest RSS of a process tree until stopped.
type rssSampler struct {
	stop chan struct{}
	done chan int64
}

func sampleRSS(pid int, every time.Duration) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan int64, 1)}
	go func() {
		maxRSS := rssBytes(pid)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				if r := rssBytes(pid); r > maxRSS {
					maxRSS = r
				}
				s.done <- maxRSS
				return
			case <-t.C:
				if r := rssBytes(pid); r > maxRSS {
					maxRSS = r
				}
			}
		}
	}()
	return s
}

func (s *rssSampler) Stop() int64 {
	close(s.stop)
	return <-s.done
}

// ---- redis-server ----

type redisServer struct {
	cmd  *exec.Cmd
	addr string
}

func startRedis(ctx context.Context, dir string) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server not found (scripts/ensure-deps.sh installs it)")
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--maxclients", "10000", "--protected-mode", "yes"}
	c, err := startChild(bin, args, dir, filepath.Join(dir, "redis.log"))
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := waitPort(ctx, addr, c, 10*time.Second); err != nil {
		return nil, fmt.Errorf("redis-server: %w\n%s", err, tailFile(filepath.Join(dir, "redis.log"), 10))
	}
	return &redisServer{cmd: c, addr: addr}, nil
}

// ---- Caddy ----

type caddyServer struct {
	cmd     *exec.Cmd
	port    int
	tlsPort int // 0 without TLS
	admin   string
	logPath string
}

// startCaddy writes a Caddyfile with the given site body and runs it.
// site is the body of the `:<port>` block; with tlsf it also serves the
// same body on a TLS port with that certificate, over HTTP/1.1, HTTP/2
// and HTTP/3; with sockets, its servers list the realtime listener
// wrapper before tls.
func startCaddy(ctx context.Context, bin, dir, name, site string, tlsf *tlsFiles, sockets bool) (*caddyServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	admin, err := freePort()
	if err != nil {
		return nil, err
	}
	tlsSite := ""
	tlsPort := 0
	if tlsf != nil {
		if tlsPort, err = freePort(); err != nil {
			return nil, err
		}
		host, tlsOpts := "127.0.0.1", ""
		if curves := os.Getenv("BENCH_TLS_CURVES"); curves != "" {
			// the key exchanges Caddy accepts (default: Go's, with the
			// X25519MLKEM768 hybrid first). Caddy applies a site's TLS
			// options to the connections whose SNI names it, and
			// clients send no SNI for an IP address: the site is a
			// catch-all, so that its options apply to every connection
			host = ""
			tlsOpts = " {\n\t\tcurves " + curves + "\n\t}"
		}
		tlsSite = fmt.Sprintf("\nhttps://%s:%d {\n\tbind 127.0.0.1\n\ttls %s %s%s\n%s\n}\n", host, tlsPort, tlsf.cert, tlsf.key, tlsOpts, site)
	}
	wrappers := ""
	if sockets {
		// the realtime listener wrapper beneath TLS: the hub's fan-out
		// writes TLS connections over HTTP/1.1 itself
		wrappers = "\n\t\tlistener_wrappers {\n\t\t\trealtime\n\t\t\ttls\n\t\t}"
	}
	cf := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	auto_https off
	persist_config off
	default_bind 127.0.0.1
	servers {
		protocols h1 h2 h2c h3%s
	}
	log {
		level ERROR
	}
}

:%d {
	bind 127.0.0.1
%s
}
%s`, admin, wrappers, port, site, tlsSite)
	cfPath := filepath.Join(dir, name+".Caddyfile")
	if err := os.WriteFile(cfPath, []byte(cf), 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, name+".log")
	c, err := startChild(bin, []string{"run", "--config", cfPath, "--adapter", "caddyfile"}, dir, logPath)
	if err != nil {
		return nil, err
	}
	s := &caddyServer{cmd: c, port: port, tlsPort: tlsPort, admin: fmt.Sprintf("127.0.0.1:%d", admin), logPath: logPath}
	for _, p := range []int{port, tlsPort} {
		if p == 0 {
			continue
		}
		if err := waitPort(ctx, fmt.Sprintf("127.0.0.1:%d", p), c, 20*time.Second); err != nil {
			stopProc(c, 2*time.Second)
			return nil, fmt.Errorf("caddy %s: %w\n%s", name, err, tailFile(logPath, 15))
		}
	}
	return s, nil
}

func (s *caddyServer) stop() { stopProc(s.cmd, 5*time.Second) }

// childEnv gives Caddy a HOME/XDG dir of its own under the temp dir so the
// bench never touches the user's Caddy data.
func childEnv(dir string) []string {
	env := os.Environ()
	return append(env, "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
}

// systemBusy is the CPU time (s) all processes on the machine have used,
// from /proc/stat, so a run can tell how much went to processes that are
// not part of the benchmark.
func systemBusy() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy float64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait, guest*
			continue
		}
		x, _ := strconv.ParseFloat(v, 64)
		busy += x
	}
	return busy / clkTck
}

// benchCPU is the CPU time of this process and all its children (servers,
// redis-server, nginx): everything the benchmark itself runs.
func benchCPU() float64 { return cpuSeconds(os.Getpid()) + reapedChildrenCPU() }

// reapedChildrenCPU is the CPU time of this process's children that have
// exited and been waited for (cutime + cstime).
func reapedChildrenCPU() float64 {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) <= 14 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[13], 64)
	s, _ := strconv.ParseFloat(f[14], 64)
	return (u + s) / clkTck
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
