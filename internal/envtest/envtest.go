// Package envtest starts a real control plane (kube-apiserver and etcd) for tests, with the
// project's CRDs installed, on top of controller-runtime's envtest.
//
// The binaries come from KUBEBUILDER_ASSETS, else from <repo>/bin/k8s, where
// hack/envtest.sh builds them (no download site is reachable, so setup-envtest cannot
// fetch them). When they are missing the test is skipped with a message saying how to get
// them, or fails under CI=true (see internal/testenv).
//
// A control plane starts in about 3 s. A test binary shares one with Shared and stops it
// in TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(envtest.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		env := envtest.Shared(t)
//		ns := env.Namespace(t) // a fresh namespace isolates the test from the others
//		...
//	}
//
// Start gives a test a control plane of its own, stopped when the test ends, with extra
// kube-apiserver flags if asked (WithAdmissionPlugins, WithAPIServerArg).
//
// The operator's identity: Config is an administrator, which RBAC never refuses, so code run
// with it cannot show a missing verb. AsOperator applies the shipped namespace, ClusterRole
// and binding (manifests/operator/namespace.yaml, manifests/rbac/*.yaml) and returns a
// config that impersonates the operator's ServiceAccount: the API server authorizes every
// request as that account. GrantClusterRole does the same for another role (a variant under
// test), and Denials records what the server refused.
package envtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/testenv"
	"github.com/tollgate-dev/tollgate/manifests"
)

// module is the path of the repository's root module; the repository root is the folder of
// the go.mod that declares it.
const module = "github.com/tollgate-dev/tollgate"

// howToGet tells a developer how to provide the binaries.
const howToGet = "run hack/envtest.sh, which builds kube-apiserver and etcd into bin/k8s (minutes, once), " +
	"or point KUBEBUILDER_ASSETS at a folder that holds both"

// Env is a running control plane with the project's CRDs installed.
type Env struct {
	// Config reaches the API server as a member of system:masters.
	Config *rest.Config
	// Client is a controller-runtime client (no cache) with Scheme. It sends no field
	// validation directive, so the server's default (Warn: unknown fields are dropped) applies;
	// wrap it with client.WithFieldValidation(env.Client, metav1.FieldValidationStrict) to
	// refuse unknown fields as kubectl does.
	Client client.Client
	// Scheme knows the built-in types, CustomResourceDefinitions and api/v1alpha1.
	Scheme *runtime.Scheme
	// CRDs are the installed CustomResourceDefinitions, as the server returned them.
	CRDs []*apiextensionsv1.CustomResourceDefinition
	// AssetsDir is the folder kube-apiserver and etcd were started from.
	AssetsDir string
	// StartTime is how long the control plane took to start and install the CRDs.
	StartTime time.Duration

	env      *crenvtest.Environment
	guard    *deathGuard
	stopOnce sync.Once
	stopErr  error

	// operator is the result of AsOperator's first successful call on this control plane.
	operatorMu sync.Mutex
	operator   *rest.Config
}

// Option changes how Start starts a control plane.
type Option func(*startOptions)

type startOptions struct {
	apiServerArgs []apiServerArg
}

type apiServerArg struct {
	name   string
	values []string
}

// WithAPIServerArg passes --name=value to kube-apiserver, once per value, after envtest's own
// flags.
func WithAPIServerArg(name string, values ...string) Option {
	return func(o *startOptions) { o.apiServerArgs = append(o.apiServerArgs, apiServerArg{name, values}) }
}

// WithAdmissionPlugins enables admission plugins beyond kube-apiserver's default set, e.g.
// OwnerReferencesPermissionEnforcement (on by default on OpenShift). --enable-admission-plugins
// adds to the defaults (NamespaceLifecycle, LimitRanger, ...), which stay enabled; envtest's
// own --disable-admission-plugins=ServiceAccount stays too.
func WithAdmissionPlugins(plugins ...string) Option {
	return WithAPIServerArg("enable-admission-plugins", strings.Join(plugins, ","))
}

