package controller

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/operator/render"
)

func scheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func mcpServer(mut func(*v1alpha1.MCPServerSpec)) *v1alpha1.MCPServer {
	s := &v1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Name: "search", Namespace: "tools", Generation: 1},
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

// harness is a Reconciler on the fake client, counting every mutating request.
type harness struct {
	r      *Reconciler
	c      client.Client
	writes atomic.Int64
}

func newHarness(t *testing.T, objs ...client.Object) *harness {
	h := &harness{}
	count := func() { h.writes.Add(1) }
	h.c = fake.NewClientBuilder().WithScheme(scheme(t)).WithObjects(objs...).
		WithStatusSubresource(&v1alpha1.MCPServer{}).
		WithIndex(&v1alpha1.MCPServer{}, indexConfigMaps, func(o client.Object) []string { return configMapNames(o.(*v1alpha1.MCPServer)) }).
		WithIndex(&v1alpha1.MCPServer{}, indexSecrets, func(o client.Object) []string { return secretNames(o.(*v1alpha1.MCPServer)) }).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
				count()
				return c.Create(ctx, o, opts...)
			},
			Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
				count()
				return c.Update(ctx, o, opts...)
			},
			Patch: func(ctx context.Context, c client.WithWatch, o client.Object, p client.Patch, opts ...client.PatchOption) error {
				count()
				return c.Patch(ctx, o, p, opts...)
			},
			Apply: func(ctx context.Context, c client.WithWatch, o runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
				count()
				return c.Apply(ctx, o, opts...)
			},
			Delete: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.DeleteOption) error {
				count()
				return c.Delete(ctx, o, opts...)
			},
			SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, o client.Object, opts ...client.SubResourceUpdateOption) error {
				count()
				return c.SubResource(sub).Update(ctx, o, opts...)
			},
		}).Build()
	h.r = &Reconciler{Client: h.c, Scheme: h.c.Scheme(), ProxyImage: "proxy:test"}
	return h
}

