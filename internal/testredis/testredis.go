// Package testredis starts real redis-server processes for tests, each on
// a free loopback port, and stops them when the test ends.
//
// It never fakes Redis: the project's test command installs redis-server
// when it is missing, so a missing binary is a test failure, not a skip,
// unless REALTIME_ALLOW_NO_REDIS is set (for a quick run on a laptop).
package testredis

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
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server child process.
type Server struct {
	t    testing.TB
	Port int
	Dir  string
	args []string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// URL is the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Client returns a new client for the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Start starts a redis-server on a free port; extra arguments are passed
// to it (for example "--cluster-enabled", "yes").
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("REALTIME_ALLOW_NO_REDIS") != "" {
			t.Skip("redis-server not installed (REALTIME_ALLOW_NO_REDIS set)")
		}
		t.Fatalf("redis-server not found: run `make test`, which installs it, or apt-get install redis-server")
	}
	s := &Server{t: t, Dir: t.TempDir()}
	// A port handed out free may be taken by another process (another
	// test binary runs beside this one) before redis-server binds it:
	// then try again with new ports.
	for attempt := 0; ; attempt++ {
		s.Port = FreePort(t)
		s.args = append([]string{}, extra...)
		if clusterMode(extra) {
			// the bus port is the port + 10000 unless set, which is past
			// 65535 for a port above 55535
			s.args = append(s.args, "--cluster-port", strconv.Itoa(FreePort(t)))
		}
		err = s.start(bin)
		if err == nil {
			break
		}
		if !errors.Is(err, errPortInUse) || attempt == 2 {
			t.Fatal(err)
		}
	}
	routeLogs(t, s.Port)
	t.Cleanup(s.Kill)
	return s
}

func clusterMode(args []string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--cluster-enabled" && args[i+1] == "yes" {
			return true
		}
	}
	return false
}

var errPortInUse = errors.New("a port was already in use")

func (s *Server) start(bin string) error {
	args := []string{
		"--port", strconv.Itoa(s.Port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.Dir,
		"--daemonize", "no",
		"--loglevel", "warning",
		// in a file, not in the test's output (benchmark results among them)
		"--logfile", filepath.Join(s.Dir, "redis.log"),
	}
	args = append(args, s.args...)
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr // what it says before it opens its log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	if err := waitReady(s.Addr(), 10*time.Second, exited); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
		if bytes.Contains(log, []byte("Address already in use")) {
			err = errPortInUse
		}
		return fmt.Errorf("%w; redis-server log:\n%s", err, log)
	}
	return nil
}

// Kill stops the server at once (SIGKILL), as a crash would.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Kill()
	// wait until the port is free so Restart can bind it again
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", s.Addr(), 100*time.Millisecond)
		if err != nil {
			return
		}
		_ = c.Close()
		time.Sleep(20 * time.Millisecond)
	}
}

// Restart starts the server again on the same port, empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.start(bin); err != nil {
		s.t.Fatal(err)
	}
}

// Do runs one command on a fresh connection, for tests that want to act
// as a backend would (redis-cli style).
func (s *Server) Do(args ...any) (any, error) {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Do(ctx, args...).Result()
}

// waitReady waits until the server at addr answers PING, or its process
// has exited.
func waitReady(addr string, within time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("redis-server on %s exited during startup", addr)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("PING\r\n"))
			line, err := bufio.NewReader(c).ReadString('\n')
			_ = c.Close()
			if err == nil && strings.HasPrefix(line, "+PONG") {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on %s not ready within %v", addr, within)
}

var (
	portsMu sync.Mutex
	given   = map[int]bool{}
)

// FreePort returns a loopback TCP port that was free a moment ago and
// that this test process has not handed out before, so that parallel
// tests (and the Caddy test harness, which takes its ports here too)
// never get the same port.
func FreePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if !given[port] {
			given[port] = true
			return port
		}
	}
	t.Fatal("finding a free port: no new port in 100 tries")
	return 0
}