// Start starts a control plane for t and stops it when t and its subtests end. It skips t
// (fails it under CI=true) when the binaries are missing, and fails t when the control plane
// does not start or a CRD does not install.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	dir, err := AssetsDir()
	if err != nil {
		testenv.Missing(t, "the envtest control plane (kube-apiserver and etcd)", fmt.Sprintf("%v; %s", err, howToGet))
	}
	var o startOptions
	for _, opt := range opts {
		opt(&o)
	}
	e, err := start(dir, o)
	if err != nil {
		t.Fatalf("envtest: %v", err)
	}
	extra := ""
	for _, a := range o.apiServerArgs {
		extra += fmt.Sprintf(" --%s=%s", a.name, strings.Join(a.values, ","))
	}
	if extra != "" {
		extra = ", kube-apiserver with" + extra
	}
	t.Logf("envtest: control plane from %s started in %v%s", dir, e.StartTime.Round(time.Millisecond), extra)
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("envtest: stop: %v", err)
		}
	})
	return e
}

// shared is the control plane of Shared, started on first use and stopped by Main.
var shared struct {
	sync.Mutex
	env     *Env
	err     error // the error of the one attempt to start it
	missing error // why the binaries are missing
	tried   bool
}

// Shared returns the test binary's shared control plane, starting it on the first call, so
// a binary whose selected tests need none starts none. Use Main in TestMain to stop it.
// Tests that share it must not depend on cluster-wide state others change: give each its
// own namespace (Namespace). When the binaries are missing it skips (fails under CI=true)
// every test that asks; when the one attempt to start failed it fails every such test.
func Shared(t testing.TB) *Env {
	t.Helper()
	if !inMain.Load() {
		// Without Main nothing would stop it: kube-apiserver and etcd would outlive the test.
		t.Fatal("envtest.Shared needs the package's TestMain to run envtest.Main: func TestMain(m *testing.M) { os.Exit(envtest.Main(m)) }")
	}
	shared.Lock()
	if !shared.tried {
		shared.tried = true
		dir, err := AssetsDir()
		if err != nil {
			shared.missing = err
		} else {
			shared.env, shared.err = start(dir, startOptions{})
			if shared.err == nil {
				t.Logf("envtest: shared control plane from %s started in %v", dir, shared.env.StartTime.Round(time.Millisecond))
			}
		}
	}
	env, err, missing := shared.env, shared.err, shared.missing
	shared.Unlock()
	switch {
	case missing != nil:
		testenv.Missing(t, "the envtest control plane (kube-apiserver and etcd)", fmt.Sprintf("%v; %s", missing, howToGet))
	case err != nil:
		t.Fatalf("envtest: %v", err)
	}
	return env
}

// Main runs the tests and then stops the shared control plane, if one was started, and
// returns the exit code for os.Exit:
//
//	func TestMain(m *testing.M) { os.Exit(envtest.Main(m)) }
//
// On SIGINT or SIGTERM it stops every control plane this package started, and exits: envtest
// starts kube-apiserver and etcd in process groups of their own, which an interrupt of
// `go test` does not reach. Where the test binary dies without running any more code (a
// panicking test, -timeout, SIGKILL), the kernel kills them (see deathGuard).
func Main(m *testing.M) int {
	inMain.Store(true)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		s, ok := <-signals
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "envtest: %v: stopping the control planes\n", s)
		stopAll()
		code := 1
		if n, ok := s.(syscall.Signal); ok {
			code = 128 + int(n) // as a shell reports a process the signal ended
		}
		os.Exit(code)
	}()
	defer func() {
		signal.Stop(signals)
		close(signals)
	}()

	code := m.Run()
	shared.Lock()
	env := shared.env
	shared.Unlock()
	if env != nil {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "envtest: stop the shared control plane: %v\n", err)
		}
	}
	return code
}

// inMain is set by Main, which Shared requires.
var inMain atomic.Bool

// running holds every started, not yet stopped Env, for the signal handler of Main.
var running sync.Map // *Env -> struct{}

