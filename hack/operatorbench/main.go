// Command operatorbench measures the operator binary against a real control plane
// (kube-apiserver and etcd from bin/k8s, the CRD from manifests/crd): its RSS idle, with many
// large ConfigMaps no MCPServer uses (the operator must not cache them), and after it has
// reconciled many MCPServers; how long those take to converge; the API requests per reconcile
// by method; and the writes it makes once everything has converged (none are expected).
// -other measures another operator build the same way in the same run (an A/B: say, the
// build before a change). Each binary gets a fresh control plane. Loopback only; every wait
// is bounded.
//
//	go run ./hack/operatorbench [-servers 200] [-configmaps 100] [-configmap-bytes 900000] [-other BINARY]
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/tollgate-dev/tollgate/hack/internal/loopback"
	"github.com/tollgate-dev/tollgate/internal/envtest"
)

// The namespaces of a run: the MCPServers in one, the ConfigMaps no server uses in another.
const (
	serversNS   = "bench-servers"
	unrelatedNS = "bench-unrelated"
	// operatorUser is the operator's identity on the control plane (an administrator, as the
	// brief's kubeconfig is): the audit log keeps this user's requests only.
	operatorUser = "tollgate-operatorbench"
)

// Phases' lengths: long enough for the operator to react, short enough for a run of minutes.
const (
	settleIdle       = 5 * time.Second  // after /metrics answers: caches synced, start-up garbage gone
	settleConfigMaps = 10 * time.Second // after the ConfigMaps: their watch events delivered and decoded
	settleServer     = 5 * time.Second  // after convergence: trailing reconciles (own writes' events) end
	quietPeriod      = 20 * time.Second // nothing changes: a converged operator must write nothing
)

var mcpServerGVK = schema.GroupVersionKind{Group: "tollgate.dev", Version: "v1alpha1", Kind: "MCPServer"}

type options struct {
	servers, configMaps, configMapBytes int
	other                               string
	timeout                             time.Duration
}

func main() {
	var o options
	flag.IntVar(&o.servers, "servers", 200, "MCPServers to create and wait for")
	flag.IntVar(&o.configMaps, "configmaps", 100, "unrelated ConfigMaps to create")
	flag.IntVar(&o.configMapBytes, "configmap-bytes", 900_000, "bytes of data in each unrelated ConfigMap")
	flag.StringVar(&o.other, "other", "", "also measure this operator binary (another build: an A/B in one run)")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long the MCPServers may take to converge")
	flag.Parse()
	// envtest logs through controller-runtime's logger, which otherwise complains, with a stack
	// trace, that none was set; what matters reaches stderr as errors.
	ctrllog.SetLogger(logr.Discard())
	// An interrupt cancels ctx: every wait returns, and the deferred stops end the operator
	// and the control plane (which envtest starts in process groups of their own, out of the
	// terminal's reach).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "operatorbench:", err)
		os.Exit(1)
	}
}

// binary is an operator build to measure.
type binary struct{ label, path string }

// result is what one binary measured.
type result struct {
	binary
	rssIdle, rssCMs, hwmCMs, rssServers int64
	created, converged                  time.Duration
	busy, quiet                         counters       // the operator's /metrics over the phases
	auditBusy, auditQuiet               map[string]int // "verb resource" from the audit log
}

func run(ctx context.Context, o options) error {
	dir, err := os.MkdirTemp("", "operatorbench")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()

	bin := filepath.Join(dir, "operator")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/tollgate-dev/tollgate/operator")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./operator: %w\n%s", err, out)
	}
	bins := []binary{{"this build", bin}}
	if o.other != "" {
		bins = append(bins, binary{"other: " + o.other, o.other})
	}
	var results []result
	for i, b := range bins {
		fmt.Fprintf(os.Stderr, "== %s\n", b.label)
		r, err := measure(ctx, filepath.Join(dir, strconv.Itoa(i)), b, o)
		if err != nil {
			return fmt.Errorf("%s: %w", b.label, err)
		}
		results = append(results, r)
	}
	report(results, o)
	return nil
}

