// Package loopback is what the benchmark harnesses in hack/ share to run their parts on
// 127.0.0.1: a free port, a handler served in process, waiting for a listener, and a
// throwaway redis-server.
package loopback

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// Serve serves h on a free loopback port and returns its address.
func Serve(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() { _ = http.Serve(ln, h) }()
	return ln.Addr().String(), nil
}

// FreePort returns a loopback port nothing listens on now.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// WaitTCP waits up to 10 s for addr to accept connections.
func WaitTCP(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not listen within 10s: %w", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// StartRedis runs a redis-server without persistence on a free loopback port, its files in
// dir, and returns its address, its pid and a stop that ends it (resuming it first, should a
// harness have stopped it with SIGSTOP).
func StartRedis(dir string) (addr string, pid int, stop func(), err error) {
	port, err := FreePort()
	if err != nil {
		return "", 0, nil, err
	}
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		return "", 0, nil, fmt.Errorf("redis-server: %w", err)
	}
	addr = "127.0.0.1:" + strconv.Itoa(port)
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	if err := WaitTCP(addr); err != nil {
		stop()
		return "", 0, nil, err
	}
	return addr, cmd.Process.Pid, stop, nil
}
