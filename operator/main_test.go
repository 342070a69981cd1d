package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/internal/version"
)

// TestPlanDeploysOwnVersion: `operator plan` shows the proxy image the operator would deploy,
// and for an MCPServer that names none it is the proxy of the operator's own version, never a
// moving tag.
func TestPlanDeploysOwnVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := plan([]string{"-f", "../manifests/samples/shared.yaml"}, &out, &errOut); code != 0 {
		t.Fatalf("plan: exit %d: %s", code, errOut.String())
	}
	var images []string
	for line := range strings.Lines(out.String()) {
		if i, ok := strings.CutPrefix(strings.TrimSpace(line), "image: "); ok {
			images = append(images, i)
		}
	}
	want := []string{"ghcr.io/tollgate-dev/proxy:" + version.Tag()}
	if diff := cmp.Diff(want, images); diff != "" {
		t.Errorf("images in the plan: -want +got:\n%s", diff)
	}
	if strings.HasSuffix(defaultProxyImage, ":latest") {
		t.Errorf("default proxy image %q is a moving tag", defaultProxyImage)
	}
}
