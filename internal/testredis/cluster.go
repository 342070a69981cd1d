package testredis

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

// Cluster is a Redis Cluster of masters only (no replicas), started for a test on free
// loopback ports; every node is killed when the test ends.
type Cluster struct {
	// Addrs are the masters' host:port, in creation order.
	Addrs []string
	// Startup is the time from starting the first process to cluster_state:ok on every node.
	Startup time.Duration
}

// StartCluster starts masters (at least 3, which redis-cli requires) redis-server processes
// with cluster mode on, joins them with `redis-cli --cluster create … --cluster-replicas 0`
// and waits until every node reports cluster_state:ok. extraArgs go to every redis-server.
// A missing redis-server or redis-cli stops the test through testenv.Missing.
func StartCluster(t testing.TB, masters int, extraArgs ...string) *Cluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("StartCluster: %d masters: redis-cli --cluster create needs at least 3", masters)
	}
	bin := redisServer(t)
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		testenv.Missing(t, "redis-cli", "apt-get install -y redis-tools (it comes with redis-server)")
	}
	start := time.Now()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		var c *Cluster
		if c, lastErr = startCluster(t, bin, cli, masters, extraArgs); lastErr == nil {
			c.Startup = time.Since(start)
			return c
		}
		t.Logf("cluster attempt %d: %v", attempt+1, lastErr)
	}
	t.Fatalf("redis cluster did not start: %v", lastErr)
	return nil
}

func startCluster(t testing.TB, bin, cli string, masters int, extraArgs []string) (*Cluster, error) {
	// Two free ports per node: the client port and the cluster bus port. The bus port is
	// given explicitly (--cluster-port) because the default, port+10000, may be taken or
	// above 65535.
	ports := make([]int, 2*masters)
	seen := map[int]bool{}
	for i := range ports {
		for {
			p, err := freePort()
			if err != nil {
				return nil, fmt.Errorf("finding a free port: %w", err)
			}
			if !seen[p] {
				seen[p] = true
				ports[i] = p
				break
			}
		}
	}
	c := &Cluster{}
	var procs []*exec.Cmd
	kill := func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}
	for i := range masters {
		port, bus := ports[2*i], ports[2*i+1]
		dir := t.TempDir()
		args := append(baseArgs(port, dir),
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-port", strconv.Itoa(bus),
		)
		cmd := exec.Command(bin, append(args, extraArgs...)...)
		if err := cmd.Start(); err != nil {
			kill()
			return nil, fmt.Errorf("starting redis-server: %w", err)
		}
		procs = append(procs, cmd)
		c.Addrs = append(c.Addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	}
	for _, addr := range c.Addrs {
		if err := waitReady(addr, 5*time.Second); err != nil {
			kill()
			return nil, err
		}
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		kill()
		return nil, fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	for _, addr := range c.Addrs {
		if err := waitClusterOK(addr, 10*time.Second); err != nil {
			kill()
			return nil, err
		}
	}
	t.Cleanup(kill)
	return c, nil
}

// waitClusterOK waits until the node at addr reports cluster_state:ok.
func waitClusterOK(addr string, timeout time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer func() { _ = c.Close() }()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		info, err := c.ClusterInfo(ctx).Result()
		cancel()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("%s: no cluster_state:ok within %s: %w", addr, timeout, err)
			}
			return fmt.Errorf("%s: no cluster_state:ok within %s:\n%s", addr, timeout, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SlotOwners maps every slot to its master's host:port (CLUSTER SHARDS).
func (c *Cluster) SlotOwners(t testing.TB) map[int64]string {
	t.Helper()
	nc := redis.NewClient(&redis.Options{Addr: c.Addrs[0], MaxRetries: -1})
	defer func() { _ = nc.Close() }()
	shards, err := nc.ClusterShards(context.Background()).Result()
	if err != nil {
		t.Fatalf("CLUSTER SHARDS: %v", err)
	}
	owners := map[int64]string{}
	for _, sh := range shards {
		for _, n := range sh.Nodes {
			if n.Role != "master" {
				continue
			}
			addr := net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
			for _, r := range sh.Slots {
				for slot := r.Start; slot <= r.End; slot++ {
					owners[slot] = addr
				}
			}
		}
	}
	return owners
}

// Client returns a Cluster client that never retries (as the limiter requires), closed when
// the test ends.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, MaxRetries: -1})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// NodeClient returns a plain client for one node (for SCAN, CLUSTER KEYSLOT and the like),
// closed when the test ends.
func (c *Cluster) NodeClient(t testing.TB, addr string) *redis.Client {
	nc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { _ = nc.Close() })
	return nc
}