// measure runs one binary through every step on a control plane of its own.
func measure(ctx context.Context, dir string, b binary, o options) (r result, err error) {
	r.binary = b
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return r, err
	}
	p, err := startPlane(dir)
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, p.stop()) }()
	for _, ns := range []string{serversNS, unrelatedNS} {
		if err := p.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return r, err
		}
	}

	// 1. The operator, and its /metrics answering.
	op, err := startOperator(ctx, dir, b.path, p.kubeconfig)
	if err != nil {
		return r, err
	}
	defer func() { err = errors.Join(err, op.stop()) }()

	// 2. Idle.
	if err := op.sleep(ctx, settleIdle); err != nil {
		return r, err
	}
	if r.rssIdle, _, err = memory(op.pid()); err != nil {
		return r, err
	}

	// 3. Unrelated ConfigMaps: an operator that caches ConfigMaps whole holds every byte.
	start := time.Now()
	if err := createConfigMaps(ctx, p.client, o.configMaps, o.configMapBytes); err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "   %d ConfigMaps created in %s\n", o.configMaps, time.Since(start).Round(time.Millisecond))
	if err := op.sleep(ctx, settleConfigMaps); err != nil {
		return r, err
	}
	if r.rssCMs, r.hwmCMs, err = memory(op.pid()); err != nil {
		return r, err
	}

	// 4. and 5. The servers, between snapshots of the operator's counters and of the audit log.
	m0, a0, err := snapshot(op, p)
	if err != nil {
		return r, err
	}
	start = time.Now()
	if err := createServers(ctx, p.client, o.servers); err != nil {
		return r, err
	}
	r.created = time.Since(start)
	if err := waitConverged(ctx, op, p.client, o.servers, o.timeout); err != nil {
		return r, err
	}
	r.converged = time.Since(start)
	fmt.Fprintf(os.Stderr, "   %d MCPServers created in %s, converged in %s\n", o.servers, r.created.Round(time.Millisecond), r.converged.Round(time.Millisecond))
	if err := op.sleep(ctx, settleServer); err != nil {
		return r, err
	}
	m1, a1, err := snapshot(op, p)
	if err != nil {
		return r, err
	}
	if err := op.sleep(ctx, quietPeriod); err != nil {
		return r, err
	}
	m2, a2, err := snapshot(op, p)
	if err != nil {
		return r, err
	}
	r.busy, r.quiet = m1.minus(m0), m2.minus(m1)
	if r.auditBusy, err = auditCounts(p.auditLog, a0, a1); err != nil {
		return r, err
	}
	if r.auditQuiet, err = auditCounts(p.auditLog, a1, a2); err != nil {
		return r, err
	}

	// 6. After the servers.
	r.rssServers, _, err = memory(op.pid())
	return r, err
}

// plane is a running control plane with the CRD installed.
type plane struct {
	env        *crenvtest.Environment
	client     client.Client // the harness's own, an administrator other than the operator
	kubeconfig string        // the operator's
	auditLog   string
}

