package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/hack/internal/loopback"
)

// The store shapes production runs (docs/proxy.md, "Redis"), real and on loopback: a Sentinel
// in front of the standalone redis-server, and a Redis Cluster of three masters. Every bucket
// of one MCP server lives in one slot ({<ns>:<name>} hash tag), so on the Cluster a decision
// is still one round trip, to one master.

// benchMaster is the Sentinel master set name.
const benchMaster = "bench"

// startSentinel starts a Sentinel monitoring the redis-server at master and waits until it
// names that master.
func startSentinel(dir, master string) (addr string, pid int, stop func(), err error) {
	host, port, err := net.SplitHostPort(master)
	if err != nil {
		return "", 0, nil, err
	}
	p, err := loopback.FreePort()
	if err != nil {
		return "", 0, nil, err
	}
	sdir := filepath.Join(dir, "sentinel")
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		return "", 0, nil, err
	}
	conf := filepath.Join(sdir, "sentinel.conf") // Sentinel rewrites it: a file of its own
	text := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\nloglevel warning\n"+
		"sentinel monitor %s %s %s 1\nsentinel down-after-milliseconds %s 60000\n", p, sdir, benchMaster, host, port, benchMaster)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return "", 0, nil, err
	}
	cmd := exec.Command("redis-server", conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		return "", 0, nil, fmt.Errorf("redis-server --sentinel: %w", err)
	}
	stop = func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	addr = "127.0.0.1:" + strconv.Itoa(p)
	c := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer func() { _ = c.Close() }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		got, err := c.GetMasterAddrByName(ctx, benchMaster).Result()
		cancel()
		if err == nil && len(got) == 2 && net.JoinHostPort(got[0], got[1]) == master {
			return addr, cmd.Process.Pid, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", 0, nil, fmt.Errorf("sentinel %s did not name master %s within 10s (it named %v): %w", addr, master, got, err)
		}
	}
}

// startCluster starts three redis-server masters in cluster mode, joins them with redis-cli
// --cluster create and waits for cluster_state:ok on each.
func startCluster(dir string) (addrs []string, pids []int, stop func(), err error) {
	var cmds []*exec.Cmd
	stop = func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
	for i := range 3 {
		port, err1 := loopback.FreePort()
		bus, err2 := loopback.FreePort()
		if err := errors.Join(err1, err2); err != nil {
			stop()
			return nil, nil, nil, err
		}
		ndir := filepath.Join(dir, "cluster-"+strconv.Itoa(i))
		if err := os.MkdirAll(ndir, 0o700); err != nil {
			stop()
			return nil, nil, nil, err
		}
		cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", ndir, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(ndir, "nodes.conf"),
			"--cluster-port", strconv.Itoa(bus)) // explicit: port+10000 may be taken
		if err := cmd.Start(); err != nil {
			stop()
			return nil, nil, nil, fmt.Errorf("redis-server: %w", err)
		}
		cmds = append(cmds, cmd)
		addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(port))
		pids = append(pids, cmd.Process.Pid)
	}
	for _, a := range addrs {
		if err := loopback.WaitTCP(a); err != nil {
			stop()
			return nil, nil, nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		stop()
		return nil, nil, nil, fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a, MaxRetries: -1})
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				_ = c.Close()
				stop()
				return nil, nil, nil, fmt.Errorf("%s: no cluster_state:ok within 10s: %w", a, err)
			}
		}
		_ = c.Close()
	}
	return addrs, pids, stop, nil
}
