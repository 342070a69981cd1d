// Command benchproxy measures the enforcement proxy against a direct connection to the
// upstream and against a bare, tuned reverse proxy, in the same run and at the same
// concurrency (these machines are noisy: only ratios within one run mean anything). The
// proxy runs as its own process (the real binary, real redis-server), so its RSS and
// goroutines can be read after 100k distinct users. Loopback only; every loop is bounded.
//
//	go run ./hack/benchproxy [-duration 5s] [-rounds 3] [-concurrency 64] [-users 100000] [-auth oidc|header] [-store standalone|all]
//
// With -auth oidc (the default) two more proxies identify callers by OIDC bearer JWTs from a
// local issuer (RS256, a token per user): one with the verified-token cache (the default),
// one with --token-cache=false, beside the trusted-header proxy. With -store all the
// trusted-header proxy also runs on a Sentinel and on a 3-master Redis Cluster.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/hack/internal/loopback"
	"github.com/tollgate-dev/tollgate/proxy/enforce"
)

func main() {
	duration := flag.Duration("duration", 5*time.Second, "load per target per round")
	rounds := flag.Int("rounds", 3, "rounds; targets are interleaved in each")
	conc := flag.Int("concurrency", 64, "concurrent clients")
	users := flag.Int("users", 100_000, "distinct users driven through the proxy before reading its RSS")
	profile = flag.String("cpuprofile", "", "write a CPU profile of the proxy under load to this file")
	profileTarget = flag.String("cpuprofile-target", "tollgate proxy", "the target whose proxy -cpuprofile profiles (e.g. \"tollgate, OIDC\")")
	otherArgs = flag.String("other-args", "", "flags for the other proxy (alone: this build with these flags, e.g. --redis-pipelining=false)")
	light = flag.Int("light", 200, "requests per second, one at a time, of a light-load phase that shows the latency a hop adds (0: none)")
	other = flag.String("other", "", "also measure this proxy binary (another build: an A/B comparison in one run)")
	storeMode = flag.String("store", "standalone", "standalone: one redis-server; all: also the header proxy on a Sentinel (in front of that redis-server) and on a 3-master Redis Cluster")
	authMode = flag.String("auth", "oidc", "header: the trusted-header proxy only; oidc: also OIDC-identity proxies, with and without the token cache")
	role := flag.String("role", "", "internal: serve the upstream or the bare proxy in a child process")
	upstreamAddr := flag.String("upstream", "", "internal: the upstream address for -role bare")
	flag.Parse()
	if *role != "" {
		if err := serveRole(*role, *upstreamAddr); err != nil {
			fmt.Fprintln(os.Stderr, "benchproxy:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*duration, *rounds, *conc, *users); err != nil {
		fmt.Fprintln(os.Stderr, "benchproxy:", err)
		os.Exit(1)
	}
}

func run(duration time.Duration, rounds, conc, users int) error {
	dir, err := os.MkdirTemp("", "benchproxy")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()

	// The upstream and the bare proxy run in processes of their own, so that the CPU each
	// part of the system spends per request can be read apart from the load generator's.
	upstream, upPID, stopUp, err := startRole("upstream", "")
	if err != nil {
		return err
	}
	defer stopUp()
	upURL, _ := url.Parse("http://" + upstream + "/mcp")
	bare, barePID, stopBare, err := startRole("bare", upstream)
	if err != nil {
		return err
	}
	defer stopBare()

	redisAddr, redisPID, stopRedis, err := loopback.StartRedis(dir)
	if err != nil {
		return err
	}
	defer stopRedis()

	bin := filepath.Join(dir, "proxy")
	if out, err := exec.Command("go", "build", "-o", bin, "./proxy").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./proxy: %w\n%s", err, out)
	}
	proxyAddr, opsAddr, proxyPID, stopProxy, err := startProxy(dir, bin, upURL.String(), standalone(redisAddr), headerAuth)
	if err != nil {
		return err
	}
	defer stopProxy()

	// Each target names the processes that serve it; the load generator is this process.
	targets := []target{
		{name: "direct", url: "http://" + upstream + "/mcp", pids: []int{upPID}},
		{name: "bare reverse proxy", url: "http://" + bare + "/mcp", pids: []int{barePID, upPID}},
		{name: "tollgate proxy", url: "http://" + proxyAddr + "/mcp", pids: []int{proxyPID, redisPID, upPID}},
		// A method never limited: the proxy's work without the limiter's round trip.
		{name: "tollgate, tools/list", url: "http://" + proxyAddr + "/mcp", pids: []int{proxyPID, redisPID, upPID}, tool: "-"},
		// Every call refused (429): what a flood of rejected calls costs.
		{name: "tollgate, all rejected", url: "http://" + proxyAddr + "/mcp", pids: []int{proxyPID, redisPID, upPID},
			tool: "exhausted", status: http.StatusTooManyRequests},
	}
	if *other != "" || *otherArgs != "" { // another build, or other flags: an A/B in one run
		otherBin := *other
		if otherBin == "" {
			otherBin = bin
		}
		addr, _, pid, stop, err := startProxy(dir, otherBin, upURL.String(), standalone(redisAddr), headerAuth, strings.Fields(*otherArgs)...)
		if err != nil {
			return err
		}
		defer stop()
		targets = append(targets, target{name: "other proxy", url: "http://" + addr + "/mcp", pids: []int{pid, redisPID, upPID}},
			// The same rejected flood through the other build or flags: --deny-cache=false
			// against the default shows what the deny cache saves.
			target{name: "other proxy, all rejected", url: "http://" + addr + "/mcp", pids: []int{pid, redisPID, upPID},
				tool: "exhausted", status: http.StatusTooManyRequests})
	}
	switch *authMode {
	case "header":
	case "oidc":
		// A local issuer (in this process: it is asked for its keys once per proxy) and a
		// token for each of the 1000 users the load cycles through.
		iss, err := startIssuer()
		if err != nil {
			return err
		}
		tokens, err := iss.tokens(1000)
		if err != nil {
			return err
		}
		oidcAuth := fmt.Sprintf("{oidc: {issuer: %q, audience: %q}}", iss.url, benchAudience)
		for _, p := range []struct {
			name  string
			flags []string
		}{{"tollgate, OIDC", nil}, {"tollgate, OIDC, no token cache", []string{"--token-cache=false"}}} {
			addr, ops, pid, stop, err := startProxy(dir, bin, upURL.String(), standalone(redisAddr), oidcAuth, p.flags...)
			if err != nil {
				return err
			}
			defer stop()
			targets = append(targets, target{name: p.name, url: "http://" + addr + "/mcp", pids: []int{pid, redisPID, upPID}, tokens: tokens, ops: ops})
		}
	default:
		return fmt.Errorf("-auth %q: want header or oidc", *authMode)
	}
	switch *storeMode {
	case "standalone":
	case "all":
		sentinel, sentinelPID, stopSentinel, err := startSentinel(dir, redisAddr)
		if err != nil {
			return err
		}
		defer stopSentinel()
		addr, ops, pid, stop, err := startProxy(dir, bin, upURL.String(),
			fmt.Sprintf("{provider: redis, addresses: [%q], masterName: %q}", sentinel, benchMaster), headerAuth)
		if err != nil {
			return err
		}
		defer stop()
		// The Sentinel is asked only where the master is (at start and on failover): its CPU
		// is read to show that.
		targets = append(targets, target{name: "tollgate, Sentinel", url: "http://" + addr + "/mcp", pids: []int{pid, redisPID, sentinelPID, upPID}, redis: 2, ops: ops})
		nodes, nodePIDs, stopCluster, err := startCluster(dir)
		if err != nil {
			return err
		}
		defer stopCluster()
		quoted := make([]string, len(nodes))
		for i, n := range nodes {
			quoted[i] = strconv.Quote(n)
		}
		addr, ops, pid, stop, err = startProxy(dir, bin, upURL.String(),
			fmt.Sprintf("{provider: redis, addresses: [%s]}", strings.Join(quoted, ", ")), headerAuth)
		if err != nil {
			return err
		}
		defer stop()
		targets = append(targets, target{name: "tollgate, Cluster", url: "http://" + addr + "/mcp",
			pids: append(append([]int{pid}, nodePIDs...), upPID), redis: len(nodePIDs), ops: ops})
	default:
		return fmt.Errorf("-store %q: want standalone or all", *storeMode)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 4 * conc, MaxIdleConnsPerHost: 4 * conc, DisableCompression: true}, Timeout: 10 * time.Second}
	if err := post(client, target{name: "exhausting", url: targets[2].url, tool: "exhausted"}, "anyone"); err != nil {
		return err // its one token taken: every later call of the tool is refused
	}
	for _, t := range targets { // warm up connections, the script, the JIT of everything
		if _, err := load(client, t, conc, time.Second, 1000); err != nil {
			return fmt.Errorf("warm-up %s: %w", t.name, err)
		}
	}
	goroutinesBefore, err := metric("http://"+opsAddr+"/metrics", "go_goroutines")
	if err != nil {
		return err
	}

	med, err := measure(client, targets, rounds, conc, duration, opsAddr)
	if err != nil {
		return err
	}
	fmt.Printf("## %d rounds × %s per target, %d concurrent clients, 4 buckets per decision\n\n", rounds, duration, conc)
	printLatency(targets, med)
	d, b, p := med["direct"], med["bare reverse proxy"], med["tollgate proxy"]
	fmt.Printf("\nthroughput: tollgate/direct %.2f, tollgate/bare %.2f, bare/direct %.2f\n", p.rps/d.rps, p.rps/b.rps, b.rps/d.rps)
	fmt.Printf("p99 overhead: vs direct %s, vs bare %s\n", (p.p99 - d.p99).Round(time.Microsecond), (p.p99 - b.p99).Round(time.Microsecond))

	// CPU is what the 2 cores share out, so CPU per request is the steadier measure: the
	// proxying cost of the bare proxy against the proxy's own plus Redis's.
	fmt.Println("\nCPU per request (median over rounds), by process:")
	fmt.Println("\n| target | load generator | proxy | redis-server | upstream |")
	fmt.Println("| --- | --- | --- | --- | --- |")
	us := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e3, 'f', 1, 64) + " µs" }
	for _, t := range targets {
		m := med[t.name]
		cols := []string{us(m.cpu[0]), "", "", us(m.cpu[len(m.cpu)-1])}
		if len(m.cpu) > 2 {
			cols[1] = us(m.cpu[1])
		}
		if len(m.cpu) > 3 {
			cols[2] = us(m.cpu[2])
		}
		fmt.Printf("| %s | %s |\n", t.name, strings.Join(cols, " | "))
	}
	bareCPU, tgCPU := b.cpu[1], p.cpu[1]+p.cpu[2]
	fmt.Printf("\nproxying CPU per request: bare %s, tollgate %s (proxy + redis-server): %.2f× bare\n", us(bareCPU), us(tgCPU), float64(tgCPU)/float64(bareCPU))
	if u, ok := med["tollgate, tools/list"]; ok {
		fmt.Printf("not limited (tools/list): %.0f req/s (%.2f× bare), proxy CPU %s (%.2f× bare)\n",
			u.rps, u.rps/b.rps, us(u.cpu[1]), float64(u.cpu[1])/float64(bareCPU))
	}
	if r, ok := med["tollgate, all rejected"]; ok {
		rCPU := r.cpu[1] + r.cpu[2]
		fmt.Printf("rejections: %.0f req/s (%.2f× bare), proxying CPU %s (%.2f× bare)\n",
			r.rps, r.rps/b.rps, us(rCPU), float64(rCPU)/float64(bareCPU))
	}
	if o, ok := med["other proxy, all rejected"]; ok {
		if r, ok := med["tollgate, all rejected"]; ok {
			fmt.Printf("rejections, this build vs other: %.0f vs %.0f req/s (%.2f×); redis-server CPU per call %s vs %s\n",
				r.rps, o.rps, r.rps/o.rps, us(r.cpu[2]), us(o.cpu[2]))
		}
	}
	if o, ok := med["tollgate, OIDC"]; ok {
		oCPU := o.cpu[1] + o.cpu[2]
		fmt.Printf("OIDC identity: %.0f req/s (%.2f× header identity, %.2f× bare), proxy CPU %s (%.2f× header identity's %s)\n",
			o.rps, o.rps/p.rps, o.rps/b.rps, us(o.cpu[1]), float64(o.cpu[1])/float64(p.cpu[1]), us(p.cpu[1]))
		if n, ok := med["tollgate, OIDC, no token cache"]; ok {
			fmt.Printf("OIDC without the token cache: %.0f req/s (%.2f× header identity; the cache gives %.2f×), proxy CPU %s; proxying CPU %s vs %s with the cache\n",
				n.rps, n.rps/p.rps, o.rps/n.rps, us(n.cpu[1]), us(n.cpu[1]+n.cpu[2]), us(oCPU))
		}
	}
	for _, name := range []string{"tollgate, Sentinel", "tollgate, Cluster"} {
		if o, ok := med[name]; ok {
			fmt.Printf("%s: %.0f req/s (%.2f× standalone), p99 %s, proxy CPU %s (%.2f× standalone), Redis CPU %s (%.2f× standalone)\n",
				name, o.rps, o.rps/p.rps, o.p99.Round(time.Microsecond), us(o.cpu[1]), float64(o.cpu[1])/float64(p.cpu[1]),
				us(o.cpu[2]), float64(o.cpu[2])/float64(p.cpu[2]))
		}
	}
	if o, ok := med["other proxy"]; ok {
		oCPU := o.cpu[1] + o.cpu[2]
		fmt.Printf("other proxy: %.0f req/s (%.2f× tollgate), p99 %s, proxying CPU %s (%.2f× bare)\n",
			o.rps, o.rps/p.rps, o.p99.Round(time.Microsecond), us(oCPU), float64(oCPU)/float64(bareCPU))
	}

	// Under saturation, latency is concurrency / throughput (Little's law): the p99 above
	// measures the shared CPU. The latency a hop adds shows under light load.
	if *light > 0 {
		*profile = ""
		lm, err := measure(client, targets, rounds, -*light, duration, opsAddr)
		if err != nil {
			return err
		}
		fmt.Printf("\n## Light load: one client, %d requests/s, %d rounds × %s per target\n\n", *light, rounds, duration)
		printLatency(targets, lm)
		d, b, p := lm["direct"], lm["bare reverse proxy"], lm["tollgate proxy"]
		fmt.Printf("\nlatency overhead of tollgate: p50 %s vs direct, %s vs bare; p99 %s vs direct, %s vs bare\n",
			(p.p50 - d.p50).Round(time.Microsecond), (p.p50 - b.p50).Round(time.Microsecond),
			(p.p99 - d.p99).Round(time.Microsecond), (p.p99 - b.p99).Round(time.Microsecond))
		if u, ok := lm["tollgate, tools/list"]; ok {
			fmt.Printf("without the limiter's round trip (tools/list): p50 %s, p99 %s vs bare\n",
				(u.p50 - b.p50).Round(time.Microsecond), (u.p99 - b.p99).Round(time.Microsecond))
		}
		for _, name := range []string{"tollgate, Sentinel", "tollgate, Cluster"} {
			if o, ok := lm[name]; ok {
				fmt.Printf("%s: p50 %s, p99 %s vs standalone\n", name, (o.p50 - p.p50).Round(time.Microsecond), (o.p99 - p.p99).Round(time.Microsecond))
			}
		}
		if o, ok := lm["tollgate, OIDC"]; ok {
			fmt.Printf("OIDC identity: p50 %s, p99 %s vs header identity\n",
				(o.p50 - p.p50).Round(time.Microsecond), (o.p99 - p.p99).Round(time.Microsecond))
		}
	}

	// Memory: many distinct users, each a new per-user bucket and key (Redis holds them; the
	// proxy must not).
	rssBefore, _ := rss(proxyPID)
	start := time.Now()
	if err := distinctUsers(client, targets[2], conc, users); err != nil {
		return err
	}
	client.CloseIdleConnections()
	time.Sleep(2 * time.Second) // let server-side connection goroutines end
	rssAfter, err := rss(proxyPID)
	if err != nil {
		return err
	}
	goroutinesAfter, err := metric("http://"+opsAddr+"/metrics", "go_goroutines")
	if err != nil {
		return err
	}
	fmt.Printf("\n%d distinct users in %s: proxy RSS %d MB before, %d MB after\n", users, time.Since(start).Round(time.Millisecond), rssBefore>>20, rssAfter>>20)
	fmt.Printf("proxy goroutines: %.0f after warm-up, %.0f after the run (idle client connections closed)\n", goroutinesBefore, goroutinesAfter)
	// Every call must have been decided by Redis: a fail-open would flatter the numbers.
	failOpen, _ := metric("http://"+opsAddr+"/metrics", `tollgate_decisions_total{method="tools/call",outcome="fail_open",tier=""}`)
	allowed, _ := metric("http://"+opsAddr+"/metrics", `tollgate_decisions_total{method="tools/call",outcome="allowed",tier=""}`)
	fmt.Printf("decisions: %.0f allowed by Redis, %.0f failed open\n", allowed, failOpen)
	for _, t := range targets { // the other proxies' decisions: none may have skipped Redis either
		if t.ops == "" {
			continue
		}
		failOpen, _ := metric("http://"+t.ops+"/metrics", `tollgate_decisions_total{method="tools/call",outcome="fail_open",tier=""}`)
		allowed, _ := metric("http://"+t.ops+"/metrics", `tollgate_decisions_total{method="tools/call",outcome="allowed",tier=""}`)
		var errs []string
		for _, kind := range []string{"timeout", "circuit_open", "error"} {
			if n, _ := metric("http://"+t.ops+"/metrics", `tollgate_store_errors_total{kind="`+kind+`"}`); n > 0 {
				errs = append(errs, fmt.Sprintf("%s %.0f", kind, n))
			}
		}
		fmt.Printf("decisions of %s: %.0f allowed by Redis, %.0f failed open (store errors: %s)\n", t.name, allowed, failOpen, cmp.Or(strings.Join(errs, ", "), "none"))
	}
	return nil
}