// auditPolicy logs the operator's requests, once each (a watch at ResponseStarted, which it
// reaches at once, anything else at ResponseComplete), and nothing else.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  users: [` + operatorUser + `]
- level: None
`

// startPlane starts kube-apiserver and etcd with the binaries and CRDs the project's tests use
// (internal/envtest), with an audit log of the operator's requests, and writes a kubeconfig
// for an administrator the operator runs as.
func startPlane(dir string) (*plane, error) {
	assets, err := envtest.AssetsDir()
	if err != nil {
		return nil, fmt.Errorf("%w (hack/envtest.sh builds them)", err)
	}
	scheme, err := envtest.NewScheme()
	if err != nil {
		return nil, err
	}
	crds, err := envtest.CRDs()
	if err != nil {
		return nil, err
	}
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		return nil, err
	}
	p := &plane{auditLog: filepath.Join(dir, "audit.log"), kubeconfig: filepath.Join(dir, "kubeconfig")}
	p.env = &crenvtest.Environment{
		Scheme: scheme, CRDs: crds, BinaryAssetsDirectory: assets,
		// A loaded 2-core machine may need more than envtest's 20 s.
		ControlPlaneStartTimeout: time.Minute, ControlPlaneStopTimeout: 30 * time.Second,
	}
	// Explicit paths: envtest would otherwise prefer TEST_ASSET_* variables over assets.
	api := p.env.ControlPlane.GetAPIServer()
	api.Path = filepath.Join(assets, "kube-apiserver")
	p.env.ControlPlane.Etcd = &crenvtest.Etcd{Path: filepath.Join(assets, "etcd")}
	// The log backend writes each event before the request returns (blocking mode, the
	// default), so the file's size marks a phase's end.
	api.Configure().Set("audit-policy-file", policy).Set("audit-log-path", p.auditLog).Set("audit-log-maxsize", "0")
	began := time.Now()
	cfg, err := p.env.Start()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("start the control plane from %s: %w", assets, err), p.env.Stop())
	}
	fmt.Fprintf(os.Stderr, "   control plane started in %s\n", time.Since(began).Round(time.Millisecond))
	fail := func(err error) (*plane, error) { return nil, errors.Join(err, p.stop()) }
	cfg.QPS, cfg.Burst = -1, 0 // no client-side limit: creating the objects must not set the pace
	if p.client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return fail(err)
	}
	user, err := p.env.AddUser(crenvtest.User{Name: operatorUser, Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fail(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return fail(err)
	}
	if err := os.WriteFile(p.kubeconfig, kc, 0o600); err != nil {
		return fail(err)
	}
	return p, nil
}

func (p *plane) stop() error {
	if err := p.env.Stop(); err != nil {
		return fmt.Errorf("stop the control plane: %w", err)
	}
	return nil
}

// operator is a running operator process.
type operator struct {
	cmd     *exec.Cmd
	metrics string        // URL of its /metrics
	exited  chan struct{} // closed when it ends
	waitErr error         // how it ended, once exited is closed
	log     string        // its output
}

// startOperator runs bin as the brief's operator would run, with the kubeconfig, and waits
// until its /metrics answers.
func startOperator(ctx context.Context, dir, bin, kubeconfig string) (*operator, error) {
	port, err := loopback.FreePort()
	if err != nil {
		return nil, err
	}
	op := &operator{metrics: "http://127.0.0.1:" + strconv.Itoa(port) + "/metrics", exited: make(chan struct{}), log: filepath.Join(dir, "operator.log")}
	logFile, err := os.Create(op.log)
	if err != nil {
		return nil, err
	}
	defer func() { _ = logFile.Close() }() // the child holds its own descriptor
	op.cmd = exec.Command(bin, "run", "--metrics-bind-address=127.0.0.1:"+strconv.Itoa(port),
		"--health-probe-bind-address=0", "--proxy-image=proxy:bench")
	op.cmd.Env = append(slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "KUBECONFIG=") }), "KUBECONFIG="+kubeconfig)
	op.cmd.Stdout, op.cmd.Stderr = logFile, logFile
	// Should this process die without stopping it, the kernel does (SIGKILL leaves no chance).
	op.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := op.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { op.waitErr = op.cmd.Wait(); close(op.exited) }()

	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := op.scrape(); err == nil {
			return op, nil
		} else if time.Now().After(deadline) {
			return nil, errors.Join(fmt.Errorf("the operator's /metrics did not answer within a minute: %w", err), op.stop())
		}
		if err := op.sleep(ctx, 200*time.Millisecond); err != nil {
			return nil, errors.Join(err, op.stop())
		}
	}
}

func (op *operator) pid() int { return op.cmd.Process.Pid }

// sleep waits d, failing early when the operator ends (with the end of its log) or ctx is done.
func (op *operator) sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-op.exited:
		return fmt.Errorf("the operator exited (%w); its log ends:\n%s", cmp.Or(op.waitErr, errors.New("exit status 0")), tail(op.log, 20))
	}
}

// stop sends SIGTERM, waits up to 15 s for a graceful end, then kills it.
func (op *operator) stop() error {
	select {
	case <-op.exited:
		return nil // already gone; sleep reported why
	default:
	}
	_ = op.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-op.exited:
		return nil
	case <-time.After(15 * time.Second):
		_ = op.cmd.Process.Kill()
		<-op.exited
		return errors.New("the operator did not stop within 15 s of SIGTERM: killed")
	}
}

// counters are the operator's own counts of its API requests and reconciles.
type counters struct {
	requests        map[string]float64 // rest_client_requests_total by HTTP method, all codes
	reconciles      float64            // controller_runtime_reconcile_total, all results
	reconcileErrors float64            // those with result="error"
}

func (c counters) minus(before counters) counters {
	d := counters{requests: map[string]float64{}, reconciles: c.reconciles - before.reconciles, reconcileErrors: c.reconcileErrors - before.reconcileErrors}
	for m, v := range c.requests {
		if n := v - before.requests[m]; n != 0 {
			d.requests[m] = n
		}
	}
	return d
}

// writes are the mutating requests among c's.
func (c counters) writes() float64 {
	var n float64
	for m, v := range c.requests {
		if m != http.MethodGet && m != http.MethodHead && m != http.MethodOptions {
			n += v
		}
	}
	return n
}

var (
	sampleLine = regexp.MustCompile(`^(\w+)\{([^}]*)\} (\S+)$`)
	labelPair  = regexp.MustCompile(`(\w+)="([^"]*)"`)
)

