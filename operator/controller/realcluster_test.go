package controller_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/envtest"
	"github.com/tollgate-dev/tollgate/operator/render"
)

// The findings of a trial in a real cluster, each on a real API server with the operator as
// its service account.

func proxyConfigOf(t *testing.T, c client.Client, ns, name string) (*v1alpha1.ProxyConfig, error) {
	t.Helper()
	var cm corev1.ConfigMap
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: render.Name(name)}, &cm); err != nil {
		return nil, err
	}
	var pc v1alpha1.ProxyConfig
	if err := yaml.UnmarshalStrict([]byte(cm.Data[render.ConfigKey]), &pc); err != nil {
		return nil, err
	}
	return &pc, nil
}

// TestReferencedValuesValidated: a gateway ConfigMap whose trustedProxies is not a CIDR would
// be rendered into a config the proxy refuses (and a NetworkPolicy the API server refuses): the
// operator renders nothing, and says why, stalled.
func TestReferencedValuesValidated(t *testing.T) {
	op := startOperator(t)
	c := op.env.Client
	ns := op.env.Namespace(t)
	gw := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "gw", Namespace: ns}, Data: map[string]string{"userHeader": "X-User", "trustedProxies": "10.0.0.0/33"}}
	if err := c.Create(t.Context(), gw); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(t.Context(), newServer(ns, "gated", func(s *v1alpha1.MCPServerSpec) {
		s.ExternalAuthConfigRef = &v1alpha1.ConfigMapReference{Name: "gw"}
	})); err != nil {
		t.Fatal(err)
	}
	op.waitCondition(t, ns, "gated", v1alpha1.ConditionReady, "False", v1alpha1.ReasonInvalidConfig)
	op.waitCondition(t, ns, "gated", v1alpha1.ConditionStalled, "True", v1alpha1.ReasonInvalidConfig)
	if s := op.server(t, ns, "gated"); !strings.Contains(conditionMessage(s, v1alpha1.ConditionReady), `trustedProxies[0] "10.0.0.0/33": not a CIDR`) {
		t.Errorf("Ready's message does not name the field: %q", conditionMessage(s, v1alpha1.ConditionReady))
	}
	var d appsv1.Deployment
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: render.Name("gated")}, &d); !apierrors.IsNotFound(err) {
		t.Errorf("a proxy was deployed with a config it refuses: %v", err)
	}
	// Fixed in the ConfigMap: the watch re-reconciles, and it is rendered.
	gw.Data["trustedProxies"] = "10.0.0.0/8"
	if err := c.Update(t.Context(), gw); err != nil {
		t.Fatal(err)
	}
	op.waitCondition(t, ns, "gated", v1alpha1.ConditionStalled, "False", v1alpha1.ReasonNotStalled)
}

func conditionMessage(s *v1alpha1.MCPServer, typ string) string {
	for _, c := range s.Status.Conditions {
		if c.Type == typ {
			return c.Message
		}
	}
	return ""
}

// TestScaledToZeroNotReady: replicas 0 is not "enforcing the declared limits".
func TestScaledToZeroNotReady(t *testing.T) {
	op := startOperator(t)
	ns := op.env.Namespace(t)
	zero := int32(0)
	if err := op.env.Client.Create(t.Context(), newServer(ns, "idle", func(s *v1alpha1.MCPServerSpec) {
		s.Proxy = &v1alpha1.ProxySpec{Replicas: &zero}
	})); err != nil {
		t.Fatal(err)
	}
	op.makeAvailable(t, ns, "idle") // zero of zero available
	op.waitCondition(t, ns, "idle", v1alpha1.ConditionReady, "False", v1alpha1.ReasonProxyScaledToZero)
	op.waitCondition(t, ns, "idle", v1alpha1.ConditionStalled, "False", v1alpha1.ReasonNotStalled)
}

