#!/usr/bin/env bash
# Sign each pushed image index keylessly (Sigstore: the workflow's GitHub OIDC identity) and
# attest an SPDX SBOM of it. Needs cosign and syft on PATH (the release workflow installs
# them); run after hack/release/push.sh.
set -euo pipefail
version=$1
crane="go run github.com/google/go-containerregistry/cmd/crane@v0.22.1"
for name in operator proxy; do
  ref="ghcr.io/tollgate-dev/$name:$version"
  digest=$($crane digest "$ref")
  cosign sign --yes "ghcr.io/tollgate-dev/$name@$digest"
  syft scan "registry:ghcr.io/tollgate-dev/$name@$digest" -o "spdx-json=dist/$name.spdx.json"
  cosign attest --yes --type spdxjson --predicate "dist/$name.spdx.json" "ghcr.io/tollgate-dev/$name@$digest"
done