// scrape reads the counters from the operator's /metrics (Prometheus text format).
func (op *operator) scrape() (counters, error) {
	c := counters{requests: map[string]float64{}}
	hc := http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(op.metrics)
	if err != nil {
		return c, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return c, fmt.Errorf("%s: %s", op.metrics, resp.Status)
	}
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		m := sampleLine.FindStringSubmatch(s.Text())
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range labelPair.FindAllStringSubmatch(m[2], -1) {
			labels[l[1]] = l[2]
		}
		switch m[1] {
		case "rest_client_requests_total":
			c.requests[labels["method"]] += v
		case "controller_runtime_reconcile_total":
			c.reconciles += v
			if labels["result"] == "error" {
				c.reconcileErrors += v
			}
		}
	}
	return c, s.Err()
}

// snapshot reads the operator's counters and the audit log's length at one moment.
func snapshot(op *operator, p *plane) (counters, int64, error) {
	c, err := op.scrape()
	if err != nil {
		return c, 0, err
	}
	fi, err := os.Stat(p.auditLog)
	if err != nil {
		return c, 0, err
	}
	return c, fi.Size(), nil
}

// auditCounts counts the operator's requests logged between the offsets from and to, by verb
// and resource (the audit log tells a LIST from a GET, which the client's metrics do not).
func auditCounts(path string, from, to int64) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	counts := map[string]int{}
	s := bufio.NewScanner(io.NewSectionReader(f, from, to-from))
	s.Buffer(make([]byte, 64<<10), 4<<20)
	for s.Scan() {
		var e struct {
			Stage     string `json:"stage"`
			Verb      string `json:"verb"`
			ObjectRef *struct {
				Resource    string `json:"resource"`
				Subresource string `json:"subresource"`
			} `json:"objectRef"`
		}
		if err := json.Unmarshal(s.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if e.Verb == "watch" && e.Stage != "ResponseStarted" {
			continue // its end (ResponseComplete) is the same request
		}
		key := e.Verb
		if e.ObjectRef != nil {
			key += " " + strings.TrimSuffix(e.ObjectRef.Resource+"/"+e.ObjectRef.Subresource, "/")
		}
		counts[key]++
	}
	return counts, s.Err()
}

