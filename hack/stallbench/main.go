// Command stallbench measures what slow clients cost the proxy: it runs the proxy binary (its
// own process, default HTTP bounds, the embedded store) in front of a small upstream, holds
// many request bodies stalled part-way, and reports the proxy's RSS and goroutines and the
// latency of an honest caller meanwhile, against the same caller with no stalled bodies in the
// same run. -other measures another proxy build too (an A/B: say, the build before a change).
// Loopback only; every wait is bounded.
//
//	go run ./hack/stallbench [-stalled 1000] [-honest 200] [-other BINARY]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	stalled := flag.Int("stalled", 1000, "stalled bodies held open at once")
	honest := flag.Int("honest", 200, "honest calls, one at a time, per phase")
	hold := flag.Duration("hold", 3*time.Second, "how long the stalled bodies are held before the honest calls")
	other := flag.String("other", "", "also measure this proxy binary (another build)")
	flag.Parse()
	if err := run(*stalled, *honest, *hold, *other); err != nil {
		fmt.Fprintln(os.Stderr, "stallbench:", err)
		os.Exit(1)
	}
}

// scenario is one way of stalling bodies.
type scenario struct {
	name  string
	sent  int  // body bytes each stalled request sends before it stalls (of a 1 MiB body)
	users bool // each stalled request claims its own identity (a spoofing client)
}

var scenarios = []scenario{
	{name: "1 byte sent, one anonymous client", sent: 1},
	{name: "1000000 bytes sent, one anonymous client", sent: 1_000_000},
	{name: "1000000 bytes sent, a new identity each", sent: 1_000_000, users: true},
}

func run(stalled, honest int, hold time.Duration, other string) error {
	dir, err := os.MkdirTemp("", "stallbench")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	up, err := upstream()
	if err != nil {
		return err
	}
	bins := map[string]string{"this build": filepath.Join(dir, "proxy")}
	if out, err := exec.Command("go", "build", "-o", bins["this build"], "./proxy").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./proxy: %w\n%s", err, out)
	}
	names := []string{"this build"}
	if other != "" {
		bins["other"] = other
		names = append(names, "other")
	}
	fmt.Printf("%d stalled bodies (Content-Length 1048576), held %v; %d honest calls one at a time\n\n", stalled, hold, honest)
	fmt.Println("| build | scenario | RSS before → with stalls | goroutines | stalled requests refused | honest p50 / p99 before | with stalls | honest failures |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, name := range names {
		for _, sc := range scenarios {
			row, err := measure(dir, bins[name], up, sc, stalled, honest, hold)
			if err != nil {
				return fmt.Errorf("%s, %s: %w", name, sc.name, err)
			}
			fmt.Printf("| %s | %s | %s |\n", name, sc.name, row)
		}
	}
	return nil
}

// upstream answers every POST with a small JSON-RPC result.
func upstream() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`))
	})}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), nil
}

func measure(dir, bin, up string, sc scenario, stalled, honest int, hold time.Duration) (string, error) {
	addr, ops, pid, stop, err := startProxy(dir, bin, up)
	if err != nil {
		return "", err
	}
	defer stop()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	before, failsBefore := honestCalls(client, addr, honest)
	rssBefore, _ := rss(pid)

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		conns   []net.Conn
		refused int
	)
	body := strings.Repeat(" ", sc.sent)
	for i := range stalled {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			_ = c.SetDeadline(time.Now().Add(hold + 30*time.Second))
			user := "mallory"
			if sc.users {
				user = "mallory-" + strconv.Itoa(i)
			}
			hdr := "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n"
			if sc.users {
				hdr += "X-User: " + user + "\r\n"
			}
			if _, err := io.WriteString(c, hdr+"\r\n"+body); err != nil {
				mu.Lock()
				refused++ // the proxy answered and closed while the body was being sent
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	time.Sleep(hold)
	rssStalled, _ := rss(pid)
	goroutines, _ := metric("http://"+ops+"/metrics", "go_goroutines")
	during, failsDuring := honestCalls(client, addr, honest)
	// A stalled request the proxy refused was answered: count the connections that hold an
	// answer (or were closed).
	mu.Lock()
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if n, err := c.Read(make([]byte, 1)); n > 0 || errors.Is(err, io.EOF) {
			refused++
		}
		_ = c.Close()
	}
	mu.Unlock()
	return fmt.Sprintf("%.0f → %.0f MB | %.0f | %d of %d | %s | %s | %d",
		float64(rssBefore)/1e6, float64(rssStalled)/1e6, goroutines, min(refused, stalled), stalled,
		latency(before), latency(during), failsBefore+failsDuring), nil
}

// honestCalls makes n tools/call requests one at a time as user "honest" and returns their
// latencies and how many did not get 200.
func honestCalls(client *http.Client, addr string, n int) ([]time.Duration, int) {
	var lat []time.Duration
	fails := 0
	const call = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}`
	for range n {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/mcp", strings.NewReader(call))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-User", "honest")
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			fails++
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			fails++
			continue
		}
		lat = append(lat, time.Since(start))
	}
	return lat, fails
}

func latency(d []time.Duration) string {
	if len(d) == 0 {
		return "-"
	}
	slices.Sort(d)
	p := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return fmt.Sprintf("%.2f / %.2f ms", float64(p(0.5).Microseconds())/1000, float64(p(0.99).Microseconds())/1000)
}

const config = `apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: bench, name: stall}
upstream: {url: "http://%s/mcp"}
auth: {header: {name: X-User}}
sessionStorage: {provider: memory}
rateLimiting:
  shared: {maxTokens: 1000000, refillPeriod: 1s}
`

func startProxy(dir, bin, up string) (addr, ops string, pid int, stop func(), err error) {
	cfg := filepath.Join(dir, "proxy.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, config, up), 0o600); err != nil {
		return "", "", 0, nil, err
	}
	p1, p2, err := freePorts()
	if err != nil {
		return "", "", 0, nil, err
	}
	addr, ops = fmt.Sprintf("127.0.0.1:%d", p1), fmt.Sprintf("127.0.0.1:%d", p2)
	cmd := exec.Command(bin, "--config", cfg, "--listen", addr, "--metrics-listen", ops, "--log-level", "error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", "", 0, nil, err
	}
	stop = func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			return "", "", 0, nil, errors.New("the proxy did not listen within 10s")
		}
	}
	return addr, ops, cmd.Process.Pid, stop, nil
}

func freePorts() (int, int, error) {
	var ports [2]int
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, err
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		defer func() { _ = ln.Close() }()
	}
	return ports[0], ports[1], nil
}

// rss is a process's resident set size in bytes, from /proc.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// metric reads one unlabelled sample from a metrics page.
func metric(url, name string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s", name)
}