func (h *harness) reconcile(t *testing.T) *v1alpha1.MCPServer {
	t.Helper()
	key := types.NamespacedName{Namespace: "tools", Name: "search"}
	if _, err := h.r.Reconcile(t.Context(), ctrl.Request{NamespacedName: key}); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	var s v1alpha1.MCPServer
	if err := h.c.Get(t.Context(), key, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// conds reduces conditions to type=status/reason, the part tests pin.
func conds(s *v1alpha1.MCPServer) map[string]string {
	out := map[string]string{}
	for _, c := range s.Status.Conditions {
		out[c.Type] = string(c.Status) + "/" + c.Reason
		if c.ObservedGeneration != s.Generation {
			out[c.Type] += " (stale generation)"
		}
	}
	return out
}

// makeAvailable plays the kubelet and the Deployment controller.
func (h *harness) makeAvailable(t *testing.T) {
	t.Helper()
	var d appsv1.Deployment
	if err := h.c.Get(t.Context(), types.NamespacedName{Namespace: "tools", Name: render.Name("search")}, &d); err != nil {
		t.Fatal(err)
	}
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1}
	if err := h.c.Status().Update(t.Context(), &d); err != nil {
		t.Fatal(err)
	}
}

func TestReconcileConditions(t *testing.T) {
	perUser := &v1alpha1.RateLimitBucket{MaxTokens: 1, RefillPeriod: metav1.Duration{Duration: time.Minute}}
	cases := map[string]struct {
		reason    string
		server    *v1alpha1.MCPServer
		objs      []client.Object
		available bool
		want      map[string]string
		wantTiers []string // the tiers of the rendered ProxyConfig
	}{
		"ValidAndAvailable": {
			reason: "A valid server whose proxy is available is Ready.", server: mcpServer(nil), available: true,
			want: map[string]string{"RateLimitConfigValid": "True/RateLimitConfigValid", "ReferencesResolved": "True/ReferencesResolved", "ProxyAvailable": "True/ProxyAvailable", "Ready": "True/Ready", "Stalled": "False/NotStalled"},
		},
		"ProxyNotYetAvailable": {
			reason: "Until the Deployment reports available replicas, Ready is False (InProgress, not Stalled).", server: mcpServer(nil),
			want: map[string]string{"RateLimitConfigValid": "True/RateLimitConfigValid", "ReferencesResolved": "True/ReferencesResolved", "ProxyAvailable": "False/ProxyProgressing", "Ready": "False/ProxyProgressing", "Stalled": "False/NotStalled"},
		},
		"NotApplicable": {
			reason: "No rateLimiting is trivially valid: True/RateLimitNotApplicable, not an error.", available: true,
			server: mcpServer(func(s *v1alpha1.MCPServerSpec) { s.RateLimiting = nil }),
			want:   map[string]string{"RateLimitConfigValid": "True/RateLimitNotApplicable", "ReferencesResolved": "True/ReferencesResolved", "ProxyAvailable": "True/ProxyAvailable", "Ready": "True/Ready", "Stalled": "False/NotStalled"},
		},
		"PerUserWithoutAuth": {
			reason: "perUser without authentication (admitted around CEL): False/PerUserRequiresAuth, Ready False, Stalled; reconciliation goes on.", available: true,
			server: mcpServer(func(s *v1alpha1.MCPServerSpec) { s.RateLimiting.PerUser = perUser }),
			want:   map[string]string{"RateLimitConfigValid": "False/PerUserRequiresAuth", "ReferencesResolved": "True/ReferencesResolved", "ProxyAvailable": "True/ProxyAvailable", "Ready": "False/PerUserRequiresAuth", "Stalled": "True/PerUserRequiresAuth"},
		},
		// (The fake client's server-side apply cannot merge NetworkPolicies — "expected objects
		// with types from the same schema" — so external auth, which renders one, is tested on
		// a real API server.)
		"PerUserWithAuth": {
			reason: "perUser with an OIDC ConfigMap is valid.", available: true,
			server: mcpServer(func(s *v1alpha1.MCPServerSpec) {
				s.RateLimiting.PerUser = perUser
				s.OIDCConfigRef = &v1alpha1.ConfigMapReference{Name: "oidc"}
			}),
			objs: []client.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "oidc", Namespace: "tools"}, Data: map[string]string{"issuer": "https://login", "audience": "mcp"}}},
			want: map[string]string{"RateLimitConfigValid": "True/RateLimitConfigValid", "ReferencesResolved": "True/ReferencesResolved", "ProxyAvailable": "True/ProxyAvailable", "Ready": "True/Ready", "Stalled": "False/NotStalled"},
		},
		"PerUserOnlyToolWithoutAuth": {
			reason: "A tool with only a perUser bucket, without authentication: the tool is dropped from what is rendered (a tool with no bucket would be refused by the proxy), the rest enforced.", available: true,
			server: mcpServer(func(s *v1alpha1.MCPServerSpec) {
				s.RateLimiting.Shared = nil
				s.RateLimiting.Tools = []v1alpha1.ToolRateLimitConfig{{Name: "a", PerUser: perUser}, {Name: "b", Shared: perUser}}
			}),
			want: map[string]string{"RateLimitConfigValid": "False/PerUserRequiresAuth", "ReferencesResolved": "True/ReferencesResolved", "ProxyAvailable": "True/ProxyAvailable", "Ready": "False/PerUserRequiresAuth", "Stalled": "True/PerUserRequiresAuth"},
		},
		"ClaimTierWithOIDC": {
			reason: "A claim tier with OIDC is valid and rendered as written.", available: true,
			server: mcpServer(func(s *v1alpha1.MCPServerSpec) {
				s.OIDCConfigRef = &v1alpha1.ConfigMapReference{Name: "oidc"}
				s.RateLimiting.Tiers = []v1alpha1.RateLimitTier{{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan", Values: []string{"pro"}}, PerUser: perUser}}
			}),
			objs:      []client.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "oidc", Namespace: "tools"}, Data: map[string]string{"issuer": "https://login", "audience": "mcp"}}},
			want:      map[string]string{"RateLimitConfigValid": "True/RateLimitConfigValid", "ReferencesResolved": "True/ReferencesResolved", "ProxyAvailable": "True/ProxyAvailable", "Ready": "True/Ready", "Stalled": "False/NotStalled"},
			wantTiers: []string{"pro"},
		},
		"HeaderTierWithOIDC": {
			reason: "A header tier under OIDC (admitted around CEL) can never match: False/TierMatchRequiresAuth, the tier dropped from what is rendered, the claim tier and the buckets kept.", available: true,
			server: mcpServer(func(s *v1alpha1.MCPServerSpec) {
				s.OIDCConfigRef = &v1alpha1.ConfigMapReference{Name: "oidc"}
				s.RateLimiting.Tiers = []v1alpha1.RateLimitTier{
					{Name: "gold", Match: v1alpha1.TierMatch{Header: "X-Plan", Values: []string{"gold"}}, PerUser: perUser},
					{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan", Values: []string{"pro"}}, PerUser: perUser},
				}
			}),
			objs:      []client.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "oidc", Namespace: "tools"}, Data: map[string]string{"issuer": "https://login", "audience": "mcp"}}},
			want:      map[string]string{"RateLimitConfigValid": "False/TierMatchRequiresAuth", "ReferencesResolved": "True/ReferencesResolved", "ProxyAvailable": "True/ProxyAvailable", "Ready": "False/TierMatchRequiresAuth", "Stalled": "True/TierMatchRequiresAuth"},
			wantTiers: []string{"pro"},
		},
		"TierWithoutAuth": {
			reason: "Tiers without any authentication: False/PerUserRequiresAuth, no tier rendered.", available: true,
			server: mcpServer(func(s *v1alpha1.MCPServerSpec) {
				s.RateLimiting.Tiers = []v1alpha1.RateLimitTier{{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan", Values: []string{"pro"}}, PerUser: perUser}}
			}),
			want: map[string]string{"RateLimitConfigValid": "False/PerUserRequiresAuth", "ReferencesResolved": "True/ReferencesResolved", "ProxyAvailable": "True/ProxyAvailable", "Ready": "False/PerUserRequiresAuth", "Stalled": "True/PerUserRequiresAuth"},
		},
		"ScaledToZero": {
			reason: "replicas 0: nothing is enforced, so never Ready; not stalled (it is what the spec asks).", available: true,
			server: mcpServer(func(s *v1alpha1.MCPServerSpec) { s.Proxy = &v1alpha1.ProxySpec{Replicas: ptr(int32(0))} }),
			want:   map[string]string{"RateLimitConfigValid": "True/RateLimitConfigValid", "ReferencesResolved": "True/ReferencesResolved", "ProxyAvailable": "False/ProxyScaledToZero", "Ready": "False/ProxyScaledToZero", "Stalled": "False/NotStalled"},
		},
		"InvalidOIDCValue": {
			reason: "A referenced ConfigMap's value the proxy would refuse (an issuer that is not a URL): InvalidConfig, Stalled, nothing applied.",
			server: mcpServer(func(s *v1alpha1.MCPServerSpec) { s.OIDCConfigRef = &v1alpha1.ConfigMapReference{Name: "oidc"} }),
			objs:   []client.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "oidc", Namespace: "tools"}, Data: map[string]string{"issuer": "login", "audience": "mcp"}}},
			want:   map[string]string{"RateLimitConfigValid": "True/RateLimitConfigValid", "ReferencesResolved": "True/ReferencesResolved", "ProxyAvailable": "False/ProxyUnavailable", "Ready": "False/InvalidConfig", "Stalled": "True/InvalidConfig"},
		},
		"MissingSecret": {
			reason: "A missing Redis password Secret: Ready False with SecretNotFound, not stalled (it may yet be created).",
			server: mcpServer(func(s *v1alpha1.MCPServerSpec) {
				s.SessionStorage.PasswordRef = &v1alpha1.SecretKeyReference{Name: "redis", Key: "password"}
			}),
			want: map[string]string{"RateLimitConfigValid": "True/RateLimitConfigValid", "ReferencesResolved": "False/SecretNotFound", "ProxyAvailable": "False/ProxyUnavailable", "Ready": "False/SecretNotFound", "Stalled": "False/NotStalled"},
		},
		"MissingConfigMap": {
			reason: "A missing OIDC ConfigMap: Ready False with ConfigMapNotFound.",
			server: mcpServer(func(s *v1alpha1.MCPServerSpec) { s.OIDCConfigRef = &v1alpha1.ConfigMapReference{Name: "oidc"} }),
			want:   map[string]string{"RateLimitConfigValid": "True/RateLimitConfigValid", "ReferencesResolved": "False/ConfigMapNotFound", "ProxyAvailable": "False/ProxyUnavailable", "Ready": "False/ConfigMapNotFound", "Stalled": "False/NotStalled"},
		},
		"ConfigMapWithoutKey": {
			reason: "An OIDC ConfigMap without an audience: KeyNotFound.",
			server: mcpServer(func(s *v1alpha1.MCPServerSpec) { s.OIDCConfigRef = &v1alpha1.ConfigMapReference{Name: "oidc"} }),
			objs:   []client.Object{&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "oidc", Namespace: "tools"}, Data: map[string]string{"issuer": "https://login"}}},
			want:   map[string]string{"RateLimitConfigValid": "True/RateLimitConfigValid", "ReferencesResolved": "False/KeyNotFound", "ProxyAvailable": "False/ProxyUnavailable", "Ready": "False/KeyNotFound", "Stalled": "False/NotStalled"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, append(tc.objs, tc.server)...)
			s := h.reconcile(t)
			if tc.available {
				h.makeAvailable(t)
				s = h.reconcile(t)
			}
			if diff := cmp.Diff(tc.want, conds(s)); diff != "" {
				t.Errorf("%s\nconditions: -want +got:\n%s", tc.reason, diff)
			}
			// Whatever was rendered, the proxy accepts: its own validation passes.
			var cm corev1.ConfigMap
			if err := h.c.Get(t.Context(), types.NamespacedName{Namespace: "tools", Name: render.Name("search")}, &cm); err == nil {
				var pc v1alpha1.ProxyConfig
				if err := yaml.UnmarshalStrict([]byte(cm.Data[render.ConfigKey]), &pc); err != nil {
					t.Fatalf("%s\nrendered ProxyConfig: %v", tc.reason, err)
				}
				pc.Default()
				if err := pc.Validate(); err != nil {
					t.Errorf("%s\nthe proxy would refuse the rendered config: %v", tc.reason, err)
				}
				var tiers []string
				if pc.RateLimiting != nil {
					for _, tr := range pc.RateLimiting.Tiers {
						tiers = append(tiers, tr.Name)
					}
				}
				if diff := cmp.Diff(tc.wantTiers, tiers); diff != "" {
					t.Errorf("%s\nrendered tiers: -want +got:\n%s", tc.reason, diff)
				}
			} else if s.Status.Conditions != nil && conds(s)["Ready"] != "False/InvalidConfig" && conds(s)["ReferencesResolved"] == "True/ReferencesResolved" {
				t.Errorf("%s\nno ProxyConfig rendered: %v", tc.reason, err)
			}
			if s.Status.ObservedGeneration != s.Generation || s.Status.URL != "http://search-proxy.tools.svc:8080/mcp" {
				t.Errorf("%s\nstatus: observedGeneration %d (generation %d), url %q", tc.reason, s.Status.ObservedGeneration, s.Generation, s.Status.URL)
			}
		})
	}
}