// createConfigMaps creates n ConfigMaps of size bytes of random printable data in the
// namespace no MCPServer uses. Random: nothing along the way can share or compress them.
func createConfigMaps(ctx context.Context, c client.Client, n, size int) error {
	rnd := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, size)
	for i := range n {
		for j := range data {
			data[j] = byte('!' + rnd.IntN('~'-'!'+1))
		}
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: unrelatedNS, Name: fmt.Sprintf("unrelated-%03d", i)},
			Data:       map[string]string{"blob": string(data)},
		}
		if err := c.Create(ctx, cm); err != nil {
			return fmt.Errorf("create ConfigMap %s: %w", cm.Name, err)
		}
	}
	return nil
}

// createServers creates n valid MCPServers s000... with a Redis-backed shared limit. They are
// unstructured, so that the harness holds the spec as a user writes it, whatever the Go types.
func createServers(ctx context.Context, c client.Client, n int) error {
	for i := range n {
		u := &unstructured.Unstructured{Object: map[string]any{
			"spec": map[string]any{
				"upstream":       map[string]any{"url": "http://search:9000/mcp"},
				"sessionStorage": map[string]any{"provider": "redis", "address": "redis:6379"},
				"rateLimiting":   map[string]any{"shared": map[string]any{"maxTokens": int64(10), "refillPeriod": "1m"}},
			},
		}}
		u.SetGroupVersionKind(mcpServerGVK)
		u.SetNamespace(serversNS)
		u.SetName(serverName(i))
		if err := c.Create(ctx, u); err != nil {
			return fmt.Errorf("create MCPServer %s: %w", u.GetName(), err)
		}
	}
	return nil
}

func serverName(i int) string { return fmt.Sprintf("s%03d", i) }

// waitConverged polls until every server's status describes its current generation with a
// Ready condition and its ConfigMap, Deployment and Service exist. No kubelet or Deployment
// controller runs here, so Ready stays False (ProxyProgressing): what counts is that the
// operator has done its part.
func waitConverged(ctx context.Context, op *operator, c client.Client, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	lastReport := time.Now()
	for {
		done, err := converged(ctx, c, n)
		if err != nil {
			return err
		}
		if done == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d MCPServers converged within %s", done, n, timeout)
		}
		if time.Since(lastReport) > 10*time.Second {
			fmt.Fprintf(os.Stderr, "   %d/%d converged\n", done, n)
			lastReport = time.Now()
		}
		if err := op.sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
}

// converged counts the servers that are done, from four lists (the managed objects' by
// metadata only: existence is all that counts).
func converged(ctx context.Context, c client.Client, n int) (int, error) {
	servers := &unstructured.UnstructuredList{}
	servers.SetGroupVersionKind(mcpServerGVK.GroupVersion().WithKind("MCPServerList"))
	if err := c.List(ctx, servers, client.InNamespace(serversNS)); err != nil {
		return 0, err
	}
	exists := map[string]map[string]bool{} // kind -> names
	for _, gvk := range []schema.GroupVersionKind{
		{Version: "v1", Kind: "ConfigMap"}, {Version: "v1", Kind: "Service"}, {Group: "apps", Version: "v1", Kind: "Deployment"},
	} {
		list := &metav1.PartialObjectMetadataList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := c.List(ctx, list, client.InNamespace(serversNS)); err != nil {
			return 0, err
		}
		exists[gvk.Kind] = map[string]bool{}
		for _, o := range list.Items {
			exists[gvk.Kind][o.Name] = true
		}
	}
	done := 0
	for _, s := range servers.Items {
		proxy := s.GetName() + "-proxy"
		observed, _, _ := unstructured.NestedInt64(s.Object, "status", "observedGeneration")
		if observed == s.GetGeneration() && hasCondition(s, "Ready") &&
			exists["ConfigMap"][proxy] && exists["Deployment"][proxy] && exists["Service"][proxy] {
			done++
		}
	}
	return min(done, n), nil
}

func hasCondition(u unstructured.Unstructured, typ string) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == typ {
			return true
		}
	}
	return false
}

