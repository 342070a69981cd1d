// Command images builds the operator and proxy images without a container daemon or a
// registry: static Go binaries (CGO off, -trimpath) on an empty base, as OCI image layouts
// holding one index for linux/amd64 and linux/arm64 (dist/<name>/), plus a docker-archive
// tarball per platform for `kind load image-archive` (dist/<name>-<arch>.tar).
//
// Reproducible: the same commit builds the same digests. Every timestamp is SOURCE_DATE_EPOCH
// (default: the commit time), the layer tar is written in a fixed order with fixed owners and
// modes, and the Go build is stamped with the version only.
//
//	go run ./hack/images [-out dist] [-version v0.1.0]      # task images
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/internal/version"
)

func main() {
	out := flag.String("out", "dist", "output folder")
	ver := flag.String("version", "", "the version to stamp (default: git describe --tags --always --dirty)")
	flag.Parse()
	if err := run(*out, *ver); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(out, ver string) error {
	opts, err := defaults(ver)
	if err != nil {
		return err
	}
	for _, name := range Binaries {
		res, err := Build(opts, name, out)
		if err != nil {
			return err
		}
		fmt.Printf("%s %s index %s\n", name, version.Registry+"/"+name+":"+opts.Tag, res.Index)
		for _, f := range res.Tarballs {
			fmt.Println("  ", f)
		}
	}
	return nil
}

// defaults fills the options from the repository: the version from git describe (or ver),
// the revision, and SOURCE_DATE_EPOCH (or the commit time).
func defaults(ver string) (Options, error) {
	git := func(args ...string) (string, error) {
		b, err := exec.Command("git", args...).Output()
		if err != nil {
			return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	o := Options{Version: ver, Platforms: Platforms}
	if o.Version == "" {
		v, err := git("describe", "--tags", "--always", "--dirty", "--abbrev=12")
		if err != nil {
			return o, err
		}
		o.Version = v
	}
	rev, err := git("rev-parse", "HEAD")
	if err != nil {
		return o, err
	}
	o.Revision = rev
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	if epoch == "" {
		if epoch, err = git("log", "-1", "--format=%ct"); err != nil {
			return o, err
		}
	}
	secs, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return o, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", epoch, err)
	}
	o.Created = time.Unix(secs, 0).UTC()
	o.Tag = version.TagOf(o.Version)
	return o, nil
}