var (
	profile, profileTarget, other, otherArgs, authMode, storeMode *string
	light                                                         *int
)

func fetch(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	_, err = io.Copy(f, resp.Body)
	return err
}

type target struct {
	name, url string
	pids      []int  // the processes that serve it, besides the load generator
	tool      string // the tool called (default "search", always admitted); "-": tools/list
	status    int    // the status every call must get (default 200)
	// tokens, when set, are the users' bearer tokens (OIDC identity); else the user id is
	// sent in the trusted header.
	tokens map[string]string
	ops    string // the proxy's metrics listener, when not the tollgate proxy's
	// redis is how many of pids, after the proxy's, are the store's processes (0: one); their
	// CPU is reported as one sum, in the redis-server column.
	redis int
}

type result struct {
	rps      float64
	n        int64
	p50, p99 time.Duration
	cpu      []time.Duration // per request: the load generator's, then each of the target's pids
}

// measure loads each target in turn for d, rounds times with the order rotated, reading
// the CPU its processes spend; it returns each target's medians. conc > 0 is that many
// clients as fast as they go; conc < 0 is one client sending -conc requests per second.
func measure(client *http.Client, targets []target, rounds, conc int, d time.Duration, opsAddr string) (map[string]result, error) {
	results := map[string][]result{}
	var profiled sync.WaitGroup
	defer profiled.Wait()
	for r := range rounds {
		for i := range targets {
			t := targets[(i+r)%len(targets)]                          // rotate the order each round
			if *profile != "" && r == 0 && t.name == *profileTarget { // a CPU profile of the proxy under load
				profiled.Add(1)
				go func() {
					defer profiled.Done()
					if err := fetch("http://"+cmp.Or(t.ops, opsAddr)+"/debug/pprof/profile?seconds="+strconv.Itoa(int(d.Seconds())), *profile); err != nil {
						fmt.Fprintln(os.Stderr, "profile:", err)
					}
				}()
			}
			before, err := cpuTimes(t.pids)
			if err != nil {
				return nil, err
			}
			res, err := load(client, t, conc, d, 1000)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", t.name, err)
			}
			after, err := cpuTimes(t.pids)
			if err != nil {
				return nil, err
			}
			for i := range after {
				res.cpu = append(res.cpu, (after[i]-before[i])/time.Duration(res.n))
			}
			if t.redis > 1 { // the store's processes (cpu[2:2+t.redis]) as one
				for _, c := range res.cpu[3 : 2+t.redis] {
					res.cpu[2] += c
				}
				res.cpu = slices.Delete(res.cpu, 3, 2+t.redis)
			}
			results[t.name] = append(results[t.name], res)
		}
	}
	med := map[string]result{}
	for _, t := range targets {
		med[t.name] = median(results[t.name])
	}
	return med, nil
}