func stopAll() {
	var wg sync.WaitGroup
	running.Range(func(k, _ any) bool {
		wg.Go(func() { _ = k.(*Env).Stop() })
		return true
	})
	wg.Wait()
}

// Stop stops the control plane; later calls return the first call's result.
func (e *Env) Stop() error {
	e.stopOnce.Do(func() {
		e.stopErr = e.env.Stop()
		e.guard.release()
		running.Delete(e)
	})
	return e.stopErr
}

// Namespace creates a namespace with a fresh name derived from the test's name and returns
// the name. envtest runs no namespace controller, so the namespace and what it holds stay
// until the control plane stops; nothing is deleted.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: namespacePrefix(t.Name())}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Client.Create(ctx, ns); err != nil {
		t.Fatalf("envtest: create namespace: %v", err)
	}
	return ns.Name
}

var notLabel = regexp.MustCompile(`[^a-z0-9]+`)

// namespacePrefix turns a test name into a generateName: a DNS label prefix of at most 40
// characters (the server appends 5), ending in "-".
func namespacePrefix(testName string) string {
	p := strings.Trim(notLabel.ReplaceAllString(strings.ToLower(testName), "-"), "-")
	if len(p) > 39 {
		p = strings.TrimRight(p[:39], "-")
	}
	if p == "" || p[0] < 'a' || p[0] > 'z' {
		p = "t" + p
	}
	return p + "-"
}

// AssetsDir returns the folder that holds kube-apiserver and etcd: KUBEBUILDER_ASSETS when
// set, else <repo>/bin/k8s. It fails when either binary is not there.
func AssetsDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "bin", "k8s")
	}
	var missing []string
	for _, name := range []string{"kube-apiserver", "etcd"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("no %s in %s", strings.Join(missing, " or "), dir)
	}
	return dir, nil
}

// repoRoot finds the repository from the working directory (a package's folder under go
// test): the nearest folder above whose go.mod declares the root module.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && declaresModule(data, module) {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod of module %s above %s (set KUBEBUILDER_ASSETS)", module, wd)
		}
	}
}

func declaresModule(goMod []byte, module string) bool {
	for line := range bytes.Lines(goMod) {
		f := strings.Fields(string(line))
		if len(f) >= 2 && f[0] == "module" && strings.Trim(f[1], `"`) == module {
			return true
		}
	}
	return false
}

// NewScheme returns a scheme with the built-in types, CustomResourceDefinitions and the
// project's API.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// CRDs returns the project's CustomResourceDefinitions: manifests/crd/*.yaml, as embedded in
// the manifests package, the very files `kubectl apply -f manifests/crd` installs.
func CRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	files, err := fs.Glob(manifests.CRDs, "crd/*.yaml")
	if err != nil {
		return nil, err
	}
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, name := range files {
		data, err := manifests.CRDs.ReadFile(name)
		if err != nil {
			return nil, err
		}
		reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := reader.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("manifests/%s: %w", name, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 || string(bytes.TrimSpace(doc)) == "---" {
				continue
			}
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := yaml.UnmarshalStrict(doc, crd); err != nil {
				return nil, fmt.Errorf("manifests/%s: %w", name, err)
			}
			if crd.Kind != "CustomResourceDefinition" {
				return nil, fmt.Errorf("manifests/%s: a %s, not a CustomResourceDefinition", name, crd.Kind)
			}
			crds = append(crds, crd)
		}
	}
	if len(crds) == 0 {
		return nil, errors.New("no CustomResourceDefinition in manifests/crd")
	}
	return crds, nil
}