// TestMemoryStoreRecreate: the memory store's buckets live in its one pod; a rolling update
// would run two pods with a bucket set each. Recreate, also when a server moves to memory.
func TestMemoryStoreRecreate(t *testing.T) {
	op := startOperator(t)
	c := op.env.Client
	ns := op.env.Namespace(t)
	s := newServer(ns, "mem", nil)
	if err := c.Create(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	strategy := func() appsv1.DeploymentStrategyType {
		var d appsv1.Deployment
		_ = c.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: render.Name("mem")}, &d)
		return d.Spec.Strategy.Type
	}
	eventually(t, "a RollingUpdate Deployment (redis)", func() (bool, string) {
		return strategy() == appsv1.RollingUpdateDeploymentStrategyType, string(strategy())
	})
	// The operator writes the status meanwhile: a read-then-update may meet a newer
	// resourceVersion, and is then read and made again, as any client of the API does.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s = op.server(t, ns, "mem")
		s.Spec.SessionStorage = &v1alpha1.SessionStorageConfig{Provider: v1alpha1.SessionStorageMemory}
		return c.Update(t.Context(), s)
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Recreate once the store is memory", func() (bool, string) { return strategy() == appsv1.RecreateDeploymentStrategyType, string(strategy()) })
	op.settle(t)
	if _, r := op.condition(t, ns, "mem", v1alpha1.ConditionReady); r == v1alpha1.ReasonApplyFailed {
		t.Errorf("Ready is ApplyFailed after the move to memory")
	}
}

// TestForeignConfigMapKeyRemoved: the operator owns its ConfigMap's data. A key someone else
// adds is removed, and the operator then stays quiet (no patch loop).
func TestForeignConfigMapKeyRemoved(t *testing.T) {
	op := startOperator(t)
	c := op.env.Client
	ns := op.env.Namespace(t)
	if err := c.Create(t.Context(), newServer(ns, "owned", nil)); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: ns, Name: render.Name("owned")}
	var cm corev1.ConfigMap
	eventually(t, "the proxy ConfigMap", func() (bool, string) { err := c.Get(t.Context(), key, &cm); return err == nil, fmt.Sprint(err) })
	op.settle(t)
	patch := client.MergeFrom(cm.DeepCopy())
	cm.Data["extra"] = "added by someone else"
	if err := c.Patch(t.Context(), &cm, patch, client.FieldOwner("someone-else")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the foreign key removed", func() (bool, string) {
		var got corev1.ConfigMap
		_ = c.Get(t.Context(), key, &got)
		_, ok := got.Data["extra"]
		return !ok, fmt.Sprint(got.Data)
	})
	op.settle(t)
	before := op.writes.Load()
	time.Sleep(3 * time.Second)
	if n := op.writes.Load() - before; n != 0 {
		t.Errorf("%d writes after convergence: a patch loop", n)
	}
}

