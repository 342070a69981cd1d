#!/usr/bin/env bash
# Builds the control plane that envtest-based tests start (kube-apiserver and etcd) into
# bin/k8s, then prints that folder's absolute path, and nothing else, on stdout:
#
#   export KUBEBUILDER_ASSETS="$(hack/envtest.sh)"
#
# No download site for envtest's binaries is reachable (setup-envtest cannot work), so both are
# built from the Go module proxy, at the versions pinned in hack/tools/kube/go.mod. Idempotent:
# a binary is built only when it is missing or reports another version than the one pinned, so
# a second run takes well under a second. A cold build of kube-apiserver takes minutes
# (about 4 on 2 cores); etcd about 20 s more. Progress goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/hack/tools/kube"
dir="$root/bin/k8s"

# The versions, from the tool module: the one place they are written.
kube_version="$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$tools/go.mod")"
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ { print $2 }' "$tools/go.mod")"
if [[ ! "$kube_version" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]]; then
  echo "envtest.sh: cannot read the k8s.io/kubernetes version from $tools/go.mod" >&2
  exit 1
fi
kube_major="${BASH_REMATCH[1]}"
kube_minor="${BASH_REMATCH[2]}"
if [ -z "$etcd_version" ]; then
  echo "envtest.sh: cannot read the go.etcd.io/etcd/server/v3 version from $tools/go.mod" >&2
  exit 1
fi

# have BINARY WANT: the binary exists and its --version output contains WANT.
have() {
  [ -x "$dir/$1" ] && "$dir/$1" --version 2>/dev/null | grep -qF -- "$2"
}

# build BINARY PACKAGE [go build flags...]: builds into a temporary file first, so an
# interrupted build never leaves a binary that looks complete.
build() {
  local name="$1" pkg="$2"
  shift 2
  local start=$SECONDS
  echo "--- building $name ($pkg) into $dir" >&2
  # Static binaries, as Kubernetes releases them; GOFLAGS from the environment still apply.
  local tmp="$dir/.$name.$$.tmp" # per run: two runs at once do not write one file
  trap "rm -f '$tmp'" EXIT
  (cd "$tools" && CGO_ENABLED=0 go build -trimpath "$@" -o "$tmp" "$pkg")
  mv -f "$tmp" "$dir/$name"
  trap - EXIT
  echo "--- built $name in $((SECONDS - start)) s" >&2
}

mkdir -p "$dir"

# kube-apiserver reports "Kubernetes v1.37.2": the version is stamped at link time, as the
# Kubernetes build does; without it the binary says v0.0.0-master and clients that check the
# server version are misled.
if ! have kube-apiserver "Kubernetes $kube_version"; then
  build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver -ldflags "\
-X k8s.io/component-base/version.gitVersion=$kube_version \
-X k8s.io/component-base/version.gitMajor=$kube_major \
-X k8s.io/component-base/version.gitMinor=$kube_minor \
-X k8s.io/component-base/version.gitTreeState=clean"
fi

# etcd reports "etcd Version: 3.7.0" from its own source: nothing to stamp.
if ! have etcd "etcd Version: ${etcd_version#v}"; then
  build etcd go.etcd.io/etcd/server/v3
fi

echo "$dir"
