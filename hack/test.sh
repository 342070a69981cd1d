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

# The TypeScript SDK upstream (internal/testupstream) needs node and its pinned modules. They
# are installed again only when the lockfile changed since the last install (a copy of it is
# kept in node_modules); output is shown only when something fails.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    log="$(mktemp)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm; } >"$log" 2>&1; then
      cat "$log" >&2; rm -f "$log"; echo "installing nodejs and npm failed" >&2; exit 1
    fi
    rm -f "$log"
  else
    echo "node and npm are missing: apt-get install -y nodejs npm (as root), then run again" >&2
    exit 1
  fi
fi
ts_upstream=internal/testupstream/ts
if ! cmp -s "$ts_upstream/package-lock.json" "$ts_upstream/node_modules/.installed-lock.json"; then
  if ! out="$(cd "$ts_upstream" && npm ci --ignore-scripts --no-audit --no-fund 2>&1)"; then
    printf '%s\n' "$out" >&2; echo "npm ci in $ts_upstream failed" >&2; exit 1
  fi
  cp "$ts_upstream/package-lock.json" "$ts_upstream/node_modules/.installed-lock.json"
fi

echo "--- task ci"
exec ./bin/task ci
