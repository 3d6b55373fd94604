#!/usr/bin/env bash
# Builds pinned Kubernetes control-plane binaries, etcd and helm from Go modules into a cache
# outside the repository. Prints the directory holding the binaries on its last line.
#
# Honours KUBEBUILDER_ASSETS: when it names a directory that already holds etcd and
# kube-apiserver, nothing is built and that directory is printed.
#
# Usage: k8s-bins.sh [--check] [BINARY...]   (default: every binary below)
#   --check  build nothing: print the directory if the binaries are there, else exit 3.
# Concurrent runs are serialised with a lock in the cache directory.
set -euo pipefail

check_only=0
if [[ "${1:-}" == "--check" ]]; then
  check_only=1
  shift
fi

# --- pinned versions: the one place they are set -----------------------------------------
KUBE_VERSION="${KUBE_VERSION:-v1.34.4}"     # last minor whose kubelet runs on cgroup v1 by default
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${HELM_VERSION:-v3.19.5}"
KUBE_SCORE_VERSION="${KUBE_SCORE_VERSION:-v1.20.0}"   # the manifest linter of the chart and the operator's objects
KUBE_BINS_DEFAULT="kube-apiserver kube-controller-manager kubectl"
# ----------------------------------------------------------------------------------------------

want="${*:-$KUBE_BINS_DEFAULT etcd helm kube-score}"

if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/etcd" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]]; then
  echo "using binaries from KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS" >&2
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

cache="${SEO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/scan-engine-operator}"
bin="$cache/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin"

# kube-score shares the directory but has its own pin: a binary of another version is rebuilt.
if [[ -x "$bin/kube-score" ]] && ! "$bin/kube-score" version 2>/dev/null | grep -q "version: $KUBE_SCORE_VERSION,"; then
  rm -f "$bin/kube-score"
fi

missing=""
for name in $want; do
  [[ -x "$bin/$name" ]] || missing+=" $name"
done
if [[ -z "$missing" ]]; then
  echo "$bin"
  exit 0
fi
if [[ "$check_only" == 1 ]]; then
  echo "error: not built yet:$missing (expected in $bin)" >&2
  exit 3
fi

if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is required to build etcd, kube-apiserver and helm (install Go >= 1.24, or set KUBEBUILDER_ASSETS to a directory holding the binaries)" >&2
  exit 2
fi

work="$cache/go-wrappers"
mkdir -p "$bin" "$work"
# One build at a time: a second run waits, then finds the binaries built.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/.build.lock"
  if ! flock -n 9; then
    echo "another build of the control-plane binaries is running; waiting for it" >&2
    flock 9
  fi
fi
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
staging="v0.${KUBE_VERSION#v1.}"

build_kube() {
  local name="$1" dir="$work/kubernetes-$KUBE_VERSION"
  if [[ ! -f "$dir/go.mod" ]]; then
    mkdir -p "$dir"
    local gomod
    gomod="$(curl -fsSL "$(go env GOPROXY | cut -d, -f1)/k8s.io/kubernetes/@v/$KUBE_VERSION.mod")"
    {
      echo "module local/kube-wrapper"
      echo
      echo "go 1.24.0"
      echo
      echo "require k8s.io/kubernetes $KUBE_VERSION"
      echo
      # every staging module the kubernetes module replaces with ./staging is pinned to its release tag
      grep -oE 'k8s.io/[a-z0-9-]+ => ./staging' <<<"$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
    } >"$dir/go.mod.tmp"
    mv "$dir/go.mod.tmp" "$dir/go.mod"
    cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    (cd "$dir" && go mod tidy -e >/dev/null)
  fi
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$dir" && go build -trimpath -ldflags "$ld" -o "$bin/$name.tmp" "k8s.io/kubernetes/cmd/$name")
  mv "$bin/$name.tmp" "$bin/$name"
}

# build_module NAME MODULE VERSION PACKAGE LDFLAGS: builds PACKAGE of MODULE@VERSION into
# $bin/NAME, through a wrapper module that requires it (kept in $work, so a rebuild downloads
# nothing).
build_module() {
  local name="$1" module="$2" version="$3" package="$4" ldflags="$5"
  local dir="$work/$name-$version"
  if [[ ! -f "$dir/go.mod" ]]; then
    mkdir -p "$dir"
    printf 'module local/%s-wrapper\n\ngo 1.24.0\n\nrequire %s %s\n' "$name" "$module" "$version" >"$dir/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$package" >"$dir/tools.go"
    (cd "$dir" && go mod tidy -e >/dev/null)
  fi
  (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$bin/$name.tmp" "$package")
  mv "$bin/$name.tmp" "$bin/$name"
}

build_etcd() {
  build_module etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3 "-s -w"
}

build_helm() {
  build_module helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
}

build_kube_score() {
  build_module kube-score github.com/zegl/kube-score "$KUBE_SCORE_VERSION" github.com/zegl/kube-score/cmd/kube-score \
    "-s -w -X main.version=$KUBE_SCORE_VERSION -X main.commit=$KUBE_SCORE_VERSION -X main.date=1970-01-01T00:00:00Z"
}

for name in $want; do
  if [[ -x "$bin/$name" ]]; then continue; fi
  echo "building $name into $bin" >&2
  start=$SECONDS
  case "$name" in
    etcd) build_etcd ;;
    helm) build_helm ;;
    kube-score) build_kube_score ;;
    *) build_kube "$name" ;;
  esac
  echo "built $name in $((SECONDS - start))s" >&2
done
echo "$bin"