// TestSteadyStateMakesNoWrites: once converged, a reconcile sends no mutating request.
func TestSteadyStateMakesNoWrites(t *testing.T) {
	h := newHarness(t, mcpServer(nil))
	h.reconcile(t)
	h.makeAvailable(t)
	h.reconcile(t)
	h.writes.Store(0)
	for range 3 {
		h.reconcile(t)
	}
	if n := h.writes.Load(); n != 0 {
		t.Errorf("steady state: %d mutating requests in 3 reconciles, want 0", n)
	}
}

// TestOwnedObjects: the managed objects exist with a controller owner reference, and the
// ConfigMap of a PerUserRequiresAuth server holds only the enforceable limits.
func TestOwnedObjects(t *testing.T) {
	h := newHarness(t, mcpServer(func(s *v1alpha1.MCPServerSpec) {
		s.RateLimiting.PerUser = &v1alpha1.RateLimitBucket{MaxTokens: 1, RefillPeriod: metav1.Duration{Duration: time.Minute}}
	}))
	s := h.reconcile(t)
	for _, obj := range []client.Object{&corev1.ConfigMap{}, &appsv1.Deployment{}, &corev1.Service{}} {
		if err := h.c.Get(t.Context(), types.NamespacedName{Namespace: "tools", Name: "search-proxy"}, obj); err != nil {
			t.Fatalf("%T: %v", obj, err)
		}
		if !metav1.IsControlledBy(obj, s) {
			t.Errorf("%T is not controlled by the MCPServer: %+v", obj, obj.GetOwnerReferences())
		}
		if cm, ok := obj.(*corev1.ConfigMap); ok && strings.Contains(cm.Data[render.ConfigKey], "perUser") {
			t.Errorf("the proxy config holds a perUser bucket it cannot enforce:\n%s", cm.Data[render.ConfigKey])
		}
	}
}

