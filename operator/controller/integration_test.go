package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/envtest"
	"github.com/tollgate-dev/tollgate/operator/manager"
	"github.com/tollgate-dev/tollgate/operator/render"
)

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard()) // the manager's logs are noise here; failures say what went wrong
	os.Exit(envtest.Main(m))
}

// countingClient counts the mutating requests the operator sends.
type countingClient struct {
	client.Client
	n *atomic.Int64
}

// lastWrite names the last mutating request, for failure messages.
var lastWrite atomic.Value

func (c countingClient) Create(ctx context.Context, o client.Object, opts ...client.CreateOption) error {
	c.n.Add(1)
	return c.Client.Create(ctx, o, opts...)
}

func (c countingClient) Update(ctx context.Context, o client.Object, opts ...client.UpdateOption) error {
	c.n.Add(1)
	lastWrite.Store(fmt.Sprintf("update %T %s", o, o.GetName()))
	return c.Client.Update(ctx, o, opts...)
}

func (c countingClient) Patch(ctx context.Context, o client.Object, p client.Patch, opts ...client.PatchOption) error {
	c.n.Add(1)
	return c.Client.Patch(ctx, o, p, opts...)
}

func (c countingClient) Apply(ctx context.Context, o runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	c.n.Add(1)
	b, _ := json.Marshal(o)
	lastWrite.Store("apply " + string(b))
	return c.Client.Apply(ctx, o, opts...)
}

func (c countingClient) Delete(ctx context.Context, o client.Object, opts ...client.DeleteOption) error {
	c.n.Add(1)
	return c.Client.Delete(ctx, o, opts...)
}

func (c countingClient) Status() client.SubResourceWriter {
	return countingStatus{c.Client.Status(), c.n}
}

type countingStatus struct {
	client.SubResourceWriter
	n *atomic.Int64
}

func (s countingStatus) Update(ctx context.Context, o client.Object, opts ...client.SubResourceUpdateOption) error {
	s.n.Add(1)
	lastWrite.Store(fmt.Sprintf("status update %T %s", o, o.GetName()))
	return s.SubResourceWriter.Update(ctx, o, opts...)
}

func (s countingStatus) Patch(ctx context.Context, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
	s.n.Add(1)
	return s.SubResourceWriter.Patch(ctx, o, p, opts...)
}

// operator is the real manager and controller on the shared control plane.
type operator struct {
	env    *envtest.Env
	writes atomic.Int64
}

func startOperator(t *testing.T) *operator {
	t.Helper()
	return startOperatorOn(t, envtest.Shared(t))
}

// startOperatorOn runs the operator on a given control plane.
func startOperatorOn(t *testing.T, env *envtest.Env) *operator {
	t.Helper()
	op := &operator{env: env}
	// The manager acts as the operator's ServiceAccount under the shipped ClusterRole, never as
	// an admin (op.env.Client, the test's own hands, stays admin): a verb missing from
	// manifests/rbac fails these tests, as it would fail in a cluster. Some refusals only
	// reach a log (an event, a retried watch), so every 403 the manager receives fails the
	// test too.
	var denials envtest.Denials
	cfg := denials.Wrap(op.env.AsOperator(t))
	ctx, cancel := context.WithCancel(context.Background())
	// The binary's own wiring (operator/manager), with a client that counts writes.
	mgr, err := manager.New(ctx, cfg, manager.Options{
		MetricsAddr: "0", ProbeAddr: "0", ProxyImage: "proxy:test",
		SkipNameValidation: true, // each test runs its own manager in this process
		NewClient: func(cfg *rest.Config, opts client.Options) (client.Client, error) {
			c, err := client.New(cfg, opts)
			if err != nil {
				return nil, err
			}
			return countingClient{c, &op.writes}, nil
		},
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
		if d := denials.List(); len(d) > 0 {
			t.Errorf("the API server refused the operator's ServiceAccount (a verb missing from manifests/rbac/role.yaml?): %v", d)
		}
	})
	return op
}

// settle waits until the operator has made no write for 2 s (the events of the last changes
// are worked off), for up to 60 s.
func (op *operator) settle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		before := op.writes.Load()
		time.Sleep(2 * time.Second)
		if op.writes.Load() == before {
			return
		}
	}
	t.Fatal("the operator kept writing for 60 s")
}

// eventually polls cond for up to 30 s.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s: %s", what, last)
}

func (op *operator) server(t *testing.T, ns, name string) *v1alpha1.MCPServer {
	t.Helper()
	var s v1alpha1.MCPServer
	if err := op.env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: name}, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

func (op *operator) condition(t *testing.T, ns, name, typ string) (string, string) {
	s := op.server(t, ns, name)
	c := meta.FindStatusCondition(s.Status.Conditions, typ)
	if c == nil || c.ObservedGeneration != s.Generation {
		return "", ""
	}
	return string(c.Status), c.Reason
}