// TestEditsMakeNoReconcileErrors: ordinary edits in quick succession never surface as
// reconcile errors (an optimistic-lock conflict on the status was one).
func TestEditsMakeNoReconcileErrors(t *testing.T) {
	op := startOperator(t)
	c := op.env.Client
	ns := op.env.Namespace(t)
	if err := c.Create(t.Context(), newServer(ns, "busy", nil)); err != nil {
		t.Fatal(err)
	}
	errorsBefore := reconcileErrors(t)
	for i := range 15 {
		s := op.server(t, ns, "busy")
		patch := client.MergeFrom(s.DeepCopy()) // as kubectl edit does: no resourceVersion to conflict on
		s.Spec.RateLimiting.Shared.MaxTokens = int32(10 + i)
		if err := c.Patch(t.Context(), s, patch); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	op.settle(t)
	if n := reconcileErrors(t) - errorsBefore; n != 0 {
		t.Errorf("%v reconcile errors during 15 ordinary edits", n)
	}
	if s := op.server(t, ns, "busy"); s.Status.ObservedGeneration != s.Generation {
		t.Errorf("status at generation %d, object at %d", s.Status.ObservedGeneration, s.Generation)
	}
}

// reconcileErrors sums controller-runtime's reconcile error counter (all controllers of the
// process; the tests run one at a time).
func reconcileErrors(t *testing.T) float64 {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == "controller_runtime_reconcile_errors_total" {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// TestOneEventPerReconcile: creating a server records one event naming what was created,
// not one per object folded into one series.
func TestOneEventPerReconcile(t *testing.T) {
	op := startOperator(t)
	c := op.env.Client
	ns := op.env.Namespace(t)
	if err := c.Create(t.Context(), newServer(ns, "quiet", nil)); err != nil {
		t.Fatal(err)
	}
	op.settle(t)
	// The recorder writes events asynchronously: wait for the first, then see that it is the
	// only one.
	var notes []string
	created := func() (bool, string) {
		var list eventsv1.EventList
		if err := c.List(t.Context(), &list, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		notes = notes[:0]
		for _, e := range list.Items {
			if e.Reason == "Created" {
				notes = append(notes, e.Note)
			}
		}
		return len(notes) > 0, fmt.Sprint(notes)
	}
	eventually(t, "a Created event", created)
	op.settle(t)
	created()
	if len(notes) != 1 || notes[0] != "Created ConfigMap, Deployment, Service" {
		t.Errorf("Created events: %q, want one naming the ConfigMap, Deployment and Service", notes)
	}
}

// TestDefenseInDepthRendersWhatTheProxyAccepts: with the CEL rule out of the way (an old CRD,
// an object stored before the rule), a per-user limit without authentication — here a tool
// with nothing but a per-user bucket, and no other limit — still renders a config the proxy
// accepts: the per-user buckets (and the entries left empty) are dropped, and the conditions
// say so.
func TestDefenseInDepthRendersWhatTheProxyAccepts(t *testing.T) {
	env := envtest.Start(t) // its own control plane: the CRD is changed
	var crd apiextensionsv1.CustomResourceDefinition
	if err := env.Client.Get(t.Context(), types.NamespacedName{Name: "mcpservers.tollgate.dev"}, &crd); err != nil {
		t.Fatal(err)
	}
	spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	var kept []apiextensionsv1.ValidationRule
	for _, r := range spec.XValidations {
		if !strings.Contains(r.Message, "requires authentication") {
			kept = append(kept, r)
		}
	}
	spec.XValidations = kept
	crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"] = spec
	if err := env.Client.Update(t.Context(), &crd); err != nil {
		t.Fatal(err)
	}
	op := startOperatorOn(t, env)
	ns := env.Namespace(t)
	perUser := &v1alpha1.RateLimitBucket{MaxTokens: 1, RefillPeriod: metav1.Duration{Duration: time.Minute}}
	s := newServer(ns, "bypass", func(s *v1alpha1.MCPServerSpec) {
		s.RateLimiting = &v1alpha1.RateLimitConfig{Tools: []v1alpha1.ToolRateLimitConfig{{Name: "search", PerUser: perUser}}}
	})
	eventually(t, "the object admitted around the rule", func() (bool, string) {
		err := env.Client.Create(t.Context(), s.DeepCopy())
		return err == nil || apierrors.IsAlreadyExists(err), fmt.Sprint(err)
	})
	op.waitCondition(t, ns, "bypass", v1alpha1.ConditionRateLimitConfigValid, "False", v1alpha1.ReasonPerUserRequiresAuth)
	op.waitCondition(t, ns, "bypass", v1alpha1.ConditionStalled, "True", v1alpha1.ReasonPerUserRequiresAuth)
	var pc *v1alpha1.ProxyConfig
	eventually(t, "the rendered proxy config", func() (bool, string) {
		var err error
		pc, err = proxyConfigOf(t, env.Client, ns, "bypass")
		return err == nil, fmt.Sprint(err)
	})
	pc.Default()
	if err := pc.Validate(); err != nil {
		t.Errorf("the proxy would refuse the config rendered on the defense-in-depth path: %v", err)
	}
	if pc.RateLimiting != nil {
		t.Errorf("rendered rateLimiting %+v; nothing of it is enforceable without an identity", pc.RateLimiting)
	}
}
