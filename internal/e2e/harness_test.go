package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/envtest"
	"github.com/tollgate-dev/tollgate/internal/node"
	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/internal/testupstream"
	"github.com/tollgate-dev/tollgate/operator/manager"
	"github.com/tollgate-dev/tollgate/operator/render"
)

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard()) // the manager's logs are noise; failures say what went wrong
	code := envtest.Main(m)
	node.RemoveBuilds()
	os.Exit(code)
}

// Bounds of every wait: generous for a loaded 2-core machine, and still far below the test
// timeout, so a stuck step fails with a message instead of hanging.
const (
	statusLimit = 60 * time.Second // the operator and the node reach a status
	reloadLimit = 20 * time.Second // the proxy applies an edited ConfigMap (it polls every 2 s)
	callTimeout = 10 * time.Second // one MCP request
)

// proxyImage is what the operator deploys; the node runs the proxy binary built for this
// test run in its place.
const proxyImage = "tollgate-proxy:e2e"

// userHeader is the identity header the authenticating gateway sets (externalAuthConfigRef).
const userHeader = "X-Forwarded-User"

// chain is one instance of the whole chain: the API server, the operator, a node, Redis and
// an upstream, in a namespace of its own.
type chain struct {
	env      *envtest.Env
	c        client.Client // the GitOps tool's hands: an administrator
	ns       string
	node     *node.Node
	redis    *testredis.Server
	upstream *testupstream.Upstream
}

// newChain starts the operator (the binary's wiring, as its ServiceAccount under the shipped
// RBAC), a node running the real proxy binary, a redis-server and a go-sdk upstream, on env.
func newChain(t *testing.T, env *envtest.Env) *chain {
	t.Helper()
	ch := &chain{env: env, c: env.Client, ns: env.Namespace(t)}
	ch.redis = testredis.Start(t) // first: without redis-server the test stops before building anything
	proxy := node.Build(t, "github.com/tollgate-dev/tollgate/proxy")
	ch.upstream = testupstream.StartGo(t, testupstream.GoOptions{})
	startOperator(t, env)
	ch.node = node.Start(t, node.Options{Client: env.Client, Namespace: ch.ns, Images: map[string]string{proxyImage: proxy}})
	// The operator of the next test also sees this namespace (envtest deletes no namespace):
	// leave nothing for it to reconcile.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = ch.c.DeleteAllOf(ctx, &v1alpha1.MCPServer{}, client.InNamespace(ch.ns))
	})
	return ch
}

// startOperator runs manager.New, as the operator binary does, until the test ends. Every
// request the API server refuses it (403) fails the test: a verb missing from the shipped
// role shows here as it would in a cluster.
func startOperator(t *testing.T, env *envtest.Env) {
	t.Helper()
	var denials envtest.Denials
	cfg := denials.Wrap(env.AsOperator(t))
	ctx, cancel := context.WithCancel(context.Background())
	mgr, err := manager.New(ctx, cfg, manager.Options{
		MetricsAddr: "0", ProbeAddr: "0", ProxyImage: proxyImage,
		SkipNameValidation: true, // each test runs its own manager in this process
	})
	if err != nil {
		cancel()
		t.Fatalf("building the operator's manager: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("the operator's manager: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("the operator's manager did not stop within 30 s")
		}
		if d := denials.List(); len(d) > 0 {
			t.Errorf("the API server refused the operator's ServiceAccount: %v", d)
		}
	})
}

// manifest is what a GitOps repository holds for one MCPServer; render writes it as YAML.
type manifest struct {
	Namespace, Name string
	Upstream        string // spec.upstream.url
	Auth            bool   // externalAuthConfigRef: the gateway ConfigMap (userHeader)
	Redis           string // spec.sessionStorage.address
	PasswordSecret  string // spec.sessionStorage.passwordRef.name (key password)
	Shared          int32  // spec.rateLimiting.shared.maxTokens per hour; 0: none
	PerUser         int32  // spec.rateLimiting.perUser.maxTokens per hour; 0: none
	SearchPerUser   int32  // the search tool's perUser.maxTokens per hour; 0: no entry
	FailurePolicy   string // spec.rateLimiting.failurePolicy; "": the default (Allow)
}

