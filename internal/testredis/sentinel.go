package testredis

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// StartSentinel starts one Redis Sentinel (redis-server --sentinel) on a free loopback port
// that monitors the master at masterAddr under masterName, with a quorum of 1, and waits
// until it answers for the master. It stops when the test ends.
func StartSentinel(t testing.TB, masterAddr, masterName string) *Server {
	t.Helper()
	bin := redisServer(t)
	mhost, mport, err := net.SplitHostPort(masterAddr)
	if err != nil {
		t.Fatalf("StartSentinel: master address %q: %v", masterAddr, err)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		dir := t.TempDir()
		// Sentinel rewrites its config file, so it must be a writable file of its own.
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\nloglevel warning\n"+
			"sentinel monitor %s %s %s 1\nsentinel down-after-milliseconds %s 60000\n",
			port, dir, masterName, mhost, mport, masterName)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatalf("writing %s: %v", conf, err)
		}
		cmd := exec.Command(bin, conf, "--sentinel")
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting redis-server --sentinel: %v", err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = waitSentinel(addr, masterName, masterAddr, 5*time.Second); lastErr == nil {
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			})
			return &Server{Addr: addr}
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	t.Fatalf("redis sentinel did not start: %v", lastErr)
	return nil
}

func waitSentinel(addr, masterName, masterAddr string, timeout time.Duration) error {
	s := redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer func() { _ = s.Close() }()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		got, err := s.GetMasterAddrByName(ctx, masterName).Result()
		cancel()
		if err == nil && len(got) == 2 && net.JoinHostPort(got[0], got[1]) == masterAddr {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("sentinel %s: master %q not known within %s: %w", addr, masterName, timeout, err)
			}
			return fmt.Errorf("sentinel %s: master %q at %v, not %s, after %s", addr, masterName, got, masterAddr, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
