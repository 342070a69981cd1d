// Command outagebench drives 64 clients through the real proxy binary while its redis-server
// is stopped (SIGSTOP: the worst kind of outage, where every command waits for its timeout
// rather than failing at once), under each failure policy in turn, and reports what was
// admitted before, during and after the outage against the shared bucket's envelope, and the
// latency clients saw while Redis was gone. Loopback only; every loop ends by itself.
//
//	go run ./hack/outagebench [-before 4s] [-outage 8s] [-after 4s] [-concurrency 64]
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tollgate-dev/tollgate/hack/internal/loopback"
)

// The shared bucket every policy is measured against: 50 calls, refilled over 1 s.
const (
	capacity = 50
	period   = time.Second
)

func main() {
	before := flag.Duration("before", 4*time.Second, "load before the outage")
	outage := flag.Duration("outage", 8*time.Second, "how long redis-server is stopped")
	after := flag.Duration("after", 4*time.Second, "load after redis-server resumes")
	conc := flag.Int("concurrency", 64, "concurrent clients")
	flag.Parse()
	if err := run(*before, *outage, *after, *conc); err != nil {
		fmt.Fprintln(os.Stderr, "outagebench:", err)
		os.Exit(1)
	}
}

// phase is what clients saw in one phase of a run.
type phase struct {
	admitted, rejected, refused, errs int64 // 200, 429, 503, transport errors
	lats                              []time.Duration
	late                              int // requests over 100 ms sent 1 s or more into the phase
	length                            time.Duration
}

func run(before, outage, after time.Duration, conc int) error {
	dir, err := os.MkdirTemp("", "outagebench")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	var executed atomic.Int64
	upstream, err := loopback.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		executed.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}`))
	}))
	if err != nil {
		return err
	}
	bin := filepath.Join(dir, "proxy")
	if out, err := exec.Command("go", "build", "-o", bin, "./proxy").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./proxy: %w\n%s", err, out)
	}
	fmt.Printf("## Outage: %d clients, shared bucket %d per %s; %s of load, redis-server stopped (SIGSTOP) for %s, %s after\n\n",
		conc, capacity, period, before, outage, after)
	fmt.Println("| policy | admitted before | during | after | envelope of the whole run | excess over it | 429 | 503 | upstream executed | p50 / p99 / max during the outage | requests over 100 ms during | … of them sent after its first second |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, policy := range []string{"Allow", "Deny", "Local"} {
		redisAddr, redisPID, stopRedis, err := loopback.StartRedis(dir)
		if err != nil {
			return err
		}
		addr, stopProxy, err := startProxy(dir, bin, "http://"+upstream+"/mcp", redisAddr, policy)
		if err != nil {
			stopRedis()
			return err
		}
		client := &http.Client{Transport: &http.Transport{MaxIdleConns: 4 * conc, MaxIdleConnsPerHost: 4 * conc}, Timeout: 10 * time.Second}
		executed.Store(0)
		var phases [3]phase
		var cur atomic.Int32
		var mu sync.Mutex
		var outageStart time.Time
		deadline := time.Now().Add(before + outage + after)
		var wg sync.WaitGroup
		for w := range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					t0 := time.Now()
					status, err := post(client, "http://"+addr+"/mcp", "user-"+strconv.Itoa(w))
					lat := time.Since(t0)
					mu.Lock()
					p := &phases[cur.Load()]
					switch {
					case err != nil:
						p.errs++
					case status == http.StatusOK:
						p.admitted++
					case status == http.StatusTooManyRequests:
						p.rejected++
					case status == http.StatusServiceUnavailable:
						p.refused++
					default:
						p.errs++
					}
					p.lats = append(p.lats, lat)
					if cur.Load() == 1 && lat > 100*time.Millisecond && t0.Sub(outageStart) >= time.Second {
						p.late++
					}
					mu.Unlock()
				}
			}()
		}
		time.Sleep(before)
		if err := syscall.Kill(redisPID, syscall.SIGSTOP); err != nil {
			return fmt.Errorf("SIGSTOP redis-server: %w", err)
		}
		mu.Lock()
		outageStart = time.Now()
		mu.Unlock()
		cur.Store(1)
		time.Sleep(outage)
		if err := syscall.Kill(redisPID, syscall.SIGCONT); err != nil {
			return fmt.Errorf("SIGCONT redis-server: %w", err)
		}
		cur.Store(2)
		wg.Wait()
		stopProxy()
		stopRedis()
		client.CloseIdleConnections()
		phases[0].length, phases[1].length, phases[2].length = before, outage, after

		total := before + outage + after
		envelope := capacity + int64(float64(capacity)*total.Seconds()/period.Seconds())
		admitted := phases[0].admitted + phases[1].admitted + phases[2].admitted
		var rejected, refused int64
		for _, p := range phases {
			rejected += p.rejected
			refused += p.refused
			if p.errs > 0 {
				return fmt.Errorf("%s: %d requests failed", policy, p.errs)
			}
		}
		during := phases[1].lats
		slices.Sort(during)
		slow := 0
		for _, l := range during {
			if l > 100*time.Millisecond {
				slow++
			}
		}
		pct := func(q float64) time.Duration {
			if len(during) == 0 {
				return 0
			}
			return during[min(len(during)-1, int(float64(len(during))*q))].Round(10 * time.Microsecond)
		}
		fmt.Printf("| %s | %d | %d | %d | %d | %+d | %d | %d | %d | %s / %s / %s | %d of %d | %d |\n",
			policy, phases[0].admitted, phases[1].admitted, phases[2].admitted, envelope, admitted-envelope,
			rejected, refused, executed.Load(), pct(0.5), pct(0.99), pct(1), slow, len(during), phases[1].late)
	}
	fmt.Printf("\nThe Local bound (docs/proxy.md): the envelope plus C + r·D = %d + %d over the outage, one replica.\n",
		capacity, int64(float64(capacity)*outage.Seconds()/period.Seconds()))
	return nil
}

// post calls the tool as user and returns the status.
func post(client *http.Client, url, user string) (int, error) {
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}`
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("X-User", user)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// startProxy runs the proxy binary with the shared bucket and the failure policy.
func startProxy(dir, bin, upstream, redisAddr, policy string) (string, func(), error) {
	port, err := loopback.FreePort()
	if err != nil {
		return "", nil, err
	}
	ops, err := loopback.FreePort()
	if err != nil {
		return "", nil, err
	}
	cfg := fmt.Sprintf(`apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: bench, name: outage}
upstream: {url: %q}
auth: {header: {name: X-User}}
sessionStorage: {provider: redis, address: %q}
rateLimiting:
  failurePolicy: %s
  shared: {maxTokens: %d, refillPeriod: %s}
`, upstream, redisAddr, policy, capacity, period)
	path := filepath.Join(dir, "proxy-"+policy+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return "", nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "--config", path, "--listen", addr, "--metrics-listen", "127.0.0.1:"+strconv.Itoa(ops), "--log-level", "error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }
	if err := loopback.WaitTCP(addr); err != nil {
		stop()
		return "", nil, err
	}
	return addr, stop, nil
}