func printLatency(targets []target, med map[string]result) {
	fmt.Println("| target | req/s (median) | p50 (median) | p99 (median) |")
	fmt.Println("| --- | --- | --- | --- |")
	for _, t := range targets {
		m := med[t.name]
		fmt.Printf("| %s | %.0f | %s | %s |\n", t.name, m.rps, m.p50.Round(time.Microsecond), m.p99.Round(time.Microsecond))
	}
}

// cpuTimes reads the CPU time of this process and of pids.
func cpuTimes(pids []int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, len(pids)+1)
	for _, pid := range append([]int{0}, pids...) {
		t, err := cpuTime(pid)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

func median(rs []result) result {
	pick := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	m := result{
		rps: pick(func(r result) float64 { return r.rps }),
		p50: time.Duration(pick(func(r result) float64 { return float64(r.p50) })),
		p99: time.Duration(pick(func(r result) float64 { return float64(r.p99) })),
	}
	for i := range rs[0].cpu {
		m.cpu = append(m.cpu, time.Duration(pick(func(r result) float64 { return float64(r.cpu[i]) })))
	}
	return m
}

// load runs conc clients for d, each posting tools/call as one of nUsers users; conc < 0 is
// one client that sends -conc requests per second.
func load(client *http.Client, t target, conc int, d time.Duration, nUsers int) (result, error) {
	if conc < 0 {
		return paced(client, t, -conc, d, nUsers)
	}
	var wg sync.WaitGroup
	var n atomic.Int64
	var firstErr atomic.Value
	lats := make([][]time.Duration, conc)
	deadline := time.Now().Add(d)
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				t0 := time.Now()
				if err := post(client, t, "user-"+strconv.Itoa((w*7919+i)%nUsers)); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				lats[w] = append(lats[w], time.Since(t0))
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return result{}, err
	}
	all := slices.Concat(lats...)
	if len(all) == 0 {
		return result{}, errors.New("no request completed")
	}
	slices.Sort(all)
	return result{rps: float64(n.Load()) / time.Since(start).Seconds(), n: n.Load(), p50: all[len(all)/2], p99: all[len(all)*99/100]}, nil
}

