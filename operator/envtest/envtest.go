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
// Start gives a test a control plane of its own, stopped when the test ends.
package envtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
}

// Start starts a control plane for t and stops it when t and its subtests end. It skips t
// (fails it under CI=true) when the binaries are missing, and fails t when the control plane
// does not start or a CRD does not install.
func Start(t testing.TB) *Env {
	t.Helper()
	dir, err := AssetsDir()
	if err != nil {
		testenv.Missing(t, "the envtest control plane (kube-apiserver and etcd)", fmt.Sprintf("%v; %s", err, howToGet))
	}
	e, err := start(dir)
	if err != nil {
		t.Fatalf("envtest: %v", err)
	}
	t.Logf("envtest: control plane from %s started in %v", dir, e.StartTime.Round(time.Millisecond))
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
			shared.env, shared.err = start(dir)
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
func start(dir string) (*Env, error) {
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

// deathGuard makes kube-apiserver and etcd die with the test binary, however it ends: a
// panicking test, a -timeout, a SIGKILL. Stop and Main's signal handler stop them in the
// ordinary cases, but a test binary that dies otherwise runs no more code, and envtest starts
// the processes in process groups of their own, so nothing else would stop them.
//
// Each binary is started through a two-line script that execs it under
// `setpriv --pdeathsig KILL` (util-linux): the kernel kills the process when the thread
// that started it exits. That thread must not exit before the control plane stops (Go may
// end a thread that a goroutine locked), so start runs envtest's Start on a goroutine locked
// to its thread, which waits until release. Without setpriv on PATH the binaries run
// directly, unguarded.
//
// The guard's folder (tollgate-envtest-* in the temporary directory) also holds etcd's data
// (over 100 MB: etcd preallocates its log) and the API server's certificates, and the test
// binary's pid: release removes it, and a later start removes those whose process is gone.
type deathGuard struct {
	dir      string // the real binaries
	tmp      string // the guard's folder
	guarded  bool   // the scripts are in tmp/bin
	released chan struct{}
	once     sync.Once
}

const guardPattern = "tollgate-envtest-"

func newDeathGuard(dir string) (*deathGuard, error) {
	sweepStaleGuards()
	g := &deathGuard{dir: dir, released: make(chan struct{})}
	var err error
	if g.tmp, err = os.MkdirTemp("", guardPattern); err != nil {
		return nil, err
	}
	if err := g.prepare(); err != nil {
		_ = os.RemoveAll(g.tmp)
		return nil, err
	}
	return g, nil
}

func (g *deathGuard) prepare() error {
	if err := os.WriteFile(filepath.Join(g.tmp, "pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return err
	}
	for _, sub := range []string{"bin", "etcd", "apiserver"} {
		if err := os.Mkdir(filepath.Join(g.tmp, sub), 0o700); err != nil {
			return err
		}
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return nil
	}
	for _, name := range []string{"kube-apiserver", "etcd"} {
		script := fmt.Sprintf("#!/bin/sh\nexec %s --pdeathsig KILL -- %s \"$@\"\n", shellQuote(setpriv), shellQuote(filepath.Join(g.dir, name)))
		if err := os.WriteFile(filepath.Join(g.tmp, "bin", name), []byte(script), 0o755); err != nil {
			return err
		}
	}
	g.guarded = true
	return nil
}

// sweepStaleGuards removes the guard folders of test binaries that are gone.
func sweepStaleGuards() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), guardPattern+"*"))
	for _, d := range dirs {
		data, err := os.ReadFile(filepath.Join(d, "pid"))
		if err != nil {
			continue // being created, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(d)
		}
	}
}

// path is the program envtest runs for the binary name.
func (g *deathGuard) path(name string) string {
	if !g.guarded {
		return filepath.Join(g.dir, name)
	}
	return filepath.Join(g.tmp, "bin", name)
}

// start runs env.Start on a goroutine locked to its OS thread, which stays until release.
func (g *deathGuard) start(env *crenvtest.Environment) (*rest.Config, error) {
	type result struct {
		cfg *rest.Config
		err error
	}
	done := make(chan result)
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread ends with the goroutine
		cfg, err := env.Start()
		done <- result{cfg, err}
		<-g.released
	}()
	r := <-done
	return r.cfg, r.err
}

// release lets the starting thread go, once the processes are stopped, and removes the
// guard's folder.
func (g *deathGuard) release() {
	g.once.Do(func() {
		close(g.released)
		_ = os.RemoveAll(g.tmp)
	})
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