// TestDriftReverted: a hand edit of the Deployment is put back.
func TestDriftReverted(t *testing.T) {
	h := newHarness(t, mcpServer(nil))
	h.reconcile(t)
	var d appsv1.Deployment
	key := types.NamespacedName{Namespace: "tools", Name: "search-proxy"}
	if err := h.c.Get(t.Context(), key, &d); err != nil {
		t.Fatal(err)
	}
	five := int32(5)
	d.Spec.Replicas = &five
	d.Spec.Template.Spec.Containers[0].Image = "evil:latest"
	if err := h.c.Update(t.Context(), &d); err != nil {
		t.Fatal(err)
	}
	h.reconcile(t)
	if err := h.c.Get(t.Context(), key, &d); err != nil {
		t.Fatal(err)
	}
	got := struct {
		Replicas int32
		Image    string
	}{*d.Spec.Replicas, d.Spec.Template.Spec.Containers[0].Image}
	if diff := cmp.Diff(struct {
		Replicas int32
		Image    string
	}{1, "proxy:test"}, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("drift not reverted: -want +got:\n%s", diff)
	}
}

func ptr[T any](v T) *T { return &v }

// staleCache plays the manager's cache before the watch event of the reconcile's own write
// arrives: reads of the Deployment return it as it was. Its Apply plays the API server's
// part that the fake client leaves out: a Deployment's new spec is a new generation in the
// answer.
type staleCache struct {
	client.Client
	deployment *appsv1.Deployment
}