// paced sends rate requests per second, one at a time, for d.
func paced(client *http.Client, t target, rate int, d time.Duration, nUsers int) (result, error) {
	var lats []time.Duration
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	start := time.Now()
	for i := 0; time.Since(start) < d; i++ {
		<-tick.C
		t0 := time.Now()
		if err := post(client, t, "user-"+strconv.Itoa(i%nUsers)); err != nil {
			return result{}, err
		}
		lats = append(lats, time.Since(t0))
	}
	if len(lats) == 0 {
		return result{}, errors.New("no request completed")
	}
	slices.Sort(lats)
	return result{rps: float64(len(lats)) / time.Since(start).Seconds(), n: int64(len(lats)), p50: lats[len(lats)/2], p99: lats[len(lats)*99/100]}, nil
}

func distinctUsers(client *http.Client, t target, conc, users int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(users) {
					return
				}
				if err := post(client, t, "distinct-"+strconv.FormatInt(i, 10)); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return nil
}

// post calls t's tool as user and checks the status.
func post(client *http.Client, t target, user string) error {
	tool, want := cmp.Or(t.tool, "search"), cmp.Or(t.status, http.StatusOK)
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":{"q":"tollgate"}}}`
	if tool == "-" {
		body = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	}
	req, _ := http.NewRequest(http.MethodPost, t.url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if t.tokens != nil {
		tok, ok := t.tokens[user]
		if !ok {
			return fmt.Errorf("no token for %s", user)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	} else {
		req.Header.Set("X-User", user)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("status %d from %s, want %d", resp.StatusCode, t.name, want)
	}
	return nil
}

// serveRole is the child process of startRole: it serves the upstream or the bare reverse
// proxy on a loopback port, prints the address, and ends when its stdin closes.
func serveRole(role, upstream string) error {
	var h http.Handler
	switch role {
	case "upstream": // a tiny JSON-RPC answer, the cheapest MCP server there is
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}`))
		})
	case "bare": // the baseline: a bare reverse proxy with the transport the proxy uses
		h = &httputil.ReverseProxy{
			Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(&url.URL{Scheme: "http", Host: upstream}) },
			Transport: enforce.NewTransport(v1alpha1.DefaultResponseHeaderTimeout),
		}
	default:
		return fmt.Errorf("unknown role %q", role)
	}
	addr, err := loopback.Serve(h)
	if err != nil {
		return err
	}
	fmt.Println(addr)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// startRole runs serveRole in a child process (this same binary).
func startRole(role, upstream string) (addr string, pid int, stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return "", 0, nil, err
	}
	cmd := exec.Command(self, "-role", role, "-upstream", upstream)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", 0, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop = func() { _ = stdin.Close(); _ = cmd.Wait() }
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stop()
		return "", 0, nil, fmt.Errorf("%s: no address: %w", role, err)
	}
	return strings.TrimSpace(line), cmd.Process.Pid, stop, nil
}

// cpuTime is the CPU time (user and system, all threads) a process has used so far; pid 0
// is this process.
func cpuTime(pid int) (time.Duration, error) {
	path := "/proc/self/stat"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The fields after the command name (which may hold spaces) start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: no command name", path)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: %d fields", path, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14 of proc(5)
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond, nil
}

// headerAuth is the trusted-header identity of the proxy's config.
const headerAuth = "{header: {name: X-User}}"

// standalone is the sessionStorage of a standalone redis-server at addr.
func standalone(addr string) string { return fmt.Sprintf("{provider: redis, address: %q}", addr) }

// startProxy runs the proxy binary bin, with extra flags, against upstream and Redis, with
// authYAML as its auth config and storeYAML as its sessionStorage.
func startProxy(dir, bin, upstream, storeYAML, authYAML string, flags ...string) (addr, ops string, pid int, stop func(), err error) {
	p1, err := loopback.FreePort()
	if err != nil {
		return "", "", 0, nil, err
	}
	p2, err := loopback.FreePort()
	if err != nil {
		return "", "", 0, nil, err
	}
	// Generous limits: every request is decided against 4 buckets and admitted, so the
	// measurement is of the admitted path (the common one).
	cfg := fmt.Sprintf(`apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: bench, name: search}
upstream: {url: %q}
auth: %s
sessionStorage: %s
rateLimiting:
  shared: {maxTokens: 1000000, refillPeriod: 1s}
  perUser: {maxTokens: 1000000, refillPeriod: 1s}
  tools:
  - {name: search, shared: {maxTokens: 1000000, refillPeriod: 1s}, perUser: {maxTokens: 1000000, refillPeriod: 1s}}
  - {name: exhausted, shared: {maxTokens: 1, refillPeriod: 8760h}}
`, upstream, authYAML, storeYAML)
	f, err := os.CreateTemp(dir, "proxy-*.yaml") // one per proxy
	if err != nil {
		return "", "", 0, nil, err
	}
	path := f.Name()
	_, err = f.WriteString(cfg)
	if err := errors.Join(err, f.Close()); err != nil {
		return "", "", 0, nil, err
	}
	addr, ops = "127.0.0.1:"+strconv.Itoa(p1), "127.0.0.1:"+strconv.Itoa(p2)
	cmd := exec.Command(bin, append([]string{"--config", path, "--listen", addr, "--metrics-listen", ops, "--log-level", "error", "--enable-pprof"}, flags...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", "", 0, nil, err
	}
	stop = func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }
	if err := loopback.WaitTCP(addr); err != nil {
		stop()
		return "", "", 0, nil, err
	}
	return addr, ops, cmd.Process.Pid, stop, nil
}

// rss reads a process's resident set size.
func rss(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// metric reads one unlabelled gauge from a Prometheus text page.
func metric(url, name string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s in %s", name, url)
}
