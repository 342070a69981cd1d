#!/usr/bin/env bash
# The whole test suite on a fresh machine with Go (run as root, or with redis-server already
# installed): installs what the tests need, builds the pinned tools, then runs `task ci`.
# CI runs this with CI=true, where a missing real component fails its tests instead of
# skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "--- installing redis-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  else
    echo "redis-server is missing: apt-get install -y redis-server (as root), then run again" >&2
    exit 1
  fi
fi

echo "--- building pinned tools into ./bin"
(cd hack/tools && GOBIN="$PWD/../../bin" go install tool)

echo "--- kube-apiserver and etcd for envtest (built only when missing)"
KUBEBUILDER_ASSETS="$(hack/envtest.sh)"
export KUBEBUILDER_ASSETS

echo "--- task ci"
exec ./bin/task ci
