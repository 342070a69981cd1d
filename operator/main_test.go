package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/internal/testenv"
	"github.com/tollgate-dev/tollgate/internal/version"
)

// kustomizeBuild renders an overlay with the pinned kustomize (hack/tools/kustomize, built into
// bin/ by `task tools`). The overlays under testdata patch a shipped sample that lies outside
// their folder, hence LoadRestrictionsNone.
func kustomizeBuild(t *testing.T, overlay string) []byte {
	t.Helper()
	bin, err := filepath.Abs("../bin/kustomize")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath(bin); err != nil {
		testenv.Missing(t, "kustomize", "task tools (builds the pinned kustomize into bin/)")
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "build", "--load-restrictor", "LoadRestrictionsNone", overlay)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kustomize build %s: %v\n%s", overlay, err, stderr.String())
	}
	return out
}

// TestValidateStdin: `kustomize build overlay | operator validate -f -`, the GitOps pre-merge
// check of docs/operations.md, with the exit codes it documents.
func TestValidateStdin(t *testing.T) {
	type want struct {
		code   int
		stdout []string // the problems, one a line
		stderr string
	}
	cases := map[string]struct {
		reason string
		args   []string
		stdin  func(t *testing.T) []byte
		want   want
	}{
		"ValidOverlay": {
			reason: "An overlay that patches a sample into another namespace with higher limits is valid: exit 0.",
			args:   []string{"-f", "-"},
			stdin:  func(t *testing.T) []byte { return kustomizeBuild(t, "testdata/overlays/prod") },
			want:   want{code: 0, stderr: "1 MCPServer(s) valid\n"},
		},
		"BrokenOverlay": {
			reason: "An overlay whose patch breaks admission (CEL rules) is reported with <stdin>, the document and the field: exit 1.",
			args:   []string{"-f", "-"},
			stdin:  func(t *testing.T) []byte { return kustomizeBuild(t, "testdata/overlays/broken") },
			want: want{code: 1, stderr: "2 problem(s) in 1 MCPServer(s)\n", stdout: []string{
				"<stdin>:1: spec.rateLimiting.perUser: Invalid value: rateLimiting.perUser requires authentication: set oidcConfig, oidcConfigRef or externalAuthConfigRef",
				"<stdin>:1: spec.rateLimiting.tools[0].shared: Invalid value: refillPeriod must be greater than 0",
			}},
		},
		"StdinBesideFiles": {
			reason: "Standard input and files together: every MCPServer of both is checked.",
			args:   []string{"-f", "-", "-f", "../manifests/samples/shared.yaml"},
			stdin:  func(t *testing.T) []byte { return kustomizeBuild(t, "testdata/overlays/prod") },
			want:   want{code: 0, stderr: "2 MCPServer(s) valid\n"},
		},
		"EmptyStdin": {
			reason: "Nothing on standard input (the build before the pipe failed) is an error, never a pass: exit 2.",
			args:   []string{"-f", "-"},
			stdin:  func(*testing.T) []byte { return nil },
			want:   want{code: 2, stderr: "validate: standard input holds no YAML document (did the command before the pipe fail?)\n"},
		},
		"StdinTwice": {
			reason: "Standard input can be read once: exit 2.",
			args:   []string{"-f", "-", "-"},
			stdin:  func(*testing.T) []byte { return []byte("kind: ConfigMap\n") },
			want:   want{code: 2, stderr: "validate: \"-\" (standard input) given more than once\n"},
		},
		"NoPath": {
			reason: "No path at all is a usage error: exit 2.",
			stdin:  func(*testing.T) []byte { return nil },
			want:   want{code: 2, stderr: "usage: operator validate -f PATH|- [-f PATH...]\n"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := validate(tc.args, bytes.NewReader(tc.stdin(t)), &stdout, &stderr)
			got := want{code: code, stderr: stderr.String()}
			if s := strings.TrimSuffix(stdout.String(), "\n"); s != "" {
				got.stdout = strings.Split(s, "\n")
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("%s\nvalidate %v: -want +got:\n%s", tc.reason, tc.args, diff)
			}
		})
	}
}