// report prints one markdown row per binary, the breakdowns, and the command.
func report(results []result, o options) {
	mb := func(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
	fmt.Printf("\n## Operator: %d MCPServers, %d unrelated ConfigMaps of %d bytes (fresh control plane per binary; %s)\n\n",
		o.servers, o.configMaps, o.configMapBytes, revision())
	fmt.Printf("| operator | RSS idle | RSS with the ConfigMaps (Δ idle) | peak RSS (VmHWM) | %d servers converged | reconciles | API requests per reconcile | writes in %s quiet | RSS after the servers |\n", o.servers, quietPeriod)
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range results {
		fmt.Printf("| %s | %s | %s (%+.0f MiB) | %s | %s (created in %s) | %.0f (%.0f errors) | %s | %.0f (%.0f reconciles, %.0f requests) | %s |\n",
			r.label, mb(r.rssIdle), mb(r.rssCMs), float64(r.rssCMs-r.rssIdle)/(1<<20), mb(r.hwmCMs),
			r.converged.Round(100*time.Millisecond), r.created.Round(100*time.Millisecond),
			r.busy.reconciles, r.busy.reconcileErrors, perReconcile(r.busy),
			r.quiet.writes(), r.quiet.reconciles, sum(r.quiet.requests), mb(r.rssServers))
	}
	fmt.Printf("\nThe operator's requests from the creation of the servers to %s after convergence, by verb and resource (API server audit log), per reconcile; then those of the %s quiet period:\n\n", settleServer, quietPeriod)
	fmt.Println("| operator | per reconcile | quiet period |")
	fmt.Println("| --- | --- | --- |")
	for _, r := range results {
		fmt.Printf("| %s | %s | %s |\n", r.label, auditCell(r.auditBusy, r.busy.reconciles), auditCell(r.auditQuiet, 1))
	}
	fmt.Printf("\n`go run ./hack/operatorbench %s`\n", strings.Join(os.Args[1:], " "))
}

// perReconcile renders requests by HTTP method over reconciles: "4.02 (PATCH 2.00, GET 1.01, ...)".
// client-go labels a LIST and a WATCH as GET; the audit table tells them apart.
func perReconcile(c counters) string {
	if c.reconciles == 0 {
		return "no reconcile"
	}
	methods := slices.SortedFunc(maps.Keys(c.requests), func(a, b string) int {
		return cmp.Or(cmp.Compare(c.requests[b], c.requests[a]), strings.Compare(a, b))
	})
	parts := make([]string, len(methods))
	for i, m := range methods {
		parts[i] = fmt.Sprintf("%s %.2f", m, c.requests[m]/c.reconciles)
	}
	return fmt.Sprintf("%.2f (%s)", sum(c.requests)/c.reconciles, strings.Join(parts, ", "))
}

// auditCell renders counts divided by per, largest first.
func auditCell(counts map[string]int, per float64) string {
	if len(counts) == 0 {
		return "none"
	}
	keys := slices.SortedFunc(maps.Keys(counts), func(a, b string) int {
		return cmp.Or(cmp.Compare(counts[b], counts[a]), strings.Compare(a, b))
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		if per == 1 {
			parts[i] = fmt.Sprintf("%s %d", k, counts[k])
		} else {
			parts[i] = fmt.Sprintf("%s %.2f", k, float64(counts[k])/per)
		}
	}
	return strings.Join(parts, ", ")
}

func sum(m map[string]float64) float64 {
	var n float64
	for _, v := range m {
		n += v
	}
	return n
}

// revision names the commit measured, and whether the working tree differed from it.
func revision() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "commit unknown"
	}
	rev := "this build: " + strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		rev += " with uncommitted changes"
	}
	return rev
}

// memory reads a process's resident set size and its peak so far.
func memory(pid int) (rss, hwm int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.Lines(string(data)) {
		for name, dst := range map[string]*int64{"VmRSS:": &rss, "VmHWM:": &hwm} {
			if v, ok := strings.CutPrefix(line, name); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				if err != nil {
					return 0, 0, fmt.Errorf("/proc/%d/status: %w", pid, err)
				}
				*dst = kb << 10
			}
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status: no VmRSS or VmHWM", pid)
	}
	return rss, hwm, nil
}

// tail returns the last n lines of a file, for an error message.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
