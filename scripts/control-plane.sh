#!/usr/bin/env bash
# Build, once, the real Kubernetes control plane the API tests can run on:
# kube-apiserver and kube-controller-manager from k8s.io/kubernetes, etcd from
# go.etcd.io/etcd/server/v3, each at a pinned release, with Go and the Go module
# proxy only (no release downloads, no container images).
#
# k8s.io/kubernetes requires its staging modules (k8s.io/api, apiserver, ...) at
# v0.0.0 and replaces them with ./staging paths; the proxy serves them only at
# their published v0.<minor>.<patch>. A small build module therefore requires
# k8s.io/kubernetes and replaces every staging module with that version, as
# downstream distributions do.
#
# Binaries are cached outside the repository, keyed by both versions; a later run
# prints the cached directory at once. Prints the bin directory on stdout.
# With --cached it never builds: no cache is exit status 3 (the test suite asks
# this way, so a test run cannot turn into a 45-minute build; CI builds first).
#
#   KUBE_VERSION  (default v1.37.2)   ETCD_VERSION (default v3.6.16)
#   COORDSHARD_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/coordshard)
set -euo pipefail

kube=${KUBE_VERSION:-v1.37.2}
etcd=${ETCD_VERSION:-v3.6.16}
root=${COORDSHARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coordshard}
dir=$root/control-plane/kube-$kube-etcd-$etcd
bin=$dir/bin

say() { echo "control-plane: $*" >&2; }

if [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kube-controller-manager" ] && [ -x "$bin/etcd" ]; then
  echo "$bin"
  exit 0
fi
if [ "${1:-}" = --cached ]; then
  say "not built yet for kube $kube, etcd $etcd (run scripts/control-plane.sh)"
  exit 3
fi
command -v go >/dev/null || { say "needs Go (1.26 or later) and the Go module proxy"; exit 1; }

staging=v0.${kube#v1.}
minor=${kube#v1.}
minor=${minor%%.*}
mkdir -p "$dir/kube" "$dir/etcd" "$bin"
start=$(date +%s)

say "kube-apiserver, kube-controller-manager $kube (staging modules at $staging)"
cd "$dir/kube"
go mod download -json "k8s.io/kubernetes@$kube" >download.json
gomod=$(sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p' download.json)
{
  echo "module coordshard.test/control-plane"
  echo
  echo "go 1.26"
  echo
  echo "require k8s.io/kubernetes $kube"
  echo
  echo "replace ("
  sed -n 's|^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*$|\t\1 => \1 '"$staging"'|p' "$gomod"
  echo ")"
} >go.mod
go get "k8s.io/kubernetes/cmd/kube-apiserver@$kube" "k8s.io/kubernetes/cmd/kube-controller-manager@$kube" 2>/dev/null
stamp="-X k8s.io/component-base/version.gitVersion=$kube"
stamp+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
stamp+=" -X k8s.io/component-base/version.gitTreeState=clean"
go build -trimpath -ldflags "-s -w $stamp" -o "$bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager

say "etcd $etcd"
cd "$dir/etcd"
printf 'module coordshard.test/etcd\n\ngo 1.26\n' >go.mod
go get "go.etcd.io/etcd/server/v3@$etcd" 2>/dev/null
go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3

say "built in $(($(date +%s) - start)) s"
echo "$bin"
