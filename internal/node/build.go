package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// builds holds the programs Build made in this test binary, each built once.
var builds struct {
	sync.Mutex
	dir  string
	done map[string]buildResult
}

type buildResult struct {
	path string
	took time.Duration
	err  error
}

// Build compiles the main package pkg (an import path, e.g.
// github.com/tollgate-dev/tollgate/proxy) with `go build` into a temporary folder, once per
// test binary, and returns the program's path: the end-to-end tests run the real binary, not
// its packages linked into the test. RemoveBuilds (in TestMain) deletes the folder.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	builds.Lock()
	defer builds.Unlock()
	if r, ok := builds.done[pkg]; ok {
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.path
	}
	if builds.done == nil {
		builds.done = map[string]buildResult{}
	}
	r := build(pkg)
	builds.done[pkg] = r
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Logf("node: built %s in %v", pkg, r.took.Round(time.Millisecond))
	return r.path
}

func build(pkg string) buildResult {
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "tollgate-e2e-bin-")
		if err != nil {
			return buildResult{err: err}
		}
		builds.dir = dir
	}
	// `go test` puts its own go command first on the PATH of the test binary.
	gobin, err := exec.LookPath("go")
	if err != nil {
		return buildResult{err: fmt.Errorf("building %s: no go command on the PATH: %w", pkg, err)}
	}
	out := filepath.Join(builds.dir, filepath.Base(pkg))
	// Bounded: a cold build on a loaded 2-core machine takes well under this.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	began := time.Now()
	// -buildvcs=false as the Taskfile sets it: a git worktree's VCS stamp is not needed here.
	cmd := exec.CommandContext(ctx, gobin, "build", "-buildvcs=false", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		return buildResult{err: fmt.Errorf("go build %s: %w\n%s", pkg, err, b)}
	}
	return buildResult{path: out, took: time.Since(began)}
}

// RemoveBuilds deletes what Build compiled; call it from TestMain after the tests ran.
func RemoveBuilds() {
	builds.Lock()
	defer builds.Unlock()
	if builds.dir != "" {
		_ = os.RemoveAll(builds.dir)
		builds.dir, builds.done = "", nil
	}
}
