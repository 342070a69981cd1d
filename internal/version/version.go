// Package version is the one home of the build's version, which the three binaries print
// with --version and the operator uses to pick the proxy image of its own version.
//
// Release builds stamp it (task images, hack/images):
//
//	go build -ldflags "-X github.com/tollgate-dev/tollgate/internal/version.version=v0.1.0"
//
// Other builds fall back to what the go command records: the module version Go derives from
// the VCS (a tag, or a pseudo-version such as v0.0.0-20261130051802-7d6e7ad1c2f3, with
// "+dirty" for a modified tree), else "devel".
package version

import (
	"runtime/debug"
	"strings"
)

// version is set by -ldflags -X at release builds; empty otherwise.
var version string

// String returns the build's version.
func String() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// Tag returns the version as an image tag (TagOf).
func Tag() string { return TagOf(String()) }

// TagOf returns a version as an image tag: at most 128 of [A-Za-z0-9_.-], not starting with
// '.' or '-' (the OCI distribution spec's tag grammar). '+' (build metadata, as in "+dirty")
// becomes '-'.
func TagOf(v string) string {
	t := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			return r
		}
		return '-'
	}, v)
	if t == "" || t[0] == '.' || t[0] == '-' {
		t = "v" + t
	}
	if len(t) > 128 {
		t = t[:128]
	}
	return t
}

// Image is the image reference of one of Tollgate's binaries at this version, such as
// ghcr.io/tollgate-dev/proxy:v0.1.0.
func Image(name string) string { return Registry + "/" + name + ":" + Tag() }

// Registry is where release images are pushed (.github/workflows/release.yml).
const Registry = "ghcr.io/tollgate-dev"