var manifestTemplate = template.Must(template.New("mcpserver").Parse(`
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: {{.Name}}
  namespace: {{.Namespace}}
spec:
  upstream: {url: "{{.Upstream}}"}
{{- if .Auth}}
  externalAuthConfigRef: {name: gateway}
{{- end}}
  sessionStorage:
    provider: redis
    address: "{{.Redis}}"
{{- if .PasswordSecret}}
    passwordRef: {name: {{.PasswordSecret}}, key: password}
{{- end}}
  rateLimiting:
{{- if .FailurePolicy}}
    failurePolicy: {{.FailurePolicy}}
{{- end}}
{{- if .Shared}}
    shared: {maxTokens: {{.Shared}}, refillPeriod: 1h}
{{- end}}
{{- if .PerUser}}
    perUser: {maxTokens: {{.PerUser}}, refillPeriod: 1h}
{{- end}}
{{- if .SearchPerUser}}
    tools:
    - name: search
      perUser: {maxTokens: {{.SearchPerUser}}, refillPeriod: 1h}
{{- end}}
`))

// gatewayConfigMap is the externalAuthConfigRef ConfigMap: the header the gateway sets.
const gatewayConfigMap = `
apiVersion: v1
kind: ConfigMap
metadata: {name: gateway, namespace: %s}
data: {userHeader: %s}
`

// applyYAML server-side-applies a manifest, as Argo CD (server-side apply) or Flux does.
func (ch *chain) applyYAML(t *testing.T, doc string) {
	t.Helper()
	if err := ch.tryApplyYAML(doc); err != nil {
		t.Fatal(err)
	}
}

