package envtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func validServer(ns string) *v1alpha1.MCPServer {
	return &v1alpha1.MCPServer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "search"},
		Spec: v1alpha1.MCPServerSpec{
			Upstream:       v1alpha1.UpstreamSpec{URL: "http://search:8080/mcp"},
			SessionStorage: &v1alpha1.SessionStorageConfig{Provider: v1alpha1.SessionStorageMemory},
			RateLimiting: &v1alpha1.RateLimitConfig{
				Shared: &v1alpha1.RateLimitBucket{MaxTokens: 10, RefillPeriod: metav1.Duration{Duration: time.Minute}},
			},
		},
	}
}

// TestShared exercises what the operator's tests rely on: the CRD established, typed
// clients through the scheme, defaulting, CEL admission and the status subresource.
func TestShared(t *testing.T) {
	env := Shared(t)
	if again := Shared(t); again != env {
		t.Fatalf("Shared returned %p, then %p: want one control plane per test binary", env, again)
	}
	ctx := t.Context()
	ns := env.Namespace(t)

	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "mcpservers.tollgate.dev"}, crd); err != nil {
		t.Fatalf("get CRD: %v", err)
	}
	established := false
	for _, c := range crd.Status.Conditions {
		established = established || (c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue)
	}
	if !established {
		t.Errorf("CRD mcpservers.tollgate.dev not Established: %+v", crd.Status.Conditions)
	}

	s := validServer(ns)
	if err := env.Client.Create(ctx, s); err != nil {
		t.Fatalf("create a valid MCPServer: %v", err)
	}
	if s.Spec.RateLimiting.FailurePolicy != v1alpha1.FailurePolicyAllow {
		// The client decodes the server's answer into s: the schema's defaults are in it.
		t.Errorf("created object not defaulted by the server: rateLimiting %+v", s.Spec.RateLimiting)
	}

	// The status subresource: a status update keeps the spec, sets the status.
	s.Status.ObservedGeneration = s.Generation
	meta.SetStatusCondition(&s.Status.Conditions, metav1.Condition{
		Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: "Testing", Message: "set by TestShared",
	})
	if err := env.Client.Status().Update(ctx, s); err != nil {
		t.Fatalf("status update: %v", err)
	}
	got := &v1alpha1.MCPServer{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(s), got); err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Reason != "Testing" {
		t.Errorf("status after the update: %+v", got.Status)
	}

	// CEL admission: memory storage with three replicas.
	bad := validServer(ns)
	bad.Name = "bad"
	replicas := int32(3)
	bad.Spec.Proxy = &v1alpha1.ProxySpec{Replicas: &replicas}
	err := env.Client.Create(ctx, bad)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "proxy.replicas must be at most 1") {
		t.Errorf("create with memory storage and 3 replicas: got %v, want the CEL rule's message", err)
	}
}

// TestStart starts a control plane of the test's own, apart from the shared one.
func TestStart(t *testing.T) {
	env := Start(t)
	ns := env.Namespace(t)
	if err := env.Client.Create(context.Background(), validServer(ns)); err != nil {
		t.Fatalf("create a valid MCPServer: %v", err)
	}
	if len(env.CRDs) == 0 {
		t.Error("no CRDs installed")
	}
}

func TestNamespacePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"TestShared":                           "testshared-",
		"TestAPIServer/Case_One":               "testapiserver-case-one-",
		"42":                                   "t42-",
		"":                                     "t-",
		strings.Repeat("Ab-", 30):              "ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-ab-",
		"Test/" + strings.Repeat("x", 60) + "": "test-" + strings.Repeat("x", 34) + "-",
	} {
		if got := namespacePrefix(in); got != want {
			t.Errorf("namespacePrefix(%q) = %q, want %q", in, got, want)
		}
		if got := namespacePrefix(in); len(got) > 40 {
			t.Errorf("namespacePrefix(%q) = %q: longer than 40", in, got)
		}
	}
}

func TestAssetsDir(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KUBEBUILDER_ASSETS", dir)
	if _, err := AssetsDir(); err == nil || !strings.Contains(err.Error(), "no kube-apiserver or etcd in "+dir) {
		t.Errorf("AssetsDir() in an empty folder: err = %v", err)
	}
	for _, name := range []string{"kube-apiserver", "etcd"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := AssetsDir(); err != nil || got != dir {
		t.Errorf("AssetsDir() = %q, %v; want %q", got, err, dir)
	}
	if err := os.Chmod(filepath.Join(dir, "etcd"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := AssetsDir(); err == nil || !strings.Contains(err.Error(), "no etcd in") {
		t.Errorf("AssetsDir() with etcd not executable: err = %v", err)
	}

	// Unset: the repository's bin/k8s.
	t.Setenv("KUBEBUILDER_ASSETS", "")
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "hack", "envtest.sh")); err != nil {
		t.Errorf("repoRoot() = %s, which has no hack/envtest.sh", root)
	}
	if _, err := AssetsDir(); err != nil && !strings.Contains(err.Error(), filepath.Join(root, "bin", "k8s")) {
		t.Errorf("AssetsDir() without KUBEBUILDER_ASSETS: %v; want it to look in %s", err, filepath.Join(root, "bin", "k8s"))
	}
}

func TestCRDs(t *testing.T) {
	crds, err := CRDs()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range crds {
		names = append(names, c.Name)
	}
	if !strings.Contains(strings.Join(names, ","), "mcpservers.tollgate.dev") {
		t.Errorf("CRDs() = %v, want mcpservers.tollgate.dev among them", names)
	}
}
