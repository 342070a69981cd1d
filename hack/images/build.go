package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/tollgate-dev/tollgate/internal/version"
)

// Binaries are the images built: each the command of the same name at the module root.
var Binaries = []string{"operator", "proxy"}

// Platforms are the platforms of each image's index.
var Platforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}

// NonRoot is the user the images run as (distroless's "nonroot").
const NonRoot = 65532

// Options say what to build.
type Options struct {
	Version   string    // stamped into the binaries (internal/version) and the labels
	Tag       string    // the image tag: version.TagOf(Version)
	Revision  string    // the commit, for the revision label
	Created   time.Time // every timestamp: SOURCE_DATE_EPOCH
	Platforms []v1.Platform
}

// Result is what Build wrote.
type Result struct {
	Index    v1.Hash  // the digest of the image index
	Layout   string   // the OCI image layout folder
	Tarballs []string // a docker-archive per platform
}

// Build builds the image of one binary for every platform, into out/<name>/ (an OCI image
// layout holding the index) and out/<name>-<arch>.tar.
func Build(o Options, binary, out string) (Result, error) {
	work, err := os.MkdirTemp("", "images")
	if err != nil {
		return Result{}, err
	}
	defer func() { _ = os.RemoveAll(work) }()
	ref, err := name.NewTag(version.Registry + "/" + binary + ":" + o.Tag)
	if err != nil {
		return Result{}, fmt.Errorf("image reference: %w", err)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	res := Result{Layout: filepath.Join(out, binary)}
	for _, p := range o.Platforms {
		bin := filepath.Join(work, binary+"-"+p.Architecture)
		if err := goBuild(o, binary, p, bin); err != nil {
			return Result{}, err
		}
		img, err := image(o, binary, p, bin)
		if err != nil {
			return Result{}, fmt.Errorf("%s %s: %w", binary, p, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
		tb := filepath.Join(out, binary+"-"+p.Architecture+".tar")
		if err := os.MkdirAll(out, 0o755); err != nil {
			return Result{}, err
		}
		if err := tarball.WriteToFile(tb, ref, img); err != nil {
			return Result{}, fmt.Errorf("%s: %w", tb, err)
		}
		res.Tarballs = append(res.Tarballs, tb)
	}
	if err := os.RemoveAll(res.Layout); err != nil {
		return Result{}, err
	}
	lp, err := layout.Write(res.Layout, empty.Index)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", res.Layout, err)
	}
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref.Name()})); err != nil {
		return Result{}, fmt.Errorf("%s: %w", res.Layout, err)
	}
	if res.Index, err = idx.Digest(); err != nil {
		return Result{}, err
	}
	return res, nil
}

// goBuild builds a static binary: no cgo, no paths of this machine, the version stamped. The
// build ID is left to the go command: it is derived from the inputs, the same for the same
// commit and toolchain.
func goBuild(o Options, binary string, p v1.Platform, out string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -X github.com/tollgate-dev/tollgate/internal/version.version="+o.Version,
		"-o", out, "./"+binary)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s for %s: %w\n%s", binary, p, err, b)
	}
	return nil
}

// image is one platform's image: one layer holding /etc/passwd and /etc/group (the nonroot
// user), and the binary; no shell, no package manager, no CA bundle (the binaries carry
// Go's own roots: golang.org/x/crypto/x509roots/fallback, used when the system has none).
func image(o Options, binary string, p v1.Platform, bin string) (v1.Image, error) {
	layer, err := rootfs(o, binary, bin)
	if err != nil {
		return nil, err
	}
	labels := map[string]string{
		"org.opencontainers.image.title":       "tollgate-" + binary,
		"org.opencontainers.image.description": description[binary],
		"org.opencontainers.image.source":      "https://github.com/tollgate-dev/tollgate",
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.revision":    o.Revision,
		"org.opencontainers.image.licenses":    license, // NOASSERTION until the repository has a LICENSE
		"org.opencontainers.image.created":     o.Created.Format(time.RFC3339),
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: p.Architecture,
		OS:           p.OS,
		Created:      v1.Time{Time: o.Created},
		Config: v1.Config{
			Entrypoint: []string{"/" + binary},
			User:       fmt.Sprintf("%d:%d", NonRoot, NonRoot),
			WorkingDir: "/",
			Labels:     labels,
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	return mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: o.Created}, CreatedBy: "hack/images " + binary, Comment: "static binary, nonroot user"},
	})
}

var description = map[string]string{
	"operator": "Tollgate operator: reconciles MCPServer resources into rate-limiting MCP proxies",
	"proxy":    "Tollgate proxy: per-user and per-tool rate limiting in front of an MCP server",
}

// rootfs writes the layer's tar: fixed order, owners, modes and times.
func rootfs(o Options, binary, bin string) (v1.Layer, error) {
	exe, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	nonroot := fmt.Sprint(NonRoot)
	files := []struct {
		path string
		mode int64
		data []byte
	}{
		{"etc/", 0o755, nil},
		{"etc/group", 0o644, []byte("root:x:0:\nnonroot:x:" + nonroot + ":\n")},
		{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:" + nonroot + ":" + nonroot + ":nonroot:/home/nonroot:/sbin/nologin\n")},
		{binary, 0o755, exe},
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.path, Mode: f.mode, ModTime: o.Created, Uname: "root", Gname: "root", Format: tar.FormatPAX}
		if strings.HasSuffix(f.path, "/") {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// license is the SPDX expression of the licenses label. The repository has no LICENSE file
// yet: "NOASSERTION" is SPDX's word for "not stated", rather than a guess.
const license = "NOASSERTION"