func (c staleCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if d, ok := obj.(*appsv1.Deployment); ok && key.Name == c.deployment.Name {
		c.deployment.DeepCopyInto(d)
		return nil
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

func (c staleCache) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	if err := c.Client.Apply(ctx, obj, opts...); err != nil {
		return err
	}
	if u, ok := obj.(interface {
		GetKind() string
		SetGeneration(int64)
	}); ok && u.GetKind() == "Deployment" {
		u.SetGeneration(c.deployment.Generation + 1)
	}
	return nil
}

// TestReadyNotFromAStaleCache: a reconcile that rolls the proxy (a new upstream) must not
// read the old Deployment's status from a cache that has not seen the write, and say Ready
// for a spec the proxy does not run yet. Found by the end-to-end tests (internal/e2e): kstatus
// Current and Argo CD Healthy for a few milliseconds before the restart.
func TestReadyNotFromAStaleCache(t *testing.T) {
	h := newHarness(t, mcpServer(nil))
	h.reconcile(t)
	h.makeAvailable(t)
	s := h.reconcile(t)
	if got := conds(s)["Ready"]; got != "True/Ready" {
		t.Fatalf("Ready before the change: %s", got)
	}
	var old appsv1.Deployment
	if err := h.c.Get(t.Context(), types.NamespacedName{Namespace: "tools", Name: render.Name("search")}, &old); err != nil {
		t.Fatal(err)
	}
	s.Spec.Upstream.URL = "http://search-v2:9000/mcp" // in the config hash: a new pod template
	s.Generation++
	if err := h.c.Update(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	h.r.Client = staleCache{Client: h.c, deployment: &old}
	s = h.reconcile(t)
	want := map[string]string{"RateLimitConfigValid": "True/RateLimitConfigValid", "ReferencesResolved": "True/ReferencesResolved", "ProxyAvailable": "False/ProxyProgressing", "Ready": "False/ProxyProgressing", "Stalled": "False/NotStalled"}
	if diff := cmp.Diff(want, conds(s)); diff != "" {
		t.Errorf("The status after the write that rolls the proxy, read from a cache that has not seen it: -want +got:\n%s", diff)
	}
}
