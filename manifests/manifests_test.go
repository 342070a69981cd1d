package manifests

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

// TestKustomizeBuild builds the kustomization GitOps tools apply, with the pinned kustomize
// (hack/tools/kustomize, built into bin/ by `task tools`).
func TestKustomizeBuild(t *testing.T) {
	bin, err := filepath.Abs("../bin/kustomize")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath(bin); err != nil {
		testenv.Missing(t, "kustomize", "task tools (builds the pinned kustomize into bin/)")
	}
	out, err := exec.Command(bin, "build", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("kustomize build: %v\n%s", err, out)
	}
	var kinds, images []string
	for _, line := range strings.Split(string(out), "\n") {
		if k, ok := strings.CutPrefix(line, "kind: "); ok {
			kinds = append(kinds, k)
		}
		if i, ok := strings.CutPrefix(strings.TrimSpace(line), "image: "); ok {
			images = append(images, i)
		}
	}
	// Only pinned versions: GitOps users avoid a moving tag (a rollout nobody committed).
	if diff := cmp.Diff([]string{"ghcr.io/tollgate-dev/operator:v0.1.0"}, images); diff != "" {
		t.Errorf("images in the build: -want +got:\n%s", diff)
	}
	if strings.Contains(string(out), ":latest") {
		t.Errorf("the build names a latest tag:\n%s", out)
	}
	want := []string{"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment"}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("kinds in the build, in kustomize's order: -want +got:\n%s", diff)
	}
}