func (op *operator) waitCondition(t *testing.T, ns, name, typ, status, reason string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s=%s/%s", typ, status, reason), func() (bool, string) {
		s, r := op.condition(t, ns, name, typ)
		return s == status && r == reason, s + "/" + r
	})
}

// makeAvailable plays the Deployment controller and kubelet, which envtest does not run.
func (op *operator) makeAvailable(t *testing.T, ns, name string) {
	t.Helper()
	var d appsv1.Deployment
	eventually(t, "the proxy Deployment", func() (bool, string) {
		err := op.env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: render.Name(name)}, &d)
		return err == nil, fmt.Sprint(err)
	})
	replicas := *d.Spec.Replicas
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: replicas, UpdatedReplicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas}
	if err := op.env.Client.Status().Update(t.Context(), &d); err != nil {
		t.Fatal(err)
	}
}

// newServer is an MCPServer with a shared bucket on Redis, changed by mut.
func newServer(ns, name string, mut func(*v1alpha1.MCPServerSpec)) *v1alpha1.MCPServer {
	s := &v1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.MCPServerSpec{
			Upstream:       v1alpha1.UpstreamSpec{URL: "http://search:9000/mcp"},
			SessionStorage: &v1alpha1.SessionStorageConfig{Provider: v1alpha1.SessionStorageRedis, Address: "redis:6379"},
			RateLimiting:   &v1alpha1.RateLimitConfig{Shared: &v1alpha1.RateLimitBucket{MaxTokens: 10, RefillPeriod: metav1.Duration{Duration: time.Minute}}},
		},
	}
	if mut != nil {
		mut(&s.Spec)
	}
	return s
}

func configHash(t *testing.T, c client.Client, ns, name string) string {
	var d appsv1.Deployment
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: render.Name(name)}, &d); err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template.Annotations[render.ConfigHashAnnotation]
}

// TestOperatorOnAPIServer walks one MCPServer through its life on a real kube-apiserver.
func TestOperatorOnAPIServer(t *testing.T) {
	op := startOperator(t)
	c := op.env.Client
	ctx := t.Context()
	ns := op.env.Namespace(t)

	s := newServer(ns, "search", func(s *v1alpha1.MCPServerSpec) {
		s.SessionStorage.PasswordRef = &v1alpha1.SecretKeyReference{Name: "redis", Key: "password"}
	})
	if err := c.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	// The Secret is missing: Ready False with its reason, nothing created yet.
	op.waitCondition(t, ns, "search", v1alpha1.ConditionReady, "False", v1alpha1.ReasonSecretNotFound)
	op.waitCondition(t, ns, "search", v1alpha1.ConditionRateLimitConfigValid, "True", v1alpha1.ReasonRateLimitConfigValid)

	// The Secret appears: the server re-reconciles through the metadata watch.
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "redis", Namespace: ns}, StringData: map[string]string{"password": "x"}}); err != nil {
		t.Fatal(err)
	}
	op.waitCondition(t, ns, "search", v1alpha1.ConditionReferencesResolved, "True", v1alpha1.ReasonReferencesResolved)
	for _, obj := range []client.Object{&corev1.ConfigMap{}, &appsv1.Deployment{}, &corev1.Service{}} {
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "search-proxy"}, obj); err != nil {
			t.Fatalf("%T: %v", obj, err)
		}
		if !metav1.IsControlledBy(obj, op.server(t, ns, "search")) {
			t.Errorf("%T is not owned by the MCPServer", obj)
		}
	}
	op.waitCondition(t, ns, "search", v1alpha1.ConditionReady, "False", v1alpha1.ReasonProxyProgressing)
	op.makeAvailable(t, ns, "search")
	op.waitCondition(t, ns, "search", v1alpha1.ConditionReady, "True", v1alpha1.ReasonReady)
	if got := op.server(t, ns, "search"); got.Status.ObservedGeneration != got.Generation || got.Status.URL == "" {
		t.Errorf("status: observedGeneration %d of %d, url %q", got.Status.ObservedGeneration, got.Generation, got.Status.URL)
	}

	// Steady state: nothing to write. Touch an annotation (a reconcile, same generation).
	op.settle(t)
	op.writes.Store(0)
	cur := op.server(t, ns, "search")
	cur.Annotations = map[string]string{"touched": "yes"}
	if err := c.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if n := op.writes.Load(); n != 0 {
		t.Errorf("steady state: the operator sent %d mutating requests, want 0 (last: %v)", n, lastWrite.Load())
	}

	// A new rate limit: the ConfigMap changes, the config hash does not (no pod roll).
	hash := configHash(t, c, ns, "search")
	cur = op.server(t, ns, "search")
	cur.Spec.RateLimiting.Shared.MaxTokens = 42
	if err := c.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new limit in the ConfigMap", func() (bool, string) {
		var cm corev1.ConfigMap
		_ = c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "search-proxy"}, &cm)
		return containsLine(cm.Data[render.ConfigKey], "maxTokens: 42"), cm.Data[render.ConfigKey]
	})
	if got := configHash(t, c, ns, "search"); got != hash {
		t.Errorf("a rate-limit change rolled the pods: hash %s → %s", hash, got)
	}
	// A new upstream needs a restart: the hash changes.
	cur = op.server(t, ns, "search")
	cur.Spec.Upstream.URL = "http://search-v2:9000/mcp"
	if err := c.Update(ctx, cur); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a new config hash", func() (bool, string) { h := configHash(t, c, ns, "search"); return h != hash, h })

	// A hand edit is reverted; a deleted Deployment comes back.
	var d appsv1.Deployment
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "search-proxy"}, &d); err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Spec.Containers[0].Image = "evil:latest"
	if err := c.Update(ctx, &d); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the image edit reverted", func() (bool, string) {
		_ = c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "search-proxy"}, &d)
		img := d.Spec.Template.Spec.Containers[0].Image
		return img == "proxy:test", img
	})
	if err := c.Delete(ctx, &d); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Deployment re-created", func() (bool, string) {
		var nd appsv1.Deployment
		err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "search-proxy"}, &nd)
		return err == nil && nd.UID != d.UID, fmt.Sprint(err)
	})
}

