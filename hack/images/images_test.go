package main

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/tollgate-dev/tollgate/internal/testenv"
)

// TestImages builds both images for both platforms, twice, and opens what was written as a
// registry or a kubelet would: the index's platforms, each image's entrypoint, user, labels
// and files (no shell), the binary of this machine's platform run from the layer, and the
// same digests from the second build.
func TestImages(t *testing.T) {
	if testing.Short() && !testenv.InCI() { // CI never skips it, -short or not
		t.Skip("builds four static binaries: not in -short")
	}
	if err := os.Chdir("../.."); err != nil { // the module root: go build ./operator
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chdir("hack/images") })
	o := Options{
		Version:   "v0.0.0-test+dirty",
		Tag:       "v0.0.0-test-dirty",
		Revision:  "0123456789abcdef0123456789abcdef01234567",
		Created:   time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC),
		Platforms: Platforms,
	}
	for _, binary := range Binaries {
		t.Run(binary, func(t *testing.T) {
			first, second := t.TempDir(), t.TempDir()
			res, err := Build(o, binary, first)
			if err != nil {
				t.Fatal(err)
			}
			again, err := Build(o, binary, second)
			if err != nil {
				t.Fatal(err)
			}
			if res.Index != again.Index {
				t.Errorf("two builds of one commit: index %s, then %s: not reproducible", res.Index, again.Index)
			}
			checkLayout(t, o, binary, res)
			checkTarball(t, binary, res)
		})
	}
}

// imageFacts is what the test reads of one platform's image.
type imageFacts struct {
	Entrypoint []string
	User       string
	Labels     map[string]string
	Files      []string
	Passwd     string
}

func checkLayout(t *testing.T, o Options, binary string, res Result) {
	t.Helper()
	lp, err := layout.FromPath(res.Layout)
	if err != nil {
		t.Fatal(err)
	}
	outer, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	om, err := outer.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(om.Manifests) != 1 || om.Manifests[0].Digest != res.Index {
		t.Fatalf("the layout's index.json should name the one image index %s: %+v", res.Index, om.Manifests)
	}
	idx, err := outer.ImageIndex(res.Index)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var platforms []string
	for _, d := range im.Manifests {
		platforms = append(platforms, d.Platform.String())
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		got := facts(t, img, binary, d.Platform)
		want := imageFacts{
			Entrypoint: []string{"/" + binary},
			User:       "65532:65532",
			Labels: map[string]string{
				"org.opencontainers.image.title":       "tollgate-" + binary,
				"org.opencontainers.image.description": description[binary],
				"org.opencontainers.image.source":      "https://github.com/tollgate-dev/tollgate",
				"org.opencontainers.image.version":     o.Version,
				"org.opencontainers.image.revision":    o.Revision,
				"org.opencontainers.image.licenses":    license,
				"org.opencontainers.image.created":     "2026-11-30T00:00:00Z",
			},
			Files:  []string{"etc/", "etc/group", "etc/passwd", binary}, // no shell, nothing else
			Passwd: "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s %s: -want +got:\n%s", binary, d.Platform, diff)
		}
	}
	if diff := cmp.Diff([]string{"linux/amd64", "linux/arm64"}, platforms); diff != "" {
		t.Errorf("platforms of the index: -want +got:\n%s", diff)
	}
}

// facts reads an image's config and its one layer; for this machine's platform it also runs
// the binary from the layer with --version.
func facts(t *testing.T, img v1.Image, binary string, p *v1.Platform) imageFacts {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	f := imageFacts{Entrypoint: cf.Config.Entrypoint, User: cf.Config.User, Labels: cf.Config.Labels}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("want one layer, got %d (%v)", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		f.Files = append(f.Files, h.Name)
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case h.Name == "etc/passwd":
			for line := range strings.Lines(string(data)) {
				if strings.HasPrefix(line, "nonroot:") {
					f.Passwd = strings.TrimSpace(line)
				}
			}
		case h.Name == binary && p.OS == runtime.GOOS && p.Architecture == runtime.GOARCH:
			exe := filepath.Join(t.TempDir(), binary)
			if err := os.WriteFile(exe, data, 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(exe, "--version").CombinedOutput()
			if got, want := strings.TrimSpace(string(out)), binary+" v0.0.0-test+dirty"; err != nil || got != want {
				t.Errorf("%s --version from the layer: %q (%v), want %q", binary, got, err, want)
			}
		}
	}
	return f
}

// checkTarball opens the docker-archive of each platform as `kind load image-archive` does:
// it names the image by its versioned tag.
func checkTarball(t *testing.T, binary string, res Result) {
	t.Helper()
	if len(res.Tarballs) != len(Platforms) {
		t.Fatalf("tarballs: %v", res.Tarballs)
	}
	for _, tb := range res.Tarballs {
		m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(tb) })
		if err != nil {
			t.Fatal(err)
		}
		if len(m) != 1 || !slices.Equal(m[0].RepoTags, []string{"ghcr.io/tollgate-dev/" + binary + ":v0.0.0-test-dirty"}) {
			t.Errorf("%s: repo tags %+v", tb, m)
		}
	}
}
