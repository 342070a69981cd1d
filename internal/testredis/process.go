package testredis

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

// redisServer finds redis-server or stops the test through testenv.Missing.
func redisServer(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		testenv.Missing(t, "redis-server", "apt-get install -y redis-server, or run bash .ci/run")
	}
	return bin
}

// baseArgs are the arguments every test server gets: loopback only, persistence off.
func baseArgs(port int, dir string) []string {
	return []string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--protected-mode", "no", "--loglevel", "warning",
	}
}

// Restartable is a redis-server that a test can pause, stop and start again on the same
// port: an outage and a recovery, as a client sees them.
type Restartable struct {
	Addr string

	t    testing.TB
	bin  string
	args []string

	mu  sync.Mutex
	cmd *exec.Cmd // nil while stopped
}

// StartRestartable starts a redis-server like Start does, and returns a handle that can
// Pause, Resume, Stop and Restart it. It is killed when the test ends.
func StartRestartable(t testing.TB, extraArgs ...string) *Restartable {
	t.Helper()
	bin := redisServer(t)
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		r := &Restartable{
			Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			t:    t,
			bin:  bin,
			args: append(baseArgs(port, t.TempDir()), extraArgs...),
		}
		if lastErr = r.start(); lastErr == nil {
			t.Cleanup(r.Stop)
			return r
		}
	}
	t.Fatalf("redis-server did not start: %v", lastErr)
	return nil
}

func (r *Restartable) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return fmt.Errorf("redis-server on %s is already running", r.Addr)
	}
	cmd := exec.Command(r.bin, r.args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	if err := waitReady(r.Addr, 5*time.Second); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return err
	}
	r.cmd = cmd
	return nil
}

// Pause stops the process with SIGSTOP: the kernel still accepts connections on the port,
// but nothing answers, so every command runs into its read timeout (a hung Redis).
func (r *Restartable) Pause() { r.signal(syscall.SIGSTOP) }

// Resume continues a paused process with SIGCONT.
func (r *Restartable) Resume() { r.signal(syscall.SIGCONT) }

func (r *Restartable) signal(sig syscall.Signal) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		r.t.Fatalf("redis-server on %s is not running", r.Addr)
	}
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatalf("signalling redis-server: %v", err)
	}
}

// Stop kills the process (paused or not) and waits for it; the port then refuses
// connections. Stopping a stopped server does nothing.
func (r *Restartable) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// Restart starts a new, empty redis-server on the same port after Stop.
func (r *Restartable) Restart() {
	r.t.Helper()
	if err := r.start(); err != nil {
		r.t.Fatalf("restarting redis-server on %s: %v", r.Addr, err)
	}
}

// waitReadyClient waits until c answers PING.
func waitReadyClient(c *redis.Client, what string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PONG from %s within %s: %w", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tlsClient is a client for a TLS test server, used while it starts.
func tlsClient(addr string, cfg *tls.Config) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond, TLSConfig: cfg})
}