// TestReferencedConfigMapChange: editing a referenced ConfigMap re-renders exactly the
// servers that use it, and header auth gets its NetworkPolicy.
func TestReferencedConfigMapChange(t *testing.T) {
	op := startOperator(t)
	c := op.env.Client
	ctx := t.Context()
	ns := op.env.Namespace(t)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: ns}, Data: map[string]string{"userHeader": "X-User"}}
	if err := c.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	s := newServer(ns, "gated", func(s *v1alpha1.MCPServerSpec) {
		s.ExternalAuthConfigRef = &v1alpha1.ConfigMapReference{Name: "gw"}
		s.RateLimiting.PerUser = &v1alpha1.RateLimitBucket{MaxTokens: 2, RefillPeriod: metav1.Duration{Duration: time.Minute}}
	})
	if err := c.Create(ctx, s); err != nil {
		t.Fatal(err)
	}
	proxyConfig := func() string {
		var got corev1.ConfigMap
		_ = c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "gated-proxy"}, &got)
		return got.Data[render.ConfigKey]
	}
	eventually(t, "the header in the proxy config", func() (bool, string) { return containsLine(proxyConfig(), "name: X-User"), proxyConfig() })
	// Applied after the ConfigMap, Deployment and Service: wait for it too.
	eventually(t, "the NetworkPolicy of a header-trusting proxy", func() (bool, string) {
		var np networkingv1.NetworkPolicy
		err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "gated-proxy"}, &np)
		return err == nil, fmt.Sprint(err)
	})
	cm.Data["userHeader"] = "X-Forwarded-User"
	if err := c.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new header in the proxy config", func() (bool, string) {
		return containsLine(proxyConfig(), "name: X-Forwarded-User"), proxyConfig()
	})
}

// TestScale200: 200 MCPServers converge, then the operator makes no write at steady state.
func TestScale200(t *testing.T) {
	op := startOperator(t)
	c := op.env.Client
	ctx := t.Context()
	ns := op.env.Namespace(t)
	const n = 200
	start := time.Now()
	for i := range n {
		if err := c.Create(ctx, newServer(ns, fmt.Sprintf("s%03d", i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "200 servers reconciled", func() (bool, string) {
		var list v1alpha1.MCPServerList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		done := 0
		for _, s := range list.Items {
			if cond := meta.FindStatusCondition(s.Status.Conditions, v1alpha1.ConditionReferencesResolved); cond != nil && cond.Status == metav1.ConditionTrue {
				var d appsv1.Deployment
				if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: render.Name(s.Name)}, &d); err == nil {
					done++
				} else if !apierrors.IsNotFound(err) {
					return false, err.Error()
				}
			}
		}
		return done == n, fmt.Sprintf("%d of %d", done, n)
	})
	converged := time.Since(start)
	op.settle(t)
	op.writes.Store(0)
	time.Sleep(5 * time.Second)
	t.Logf("%d MCPServers converged in %s (3 objects and a status each); %d writes in the 5 s after", n, converged.Round(time.Millisecond), op.writes.Load())
	if w := op.writes.Load(); w != 0 {
		t.Errorf("steady state with %d servers: %d mutating requests in 5 s, want 0", n, w)
	}
}

func containsLine(s, sub string) bool {
	for _, l := range splitLines(s) {
		if trimmed := trimSpace(l); trimmed == sub || len(trimmed) > len(sub) && trimmed[len(trimmed)-len(sub):] == sub {
			return true
		}
	}
	return false
}

func splitLines(s string) []string { return strings.Split(s, "\n") }
func trimSpace(s string) string    { return strings.TrimSpace(s) }
