package testredis

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Cluster is a Redis Cluster of masters without replicas, each a
// redis-server child process on a free loopback port.
type Cluster struct {
	Servers []*Server
}

// URLs are the redis:// URLs of the cluster's nodes.
func (c *Cluster) URLs() []string {
	var out []string
	for _, s := range c.Servers {
		out = append(out, s.URL())
	}
	return out
}

// Addrs are the host:port addresses of the cluster's nodes.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, s := range c.Servers {
		out = append(out, s.Addr())
	}
	return out
}

// StartCluster starts masters redis-servers in cluster mode, joins them
// with `redis-cli --cluster create` and waits (bounded) until every node
// reports cluster_state:ok.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	return StartClusterWithReplicas(t, masters, 0)
}

// StartClusterWithReplicas is StartCluster with replicas per master (the
// servers after the masters), each in sync before it returns.
func StartClusterWithReplicas(t testing.TB, masters, replicas int) *Cluster {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatal("redis-cli not found: run `make test`, which installs it")
	}
	c := &Cluster{}
	for i := 0; i < masters*(1+replicas); i++ {
		conf := filepath.Join(t.TempDir(), "nodes.conf")
		c.Servers = append(c.Servers, Start(t, "--cluster-enabled", "yes", "--cluster-config-file", conf, "--cluster-node-timeout", "2000"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", fmt.Sprint(replicas), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range c.Servers {
		for {
			v, err := s.Do("CLUSTER", "INFO")
			if err == nil && strings.Contains(fmt.Sprint(v), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster not ok on %s: %v %v", s.Addr(), v, err)
			}
			time.Sleep(20 * time.Millisecond) // polling the cluster state: no event to await
		}
	}
	for _, s := range c.Servers {
		for {
			v, err := s.Do("INFO", "replication")
			info := fmt.Sprint(v)
			if err == nil && (strings.Contains(info, "role:master") || strings.Contains(info, "master_link_status:up")) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %s not in sync: %v %v", s.Addr(), info, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return c
}

// Role is "master" or "slave", as the server says now.
func (s *Server) Role() string {
	v, err := s.Do("INFO", "replication")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(fmt.Sprint(v), "\n") {
		if r, ok := strings.CutPrefix(strings.TrimSpace(line), "role:"); ok {
			return r
		}
	}
	return ""
}
