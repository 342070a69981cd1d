// Package workflows holds the test that lints the GitHub Actions workflows (.github/workflows)
// with the pinned actionlint (hack/tools/actionlint, built into bin/ by `task tools`).
package workflows

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

func TestActionlint(t *testing.T) {
	bin, err := filepath.Abs("../../bin/actionlint")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath(bin); err != nil {
		testenv.Missing(t, "actionlint", "task tools (builds the pinned actionlint into bin/)")
	}
	files, err := filepath.Glob("../../.github/workflows/*.yml")
	if err != nil || len(files) < 2 {
		t.Fatalf("workflows: %v %v", files, err)
	}
	// shellcheck is not installed here: actionlint checks the workflows' syntax, expressions,
	// action inputs and job structure without it.
	cmd := exec.Command(bin, append([]string{"-shellcheck=", "-pyflakes="}, files...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("actionlint: %v\n%s", err, out)
	}
}
