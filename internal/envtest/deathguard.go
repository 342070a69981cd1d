package envtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"k8s.io/client-go/rest"
	crenvtest "sigs.k8s.io/controller-runtime/pkg/envtest"
)

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
