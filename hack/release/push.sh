#!/usr/bin/env bash
# Push the image indexes that `go run ./hack/images` wrote to DIST (OCI layouts) as
# ghcr.io/tollgate-dev/<name>:<version>. Thin on purpose: what it pushes is built and opened
# by TestImages on every change; this only moves bytes. Credentials from REGISTRY_USER and
# REGISTRY_PASSWORD.
set -euo pipefail
dist=$1 version=$2
crane="go run github.com/google/go-containerregistry/cmd/crane@v0.22.1"
echo "$REGISTRY_PASSWORD" | $crane auth login ghcr.io -u "$REGISTRY_USER" --password-stdin
for name in operator proxy; do
  $crane push --index "$dist/$name" "ghcr.io/tollgate-dev/$name:$version"
done
