package testredis

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel is a master, one replica and one Sentinel watching them (with
// a quorum of one and a short down-after, so that a failover takes two
// seconds or so).
type Sentinel struct {
	Master, Replica *Server
	Sentinel        *Server
	Name            string // the master's name at the Sentinel
}

// StartSentinel starts the three servers and returns once the replica is
// in sync and the Sentinel knows both.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	s := &Sentinel{Name: "mymaster"}
	s.Master = Start(t)
	s.Replica = Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(s.Master.Port))
	s.Sentinel = startSentinel(t, s.Master.Port, s.Name)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	waitFor(ctx, t, "the replica to sync", func() bool {
		info, err := s.Replica.Do("INFO", "replication")
		return err == nil && strings.Contains(fmt.Sprint(info), "master_link_status:up")
	})
	waitFor(ctx, t, "the sentinel to find the replica", func() bool {
		r, err := s.Sentinel.Do("SENTINEL", "REPLICAS", s.Name)
		return err == nil && strings.Contains(fmt.Sprint(r), strconv.Itoa(s.Replica.Port))
	})
	return s
}

// URL is the `redis` URL of the Sentinel deployment.
func (s *Sentinel) URL() string {
	return fmt.Sprintf("redis://%s?master_name=%s", s.Sentinel.Addr(), s.Name)
}

// MasterPort is the port of the master the Sentinel names now.
func (s *Sentinel) MasterPort() int {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinel.Addr()})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addr, err := c.GetMasterAddrByName(ctx, s.Name).Result()
	if err != nil || len(addr) != 2 {
		return 0
	}
	p, _ := strconv.Atoi(addr[1])
	return p
}

// Failover kills the master, as a crash would, and returns once the
// Sentinel has promoted the replica.
func (s *Sentinel) Failover(t testing.TB) {
	t.Helper()
	s.Master.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitFor(ctx, t, "the sentinel to promote the replica", func() bool {
		return s.MasterPort() == s.Replica.Port
	})
	waitFor(ctx, t, "the replica to take writes", func() bool {
		info, err := s.Replica.Do("INFO", "replication")
		return err == nil && strings.Contains(fmt.Sprint(info), "role:master")
	})
}

func startSentinel(t testing.TB, masterPort int, name string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found: %v", err)
	}
	s := &Server{t: t, Dir: t.TempDir(), Port: FreePort(t)}
	conf := filepath.Join(s.Dir, "sentinel.conf")
	body := fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
logfile %s
sentinel monitor %s 127.0.0.1 %d 1
sentinel down-after-milliseconds %s 1000
sentinel failover-timeout %s 5000
`, s.Port, s.Dir, filepath.Join(s.Dir, "sentinel.log"), name, masterPort, name, name)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, conf, "--sentinel")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting redis-server --sentinel: %v", err)
	}
	s.cmd = cmd
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(s.Kill)
	routeLogs(t, s.Port)
	if err := waitReady(s.Addr(), 10*time.Second, exited); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.Dir, "sentinel.log"))
		t.Fatalf("%v; sentinel log:\n%s", err, log)
	}
	return s
}

// waitFor polls ok every 50ms until it holds or ctx ends.
func waitFor(ctx context.Context, t testing.TB, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