func (ch *chain) tryApplyYAML(doc string) error {
	var u unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		return fmt.Errorf("parsing the manifest: %w\n%s", err, doc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ch.c.Apply(ctx, client.ApplyConfigurationFromUnstructured(&u), client.FieldOwner("gitops"), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return nil
}

// apply applies an MCPServer manifest.
func (ch *chain) apply(t *testing.T, m manifest) {
	t.Helper()
	if err := ch.tryApply(t, m); err != nil {
		t.Fatal(err)
	}
}

func (ch *chain) tryApply(t *testing.T, m manifest) error {
	t.Helper()
	m.Namespace = ch.ns
	var b bytes.Buffer
	if err := manifestTemplate.Execute(&b, m); err != nil {
		t.Fatalf("rendering the manifest: %v", err)
	}
	return ch.tryApplyYAML(b.String())
}

// applyGateway applies the gateway ConfigMap of header authentication.
func (ch *chain) applyGateway(t *testing.T) {
	t.Helper()
	ch.applyYAML(t, fmt.Sprintf(gatewayConfigMap, ch.ns, userHeader))
}

// health is what a cluster admin and a GitOps tool read from an MCPServer.
type health struct {
	// Current: status.observedGeneration is the object's generation (the status describes
	// the spec as it is now), and so is every condition's observedGeneration.
	Current bool
	// Conditions are "Status/Reason" by type.
	Conditions map[string]string
	// Kstatus is what sigs.k8s.io/cli-utils' kstatus computes (Flux, kpt, cli-utils).
	Kstatus string
	// ArgoCD is hs.status of manifests/argocd-health.lua run on the live object.
	ArgoCD string
}

// Conditions of a server whose declared limits are all in force.
var readyConditions = map[string]string{
	v1alpha1.ConditionRateLimitConfigValid: "True/" + v1alpha1.ReasonRateLimitConfigValid,
	v1alpha1.ConditionReferencesResolved:   "True/" + v1alpha1.ReasonReferencesResolved,
	v1alpha1.ConditionProxyAvailable:       "True/" + v1alpha1.ReasonProxyAvailable,
	v1alpha1.ConditionReady:                "True/" + v1alpha1.ReasonReady,
	v1alpha1.ConditionStalled:              "False/" + v1alpha1.ReasonNotStalled,
}

var healthy = health{Current: true, Conditions: readyConditions, Kstatus: "Current", ArgoCD: "Healthy"}

// liveHealth reads the MCPServer as GitOps tools read it: the live object, as JSON.
func (ch *chain) liveHealth(t *testing.T, name string) (health, string) {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("MCPServer"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ch.c.Get(ctx, types.NamespacedName{Namespace: ch.ns, Name: name}, u); err != nil {
		t.Fatalf("reading MCPServer %s: %v", name, err)
	}
	h, detail, err := healthOf(u)
	if err != nil {
		t.Fatal(err)
	}
	return h, detail
}

// waitHealth waits until the MCPServer's health is want, and fails the test with the
// difference when it is not within statusLimit.
func (ch *chain) waitHealth(t *testing.T, name string, want health) {
	t.Helper()
	deadline := time.Now().Add(statusLimit)
	for {
		got, detail := ch.liveHealth(t, name)
		diff := cmp.Diff(want, got)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("MCPServer %s: health after %v: -want +got:\n%s%s", name, statusLimit, diff, detail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pod waits until the node runs a ready process for the MCPServer's Deployment that cond
// accepts, and returns it.
func (ch *chain) pod(t *testing.T, server string, cond func(node.Pod) bool) node.Pod {
	t.Helper()
	deadline := time.Now().Add(statusLimit)
	for {
		p, ok := ch.node.Pod(render.Name(server))
		if ok && p.PID != 0 && p.Ready && cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ready proxy process for %s within %v: %+v (exists: %v)", server, statusLimit, p, ok)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func anyPod(node.Pod) bool { return true }

// generation reads the MCPServer's metadata.generation.
func (ch *chain) generation(t *testing.T, name string) int64 {
	t.Helper()
	var s v1alpha1.MCPServer
	if err := ch.c.Get(t.Context(), types.NamespacedName{Namespace: ch.ns, Name: name}, &s); err != nil {
		t.Fatalf("reading MCPServer %s: %v", name, err)
	}
	return s.Generation
}

// deployment reads the proxy Deployment the operator manages for server.
func (ch *chain) deployment(t *testing.T, server string) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	if err := ch.c.Get(t.Context(), types.NamespacedName{Namespace: ch.ns, Name: render.Name(server)}, &d); err != nil {
		t.Fatalf("reading the proxy Deployment of %s: %v", server, err)
	}
	return &d
}

// reloads reads the proxy's tollgate_config_reloads_total{result="applied"} from its
// metrics port: how often it applied an edited config in place.
func reloads(t *testing.T, p node.Pod) int {
	t.Helper()
	return int(proxyMetric(t, p, `tollgate_config_reloads_total{result="applied"}`)) // 0: not counted yet, no reload happened
}

// configGeneration reads the proxy's tollgate_config_generation: the MCPServer generation
// whose config it enforces.
func configGeneration(t *testing.T, p node.Pod) int64 {
	t.Helper()
	return int64(proxyMetric(t, p, "tollgate_config_generation"))
}

// proxyMetric scrapes the proxy's metrics port for one sample, named with its labels as the
// exposition writes them; 0 when it is absent.
func proxyMetric(t *testing.T, p node.Pod, sample string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Ports["metrics"]+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scraping the proxy's metrics: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", sample, err)
			}
			return n
		}
	}
	return 0
}

// mcpUser is an MCP client behind the authenticating gateway: every request carries its
// identity header ("" sends none). It speaks Streamable HTTP (2025-11-25) with plain
// requests, so that a test sees the HTTP status and headers of a rejection, which the go-sdk
// client drops.
type mcpUser struct {
	endpoint string
	user     string
	session  string
	id       int
	http     *http.Client
}

// newUser connects user to the proxy process p (its mcp port; the MCP endpoint is the
// upstream's path, /mcp) and initialises a session.
func newUser(t *testing.T, p node.Pod, user string) *mcpUser {
	t.Helper()
	u := &mcpUser{
		endpoint: "http://" + p.Ports["mcp"] + "/mcp",
		user:     user,
		// A fresh connection per request: a restarted proxy leaves no stale connection behind.
		http: &http.Client{Timeout: callTimeout, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	resp := u.post(t, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`)
	if resp.status != http.StatusOK {
		t.Fatalf("initialize as %q: HTTP %d %s", user, resp.status, resp.body)
	}
	u.session = resp.header.Get("Mcp-Session-Id")
	if r := u.post(t, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); r.status/100 != 2 {
		t.Fatalf("notifications/initialized as %q: HTTP %d %s", user, r.status, r.body)
	}
	return u
}

type response struct {
	status int
	header http.Header
	body   string
}

func (u *mcpUser) post(t *testing.T, body string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u.endpoint, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	if u.user != "" {
		req.Header.Set(userHeader, u.user)
	}
	if u.session != "" {
		req.Header.Set("Mcp-Session-Id", u.session)
	}
	resp, err := u.http.Do(req)
	if err != nil {
		t.Fatalf("POST %s as %q: %v", u.endpoint, u.user, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", u.user, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// outcome is what a client sees of one tools/call: "ok" (HTTP 200 with a result),
// "429 <limit>" (the bucket the proxy names in the JSON-RPC error's data), "503" (the limiter
// cannot decide and fails closed), or what else came.
type outcome string

// call calls tool and returns what the client saw. A rejection must carry Retry-After in
// whole seconds, at least 1.
func (u *mcpUser) call(t *testing.T, tool string) outcome {
	t.Helper()
	u.id++
	resp := u.post(t, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{"text":"x"}}}`, u.id, tool))
	msg := jsonRPC(resp)
	switch resp.status {
	case http.StatusOK:
		var m struct {
			Result *struct {
				IsError bool `json:"isError"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(msg), &m); err != nil || m.Result == nil || m.Result.IsError {
			return outcome(fmt.Sprintf("200 without a result: %s", msg))
		}
		return "ok"
	case http.StatusTooManyRequests:
		var m struct {
			Error struct {
				Code int `json:"code"`
				Data struct {
					Limit string `json:"limit"`
				} `json:"data"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(msg), &m); err != nil || m.Error.Code != 429 {
			return outcome(fmt.Sprintf("429 with an unexpected body: %s", msg))
		}
		if s, err := strconv.Atoi(resp.header.Get("Retry-After")); err != nil || s < 1 {
			return outcome(fmt.Sprintf("429 with Retry-After %q", resp.header.Get("Retry-After")))
		}
		return outcome("429 " + m.Error.Data.Limit)
	case http.StatusServiceUnavailable:
		if resp.header.Get("Retry-After") == "" {
			return "503 without Retry-After"
		}
		return "503"
	}
	return outcome(fmt.Sprintf("%d %s", resp.status, resp.body))
}

// jsonRPC extracts the JSON-RPC message of an answer: the body, or the data of the first
// event of an SSE answer.
func jsonRPC(r response) string {
	if !strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") {
		return r.body
	}
	for _, line := range strings.Split(r.body, "\n") {
		if d, ok := strings.CutPrefix(line, "data:"); ok && strings.TrimSpace(d) != "" {
			return strings.TrimSpace(d)
		}
	}
	return r.body
}

// step is one call of a scenario and what the client must see.
type step struct {
	user, tool string
	want       outcome
}

// run makes the calls of steps, each user with its own session on the proxy process p, and
// compares what the clients saw with what the steps want.
func run(t *testing.T, p node.Pod, reason string, steps []step) {
	t.Helper()
	users := map[string]*mcpUser{}
	var want, got []string
	for _, s := range steps {
		u, ok := users[s.user]
		if !ok {
			u = newUser(t, p, s.user)
			users[s.user] = u
		}
		want = append(want, fmt.Sprintf("%s %s: %s", s.user, s.tool, s.want))
		got = append(got, fmt.Sprintf("%s %s: %s", s.user, s.tool, u.call(t, s.tool)))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s\nwhat the clients saw: -want +got:\n%s", reason, diff)
	}
}

// headerTransport sets the gateway's identity header on every request of a go-sdk client.
type headerTransport struct {
	user string
	next http.RoundTripper
}

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(userHeader, h.user)
	return h.next.RoundTrip(r)
}

// sdkSession connects a go-sdk client (v1.8, Streamable HTTP) as user to the proxy process p.
func sdkSession(t *testing.T, p node.Pod, user string) *mcp.ClientSession {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e-sdk", Version: "1.0.0"}, nil)
	tr := &mcp.StreamableClientTransport{
		Endpoint:   "http://" + p.Ports["mcp"] + "/mcp",
		HTTPClient: &http.Client{Timeout: callTimeout, Transport: headerTransport{user, http.DefaultTransport}},
		MaxRetries: -1,
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	s, err := c.Connect(ctx, tr, nil)
	if err != nil {
		t.Fatalf("a go-sdk client connecting as %q through the proxy: %v", user, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// executed is what the upstream ran, for the keys a scenario looks at.
func executed(t *testing.T, u *testupstream.Upstream) map[string]int {
	t.Helper()
	got := u.Counts(t)
	return map[string]int{"search": got[testupstream.KeySearch], "echo": got[testupstream.KeyEcho]}
}

// bucket names as the proxy reports them in a rejection (RateLimit-Policy, data.limit).
const (
	perUserBucket       = "user"
	searchPerUserBucket = "tool:search:user"
	sharedBucket        = "shared"
)

// removeAuthRules removes the CEL rules that refuse per-user limits without authentication
// from env's MCPServer CRD, as TestDefenseInDepthRendersWhatTheProxyAccepts does: an object
// can then be stored as one admitted before the rules existed.
func removeAuthRules(t *testing.T, env *envtest.Env) {
	t.Helper()
	var crd apiextensionsv1.CustomResourceDefinition
	if err := env.Client.Get(t.Context(), types.NamespacedName{Name: "mcpservers.tollgate.dev"}, &crd); err != nil {
		t.Fatalf("reading the MCPServer CRD: %v", err)
	}
	spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	var kept []apiextensionsv1.ValidationRule
	for _, r := range spec.XValidations {
		if !strings.Contains(r.Message, "requires authentication") {
			kept = append(kept, r)
		}
	}
	if len(kept) == len(spec.XValidations) {
		t.Fatal("the MCPServer CRD has no rule whose message says 'requires authentication': the test needs updating")
	}
	spec.XValidations = kept
	crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"] = spec
	if err := env.Client.Update(t.Context(), &crd); err != nil {
		t.Fatalf("updating the MCPServer CRD: %v", err)
	}
}

// owned are the kinds of object the operator creates for an MCPServer with header
// authentication.
func owned() []client.Object {
	return []client.Object{&corev1.ConfigMap{}, &appsv1.Deployment{}, &corev1.Service{}, &networkingv1.NetworkPolicy{}}
}

// collectGarbage does what kube-controller-manager's garbage collector does for objects
// whose owners are gone, which envtest does not run: it deletes every object of the owned
// kinds in ns that has owner references of which none names an existing owner (same kind,
// name and UID), and returns them as "Kind/name", sorted. Only the rule is reproduced: the
// collector's graph, its timing and foreground deletion are not.
func collectGarbage(t *testing.T, c client.Client, ns string) []string {
	t.Helper()
	ctx := t.Context()
	var deleted []string
	lists := []client.ObjectList{&corev1.ConfigMapList{}, &appsv1.DeploymentList{}, &corev1.ServiceList{}, &networkingv1.NetworkPolicyList{}}
	for _, list := range lists {
		if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
			t.Fatalf("listing %T: %v", list, err)
		}
		items, err := apimeta.ExtractList(list)
		if err != nil {
			t.Fatal(err)
		}
		for _, item := range items {
			obj := item.(client.Object)
			refs := obj.GetOwnerReferences()
			if len(refs) == 0 || ownerExists(t, c, ns, refs) {
				continue
			}
			if err := c.Delete(ctx, obj, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
				t.Fatalf("collecting %T %s: %v", obj, obj.GetName(), err)
			}
			gvk, err := apiutil.GVKForObject(obj, c.Scheme())
			if err != nil {
				t.Fatal(err)
			}
			deleted = append(deleted, gvk.Kind+"/"+obj.GetName())
		}
	}
	sort.Strings(deleted)
	return deleted
}

// ownerExists reports whether any of refs names an object that exists with that UID.
func ownerExists(t *testing.T, c client.Client, ns string, refs []metav1.OwnerReference) bool {
	t.Helper()
	for _, r := range refs {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion(r.APIVersion)
		u.SetKind(r.Kind)
		err := c.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: r.Name}, u)
		switch {
		case err == nil && u.GetUID() == r.UID:
			return true
		case err != nil && !apierrors.IsNotFound(err):
			t.Fatalf("looking up the owner %s %s: %v", r.Kind, r.Name, err)
		}
	}
	return false
}

// alive reports whether a process with pid exists (and is not a zombie of ours: the node
// waits for its children).
func alive(pid int) bool {
	return pid != 0 && syscall.Kill(pid, 0) == nil
}

// watchHealthy watches the MCPServer and records every state that a GitOps tool would take
// for "done and healthy" (kstatus Current, Argo CD Healthy) at a generation of at least gen
// while inForce is false: a status that runs ahead of what is running. Each state is judged
// when its watch event arrives, after it was written: inForce only turns true, so a state
// recorded is one that was wrong when written (one that is judged late may be missed, never
// wrongly recorded). stop ends the watch and returns what it recorded.
func (ch *chain) watchHealthy(t *testing.T, name string, gen int64, inForce func() bool) (stop func() []string) {
	t.Helper()
	wc, err := client.NewWithWatch(ch.env.Config, client.Options{Scheme: ch.env.Scheme})
	if err != nil {
		t.Fatalf("a watching client: %v", err)
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("MCPServerList"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*statusLimit)
	w, err := wc.Watch(ctx, list, client.InNamespace(ch.ns))
	if err != nil {
		cancel()
		t.Fatalf("watching MCPServers: %v", err)
	}
	t.Cleanup(func() { w.Stop(); cancel() }) // when the test stops before it calls stop
	var early, seen []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok || u.GetName() != name || u.GetGeneration() < gen {
				continue
			}
			h, detail, err := healthOf(u)
			seen = append(seen, fmt.Sprintf("resourceVersion %s, generation %d, current %v, in force %v:%s", u.GetResourceVersion(), u.GetGeneration(), h.Current, inForce(), detail))
			if err != nil || !h.Current || h.Kstatus != "Current" || h.ArgoCD != "Healthy" {
				continue
			}
			if !inForce() {
				early = append(early, fmt.Sprintf("resourceVersion %s: generation %d Ready (kstatus %s, Argo CD %s) before the proxy runs it", u.GetResourceVersion(), u.GetGeneration(), h.Kstatus, h.ArgoCD))
			}
		}
	}()
	return func() []string {
		w.Stop()
		cancel()
		<-done
		if len(early) > 0 {
			t.Logf("the states the watch saw:\n%s", strings.Join(seen, "\n"))
		}
		return early
	}
}