// TestPreCommitHook: the hook this repository defines for pre-commit runs this command:
// `go install` names the binary after this folder, and the command line pre-commit forms (the
// hook's entry, then the changed files) validates them.
func TestPreCommitHook(t *testing.T) {
	data, err := os.ReadFile("../.pre-commit-hooks.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var hooks []struct {
		ID            string `json:"id"`
		Entry         string `json:"entry"`
		Language      string `json:"language"`
		PassFilenames *bool  `json:"pass_filenames"`
	}
	// pre-commit knows more fields than these: only the ones that decide the command matter.
	if err := yaml.Unmarshal(data, &hooks); err != nil {
		t.Fatalf(".pre-commit-hooks.yaml: %v", err)
	}
	if len(hooks) != 1 || hooks[0].ID != "tollgate-validate" {
		t.Fatalf("hooks %+v, want one: tollgate-validate", hooks)
	}
	h := hooks[0]
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	entry := strings.Fields(h.Entry)
	if len(entry) < 2 || entry[0] != filepath.Base(wd) || entry[1] != "validate" || h.Language != "golang" || (h.PassFilenames != nil && !*h.PassFilenames) {
		t.Fatalf("hook %+v: want entry %q validate, language golang, file names passed", h, filepath.Base(wd))
	}
	cases := map[string]struct {
		reason string
		files  []string
		want   int
	}{
		"Valid":   {reason: "Changed files that hold valid MCPServers (and other kinds) pass.", files: []string{"../manifests/samples/shared.yaml", "../manifests/samples/per-tool.yaml"}, want: 0},
		"Invalid": {reason: "A changed file with an invalid MCPServer fails the commit.", files: []string{"manifest/testdata/invalid.yaml"}, want: 1},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			got := validate(append(entry[2:], tc.files...), strings.NewReader(""), &stdout, &stderr)
			if got != tc.want {
				t.Errorf("%s\n%s %v: exit %d, want %d\n%s%s", tc.reason, h.Entry, tc.files, got, tc.want, stdout.String(), stderr.String())
			}
		})
	}
}

// TestGitHubActionsExample: docs/examples/gitops-validate.yml is the job docs/operations.md
// shows, it is YAML, and its pipeline fails on a failed build (bash -eo pipefail).
func TestGitHubActionsExample(t *testing.T) {
	file, err := os.ReadFile("../docs/examples/gitops-validate.yml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	var job struct {
		Jobs map[string]struct {
			Defaults struct {
				Run struct {
					Shell string `json:"shell"`
				} `json:"run"`
			} `json:"defaults"`
			Steps []struct {
				Run string `json:"run"`
			} `json:"steps"`
		} `json:"jobs"`
	}
	if err := yaml.Unmarshal(file, &job); err != nil {
		t.Fatalf("gitops-validate.yml: %v", err)
	}
	v, ok := job.Jobs["validate"]
	if !ok {
		t.Fatal("gitops-validate.yml: no job validate")
	}
	var runs string
	for _, s := range v.Steps {
		runs += s.Run
	}
	if v.Defaults.Run.Shell != "bash" || !strings.Contains(runs, "| operator validate -f -") {
		t.Errorf("the job must run bash (pipefail) and pipe kustomize build into operator validate -f -; shell %q, steps:\n%s", v.Defaults.Run.Shell, runs)
	}
	// The file is the documented job after its header comment.
	body := string(file[bytes.Index(file, []byte("name: tollgate-validate")):])
	if !strings.Contains(string(doc), "```yaml\n"+body+"```") {
		t.Errorf("docs/operations.md does not show docs/examples/gitops-validate.yml as it is (after its comment)")
	}
}

// TestPlanDeploysOwnVersion: `operator plan` shows the proxy image the operator would deploy,
// and for an MCPServer that names none it is the proxy of the operator's own version, never a
// moving tag.
func TestPlanDeploysOwnVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := plan([]string{"-f", "../manifests/samples/shared.yaml"}, strings.NewReader(""), &out, &errOut); code != 0 {
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