// start starts a control plane from the binaries in dir and installs the CRDs.
func start(dir string, o startOptions) (*Env, error) {
	scheme, err := NewScheme()
	if err != nil {
		return nil, err
	}
	crds, err := CRDs()
	if err != nil {
		return nil, err
	}
	guard, err := newDeathGuard(dir)
	if err != nil {
		return nil, err
	}
	env := &crenvtest.Environment{
		Scheme:                scheme,
		CRDs:                  crds,
		BinaryAssetsDirectory: dir,
	}
	// Explicit paths: envtest would otherwise prefer TEST_ASSET_* variables over dir.
	apiServer := env.ControlPlane.GetAPIServer()
	apiServer.Path = guard.path("kube-apiserver")
	apiServer.CertDir = filepath.Join(guard.tmp, "apiserver")
	env.ControlPlane.Etcd = &crenvtest.Etcd{Path: guard.path("etcd"), DataDir: filepath.Join(guard.tmp, "etcd")}
	for _, a := range o.apiServerArgs {
		// Append keeps envtest's defaults for other flags (Set of a flag envtest defaults, such
		// as disable-admission-plugins, would replace them).
		apiServer.Configure().Append(a.name, a.values...)
	}
	// envtest waits 20 s for each process by default; on a loaded 2-core machine (a parallel
	// `go test ./...`) kube-apiserver may need longer. The environment variable still wins.
	if os.Getenv("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT") == "" {
		env.ControlPlaneStartTimeout = time.Minute
	}

	began := time.Now()
	cfg, err := guard.start(env)
	if err != nil {
		// Start may fail after the processes started (a CRD the server refuses): stop them.
		if stopErr := env.Stop(); stopErr != nil {
			err = errors.Join(err, fmt.Errorf("stop after the failed start: %w", stopErr))
		}
		guard.release()
		return nil, fmt.Errorf("start the control plane from %s: %w", dir, err)
	}
	e := &Env{Config: cfg, Scheme: scheme, CRDs: env.CRDs, AssetsDir: dir, StartTime: time.Since(began), env: env, guard: guard}
	running.Store(e, struct{}{})
	e.Client, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		_ = e.Stop()
		return nil, fmt.Errorf("client: %w", err)
	}
	return e, nil
}

// The files AsOperator applies, relative to the repository root: what `kubectl apply -k
// manifests` installs for the operator's identity, as shipped (generated RBAC included).
var operatorManifests = []string{
	"manifests/operator/namespace.yaml",
	"manifests/rbac/role.yaml",
	"manifests/rbac/binding.yaml",
}

// operatorDeployment is where the shipped Deployment names the ServiceAccount it runs as.
const operatorDeployment = "manifests/operator/deployment.yaml"

// fieldManager owns what the helpers below apply.
const fieldManager = "tollgate-envtest"

// AsOperator returns a config that acts as the operator's ServiceAccount under the SHIPPED
// RBAC: it applies manifests/operator/namespace.yaml and manifests/rbac/{role,binding}.yaml
// (server-side apply, as an administrator), waits until the API server grants every rule of
// the ClusterRole to the ServiceAccount the shipped Deployment runs as
// (manifests/operator/deployment.yaml), and returns a copy of Config that impersonates that
// account with the groups a ServiceAccount token carries. The server then authorizes every
// request as the operator in a cluster: a verb the role lacks is refused.
//
// The files are read from the working tree, not embedded: a change to the markers in
// operator/controller/rbac.go is tested once `controller-gen rbac` has regenerated them.
// The first successful call on a control plane does the work; later ones (many tests on the
// shared plane, concurrently or not) return a fresh copy of the same config.
func (e *Env) AsOperator(t testing.TB) *rest.Config {
	t.Helper()
	e.operatorMu.Lock()
	defer e.operatorMu.Unlock()
	if e.operator != nil {
		return rest.CopyConfig(e.operator)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := e.asOperator(ctx)
	if err != nil {
		t.Fatalf("envtest: act as the operator: %v", err)
	}
	e.operator = cfg
	return rest.CopyConfig(cfg)
}

func (e *Env) asOperator(ctx context.Context) (*rest.Config, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	var objs []*unstructured.Unstructured
	for _, name := range operatorManifests {
		docs, err := readObjects(filepath.Join(root, name))
		if err != nil {
			return nil, err
		}
		objs = append(objs, docs...)
	}
	if err := e.apply(ctx, objs...); err != nil {
		return nil, err
	}
	namespace, sa, err := OperatorServiceAccount()
	if err != nil {
		return nil, err
	}
	var rules []rbacv1.PolicyRule
	for _, o := range objs {
		if o.GetKind() != "ClusterRole" {
			continue
		}
		var role rbacv1.ClusterRole
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &role); err != nil {
			return nil, err
		}
		rules = append(rules, role.Rules...)
	}
	if len(rules) == 0 {
		return nil, fmt.Errorf("no ClusterRole with rules in %s", strings.Join(operatorManifests, ", "))
	}
	if err := e.waitGranted(ctx, namespace, sa, rules); err != nil {
		return nil, fmt.Errorf("%w (does manifests/rbac/binding.yaml bind the ClusterRole to %s/%s, the account of %s?)", err, namespace, sa, operatorDeployment)
	}
	return e.AsServiceAccount(namespace, sa), nil
}

