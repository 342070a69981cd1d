package testupstream

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

const (
	tsStartTimeout = 20 * time.Second // node loads the SDK; the machine is shared
	tsStopTimeout  = 5 * time.Second
	tsHTTPTimeout  = 10 * time.Second
)

// StartTS starts the official TypeScript SDK upstream (ts/server.mjs: @modelcontextprotocol/sdk
// on Express 5) with stateful sessions. Streamable HTTP at /mcp; the legacy HTTP+SSE transport
// at GET /sse, whose endpoint event announces "/messages?sessionId=<id>". It needs node and
// ts/node_modules (npm ci); without them the test fails under CI=true and skips elsewhere.
// The node process is killed when the test ends, and exits by itself if the test binary dies.
func StartTS(t testing.TB) *Upstream {
	t.Helper()
	return startTS(t, false)
}

// StartTSStateless is StartTS with the README's stateless Streamable HTTP server: a new
// server and transport per POST, no Mcp-Session-Id, 405 for GET and DELETE on /mcp.
func StartTSStateless(t testing.TB) *Upstream {
	t.Helper()
	return startTS(t, true)
}

func startTS(t testing.TB, stateless bool) *Upstream {
	t.Helper()
	node, dir := tsPrerequisites(t)
	args := []string{"server.mjs"}
	if stateless {
		args = append(args, "--stateless")
	}
	cmd := exec.Command(node, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer // read only after Wait
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe() // node exits when this closes, also when the test binary dies
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting node: %v", err)
	}
	stop := func() {
		_ = stdin.Close()
		exited := make(chan struct{})
		go func() {
			select {
			case <-exited:
			case <-time.After(tsStopTimeout):
				_ = cmd.Process.Kill()
			}
		}()
		_ = cmd.Wait()
		close(exited)
	}

	type line struct {
		s   string
		err error
	}
	first := make(chan line, 1)
	go func() {
		r := bufio.NewReader(stdout)
		s, err := r.ReadString('\n')
		first <- line{s, err}
		_, _ = io.Copy(io.Discard, r) // nothing else is printed, but never block node
	}()
	var addr string
	select {
	case l := <-first:
		addr, err = parseListening(l.s, l.err)
	case <-time.After(tsStartTimeout):
		err = fmt.Errorf("no port within %s", tsStartTimeout)
		_ = cmd.Process.Kill()
	}
	if err != nil {
		stop()
		t.Fatalf("the TypeScript SDK upstream did not start: %v\nnode stderr:\n%s", err, stderr.String())
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("the TypeScript SDK upstream's stderr:\n%s", stderr.String())
		}
	})

	base := "http://" + addr
	client := &http.Client{Timeout: tsHTTPTimeout}
	return &Upstream{
		URL: base,
		counts: func() (map[string]int, error) {
			resp, err := client.Get(base + "/__counts")
			if err != nil {
				return nil, err
			}
			defer func() { _ = resp.Body.Close() }()
			if resp.StatusCode != http.StatusOK {
				return nil, fmt.Errorf("GET /__counts: %s", resp.Status)
			}
			var got map[string]int
			if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&got); err != nil {
				return nil, fmt.Errorf("GET /__counts: %w", err)
			}
			return got, nil
		},
		reset: func() error {
			resp, err := client.Post(base+"/__reset", "application/json", nil)
			if err != nil {
				return err
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				return fmt.Errorf("POST /__reset: %s", resp.Status)
			}
			return nil
		},
	}
}

// tsPrerequisites finds node and the upstream's directory with its node_modules.
func tsPrerequisites(t testing.TB) (node, dir string) {
	t.Helper()
	const component = "node and the TypeScript SDK upstream"
	const howToGet = "apt-get install -y nodejs npm; cd internal/testupstream/ts && npm ci --ignore-scripts"
	node, err := exec.LookPath("node")
	if err != nil {
		testenv.Missing(t, component, howToGet)
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the testupstream package's source")
	}
	dir = filepath.Join(filepath.Dir(file), "ts")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@modelcontextprotocol", "sdk", "package.json")); err != nil {
		testenv.Missing(t, component, howToGet)
	}
	return node, dir
}

// parseListening reads "listening 127.0.0.1:PORT" and insists on loopback.
func parseListening(s string, readErr error) (string, error) {
	addr, ok := strings.CutPrefix(strings.TrimSpace(s), "listening ")
	if !ok {
		if readErr != nil {
			return "", fmt.Errorf("reading its first line: %w", readErr)
		}
		return "", fmt.Errorf("unexpected first line %q", s)
	}
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		return "", errors.New("it listens on " + addr + ", not on 127.0.0.1")
	}
	return addr, nil
}