// OperatorServiceAccount returns the namespace and name of the ServiceAccount the shipped
// operator Deployment runs as (manifests/operator/deployment.yaml).
func OperatorServiceAccount() (namespace, name string, err error) {
	root, err := repoRoot()
	if err != nil {
		return "", "", err
	}
	objs, err := readObjects(filepath.Join(root, operatorDeployment))
	if err != nil {
		return "", "", err
	}
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		var d appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
			return "", "", fmt.Errorf("%s: %w", operatorDeployment, err)
		}
		name = d.Spec.Template.Spec.ServiceAccountName
		if name == "" {
			name = "default" // what the ServiceAccount admission plugin assigns
		}
		if d.Namespace == "" {
			return "", "", fmt.Errorf("%s: the Deployment names no namespace", operatorDeployment)
		}
		return d.Namespace, name, nil
	}
	return "", "", fmt.Errorf("%s: no Deployment", operatorDeployment)
}

// OperatorRole returns the shipped ClusterRole, manifests/rbac/role.yaml, for tests that
// grant a variant of it (GrantClusterRole).
func OperatorRole() (*rbacv1.ClusterRole, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	objs, err := readObjects(filepath.Join(root, "manifests/rbac/role.yaml"))
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		if o.GetKind() == "ClusterRole" {
			var role rbacv1.ClusterRole
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &role); err != nil {
				return nil, err
			}
			return &role, nil
		}
	}
	return nil, errors.New("manifests/rbac/role.yaml: no ClusterRole")
}

// GrantClusterRole applies role (under its name: give a variant a name of its own), a
// ServiceAccount namespace/serviceAccount and a ClusterRoleBinding of the two, waits until
// the API server grants every rule, and returns a config that impersonates the account
// (AsServiceAccount). The namespace must exist. Calling it again with the same arguments
// changes nothing.
func (e *Env) GrantClusterRole(t testing.TB, namespace, serviceAccount string, role *rbacv1.ClusterRole) *rest.Config {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	role = role.DeepCopy()
	role.ObjectMeta = metav1.ObjectMeta{Name: role.Name, Labels: role.Labels, Annotations: role.Annotations}
	objs := []runtime.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: serviceAccount}},
		role,
		&rbacv1.ClusterRoleBinding{
			// One binding per account: tests granting one role to several accounts do not
			// overwrite each other's subjects.
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s:%s:%s", role.Name, namespace, serviceAccount)},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: serviceAccount}},
		},
	}
	var us []*unstructured.Unstructured
	for _, o := range objs {
		u, err := e.toUnstructured(o)
		if err != nil {
			t.Fatalf("envtest: %v", err)
		}
		us = append(us, u)
	}
	if err := e.apply(ctx, us...); err != nil {
		t.Fatalf("envtest: grant %s to %s/%s: %v", role.Name, namespace, serviceAccount, err)
	}
	if err := e.waitGranted(ctx, namespace, serviceAccount, role.Rules); err != nil {
		t.Fatalf("envtest: grant %s to %s/%s: %v", role.Name, namespace, serviceAccount, err)
	}
	return e.AsServiceAccount(namespace, serviceAccount)
}

// AsServiceAccount returns a copy of Config that impersonates the ServiceAccount
// namespace/name with the groups the API server gives a ServiceAccount token. It creates
// nothing and grants nothing: the account has what the cluster's bindings give it.
func (e *Env) AsServiceAccount(namespace, name string) *rest.Config {
	cfg := rest.CopyConfig(e.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: serviceAccountUser(namespace, name),
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}
	return cfg
}

func serviceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// waitGranted waits until the RBAC authorizer allows the ServiceAccount every verb on every
// resource of rules, cluster-wide: RBAC works from informer caches, so a binding takes effect
// shortly after it is written, not at once. It asks with SubjectAccessReviews, as an admin.
func (e *Env) waitGranted(ctx context.Context, namespace, sa string, rules []rbacv1.PolicyRule) error {
	var attrs []authorizationv1.ResourceAttributes
	for _, r := range rules {
		name := ""
		if len(r.ResourceNames) > 0 {
			name = r.ResourceNames[0]
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				resource, sub, _ := strings.Cut(res, "/")
				for _, v := range r.Verbs {
					attrs = append(attrs, authorizationv1.ResourceAttributes{Group: g, Resource: resource, Subresource: sub, Verb: v, Name: name})
				}
			}
		}
	}
	user := serviceAccountUser(namespace, sa)
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
	for {
		var missing []string
		for i := range attrs {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: user, Groups: groups, ResourceAttributes: &attrs[i],
			}}
			if err := e.Client.Create(ctx, sar); err != nil {
				return fmt.Errorf("SubjectAccessReview: %w", err)
			}
			if !sar.Status.Allowed {
				a := attrs[i]
				missing = append(missing, fmt.Sprintf("%s %s", a.Verb, strings.Trim(a.Group+"/"+a.Resource+"/"+a.Subresource, "/")))
			}
		}
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s is still not allowed to %s: %w", user, strings.Join(missing, ", "), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// apply server-side-applies objs in order, as the administrator.
func (e *Env) apply(ctx context.Context, objs ...*unstructured.Unstructured) error {
	for _, o := range objs {
		err := e.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.FieldOwner(fieldManager), client.ForceOwnership)
		if err != nil {
			return fmt.Errorf("apply %s %s: %w", o.GetKind(), client.ObjectKeyFromObject(o), err)
		}
	}
	return nil
}

func (e *Env) toUnstructured(o runtime.Object) (*unstructured.Unstructured, error) {
	gvks, _, err := e.Scheme.ObjectKinds(o)
	if err != nil {
		return nil, err
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(gvks[0])
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	return u, nil
}

// readObjects reads the Kubernetes objects of a multi-document YAML file.
func readObjects(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var objs []*unstructured.Unstructured
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		// Through JSON, so that numbers are int64 as unstructured objects want them.
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if t := bytes.TrimSpace(j); len(t) == 0 || string(t) == "null" {
			continue // an empty document
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(j); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("%s: a document without apiVersion and kind", path)
		}
		objs = append(objs, u)
	}
}

// Denials records the requests the API server refused as Forbidden (403). Code under test
// often only logs such a refusal (an event, a retried watch) and carries on; a test that runs
// it under a role wraps its config with Wrap and asserts List is empty, so a missing verb
// fails the test wherever it shows.
type Denials struct {
	mu   sync.Mutex
	seen []string
}

// Wrap returns a copy of cfg whose requests d watches.
func (d *Denials) Wrap(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Wrap(func(rt http.RoundTripper) http.RoundTripper { return denialRecorder{rt, d} })
	return c
}

// List returns each refused request once, as "METHOD path", in the order first seen.
func (d *Denials) List() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.seen)
}

func (d *Denials) add(req string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !slices.Contains(d.seen, req) {
		d.seen = append(d.seen, req)
	}
}

type denialRecorder struct {
	next http.RoundTripper
	d    *Denials
}

func (r denialRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusForbidden {
		r.d.add(req.Method + " " + req.URL.Path)
	}
	return resp, err
}
