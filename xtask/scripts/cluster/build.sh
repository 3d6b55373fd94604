#!/usr/bin/env bash
# Builds (once, into the cache outside the repository) every binary and image tarball the local
# cluster needs, at the versions pinned in lib.sh and ../k8s-bins.sh. Re-running is cheap: a binary
# that is already in the cache is not rebuilt.
#
# Sourced by up.sh (defines the *_BIN variables); run directly it just builds everything.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# go_install DEST_DIR CGO LDFLAGS TAGS MODULE VERSION PKG...: build pinned main packages of MODULE
# into DEST_DIR. A small wrapper module requires MODULE@VERSION and carries over its exclude and
# (non-local) replace directives, which `go install pkg@version` refuses.
go_install() {
  local dest="$1" cgo="$2" ldflags="$3" tags="$4" module="$5" version="$6"; shift 6
  local missing=0 p
  for p in "$@"; do [[ -x "$dest/${p##*/}" ]] || missing=1; done
  ((missing)) || return 0
  local start=$SECONDS
  log "building ${*##*/} from $module@$version (this takes minutes the first time)"
  local wrap="$CACHE_DIR/go-wrappers/${module//\//_}-$version"
  (
    go_env; export CGO_ENABLED="$cgo"
    if [[ ! -f $wrap/go.sum ]]; then
      mkdir -p "$wrap"
      local gomod; gomod="$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
      {
        printf 'module local/wrapper\n\ngo 1.24.0\n\nrequire %s %s\n\n' "$module" "$version"
        # single-line and block forms of exclude/replace, minus replacements by local paths
        awk '/^(exclude|replace) \(/{blk=$1; next} blk && /^\)/{blk=""; next}
             blk && /^[[:space:]]*(\/\/|$)/{next} blk {print blk, $0; next} /^(exclude|replace) /{print}' "$gomod" | grep -v '=> *\.' || true
      } >"$wrap/go.mod"
      { echo '//go:build tools'; echo; echo 'package tools'; echo; for p in "$@"; do echo "import _ \"$p\""; done; } >"$wrap/tools.go"
      (cd "$wrap" && go mod tidy -e >/dev/null)
    fi
    mkdir -p "$dest.tmp"
    cd "$wrap" && nice -n 19 go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$dest.tmp/" "$@"
  )
  mkdir -p "$dest"
  mv "$dest.tmp"/* "$dest/" && rmdir "$dest.tmp"
  log "built $(cd "$dest" && echo *) in $((SECONDS - start))s"
}

build_kube() {
  KUBE_BIN="$(nice -n 19 "$SCRIPT_DIR/../k8s-bins.sh" "kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd helm" | tail -1)"
}

build_containerd() {
  CONTAINERD_BIN="$CACHE_DIR/containerd-$CONTAINERD_VERSION/bin"
  local m=github.com/containerd/containerd/v2
  go_install "$CONTAINERD_BIN" 0 \
    "-s -w -X $m/version.Version=$CONTAINERD_VERSION -X $m/version.Revision=$CONTAINERD_VERSION -X $m/version.Package=$m" \
    "no_btrfs no_devmapper no_zfs" "$m" "$CONTAINERD_VERSION" \
    "$m/cmd/containerd" "$m/cmd/containerd-shim-runc-v2" "$m/cmd/ctr"
}

build_runc() {
  # runc needs cgo (its nsenter is C); seccomp support links libseccomp.
  RUNC_BIN="$CACHE_DIR/runc-$RUNC_VERSION/bin"
  # Every pod of the project asks for the RuntimeDefault seccomp profile: a runc without
  # seccomp fails every sandbox ("seccomp not supported"). Such a build is never kept.
  pkg-config --exists libseccomp 2>/dev/null \
    || die "libseccomp's development files are missing (apt-get install libseccomp-dev): runc needs them for seccomp"
  if [[ -x $RUNC_BIN/runc ]] && ! "$RUNC_BIN/runc" --version 2>/dev/null | grep -q '^libseccomp'; then
    log "the cached runc was built without seccomp: building it again"
    rm -f "$RUNC_BIN/runc"
  fi
  go_install "$RUNC_BIN" 1 "-s -w -X main.version=${RUNC_VERSION#v} -X main.gitCommit=$RUNC_VERSION" "seccomp" \
    github.com/opencontainers/runc "$RUNC_VERSION" github.com/opencontainers/runc
}

build_cni() {
  CNI_BIN="$CACHE_DIR/cni-plugins-$CNI_PLUGINS_VERSION/bin"
  local m=github.com/containernetworking/plugins
  go_install "$CNI_BIN" 0 "-s -w -X $m/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" "" \
    "$m" "$CNI_PLUGINS_VERSION" \
    "$m/plugins/main/bridge" "$m/plugins/main/loopback" "$m/plugins/meta/portmap" "$m/plugins/ipam/host-local"
}

build_coredns() {
  COREDNS_BIN="$CACHE_DIR/coredns-$COREDNS_VERSION/bin"
  go_install "$COREDNS_BIN" 0 "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" "" \
    github.com/coredns/coredns "$COREDNS_VERSION" github.com/coredns/coredns
}

# kube-router, run with only its NetworkPolicy controller (the "firewall": iptables and ipset);
# its router (BGP) and service proxy stay off, kube-proxy and the bridge CNI do those jobs.
# Built with `go install module@version`, so exactly with the dependencies of its own go.mod and
# go.sum (it has no replace directives; a wrapper module's tidy would pick newer ones).
build_kube_router() {
  KUBE_ROUTER_BIN="$CACHE_DIR/kube-router-$KUBE_ROUTER_VERSION/bin"
  [[ -x $KUBE_ROUTER_BIN/kube-router ]] && return 0
  local m=github.com/cloudnativelabs/kube-router/v2 start=$SECONDS
  log "building kube-router from $m@$KUBE_ROUTER_VERSION (this takes minutes the first time)"
  rm -rf "$KUBE_ROUTER_BIN.tmp"
  (go_env; GOBIN="$KUBE_ROUTER_BIN.tmp" nice -n 19 go install -trimpath \
    -ldflags "-s -w -X $m/pkg/version.Version=$KUBE_ROUTER_VERSION -X $m/pkg/version.BuildDate=1970-01-01T00:00:00Z" \
    "$m/cmd/kube-router@$KUBE_ROUTER_VERSION")
  mkdir -p "$(dirname "$KUBE_ROUTER_BIN")"
  mv "$KUBE_ROUTER_BIN.tmp" "$KUBE_ROUTER_BIN"
  log "built kube-router in $((SECONDS - start))s"
}

# The project's own small Go programs (tools/): pause, probe, storage (volume provisioner),
# cri (sandbox teardown). Cached by a hash of their sources.
build_tools() {
  local src="$SCRIPT_DIR/tools" sum
  sum="$(cd "$src" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)"
  TOOLS_BIN="$CACHE_DIR/cluster-tools-$sum/bin"
  if [[ -x $TOOLS_BIN/storage && -x $TOOLS_BIN/pause && -x $TOOLS_BIN/probe && -x $TOOLS_BIN/cri ]]; then return 0; fi
  local start=$SECONDS
  log "building cluster tools (pause, probe, storage, cri)"
  mkdir -p "$TOOLS_BIN"
  (go_env; cd "$src" && nice -n 19 go build -trimpath -ldflags "-s -w" -o "$TOOLS_BIN/" ./pause ./probe ./storage ./cri)
  log "built cluster tools in $((SECONDS - start))s"
  # builds of earlier sources (and their images) are not needed any more
  local old
  for old in "$CACHE_DIR"/cluster-tools-* "$CACHE_DIR"/cluster-images-cluster-tools-*; do
    [[ -e $old && $old != "$CACHE_DIR/cluster-tools-$sum" && $old != *"cluster-tools-$sum-"* ]] && rm -rf "$old"
  done
  return 0
}

# oci_image OUT.tar REF ROOTFS_DIR ENTRYPOINT_JSON: a single-layer image in the docker-archive
# format that `ctr images import` reads, built without a container engine.
oci_image() {
  local out="$1" ref="$2" rootfs="$3" entrypoint="$4"
  local work; work="$(mktemp -d)"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$rootfs" -cf "$work/layer.tar" .
  local diff; diff="sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
  cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Entrypoint":$entrypoint,"Env":["PATH=/"],"User":"65534:65534"},"rootfs":{"type":"layers","diff_ids":["$diff"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"xtask/scripts/cluster/build.sh"}]}
JSON
  printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]\n' "$ref" >"$work/manifest.json"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work" -cf "$out.tmp" manifest.json config.json layer.tar
  mv "$out.tmp" "$out"
  rm -rf "$work"
}

build_images() {
  IMAGE_DIR="$CACHE_DIR/cluster-images-$(basename "$(dirname "$TOOLS_BIN")")-coredns-$COREDNS_VERSION"
  mkdir -p "$IMAGE_DIR"
  local r; r="$(mktemp -d)"
  if [[ ! -f $IMAGE_DIR/pause.tar ]]; then
    mkdir -p "$r/pause"; cp "$TOOLS_BIN/pause" "$r/pause/pause"
    oci_image "$IMAGE_DIR/pause.tar" "$PAUSE_IMAGE" "$r/pause" '["/pause"]'
  fi
  if [[ ! -f $IMAGE_DIR/probe.tar ]]; then
    mkdir -p "$r/probe"; cp "$TOOLS_BIN/probe" "$r/probe/probe"
    oci_image "$IMAGE_DIR/probe.tar" "$PROBE_IMAGE" "$r/probe" '["/probe"]'
  fi
  if [[ ! -f $IMAGE_DIR/coredns.tar ]]; then
    mkdir -p "$r/coredns"; cp "$COREDNS_BIN/coredns" "$r/coredns/coredns"
    oci_image "$IMAGE_DIR/coredns.tar" "$COREDNS_IMAGE" "$r/coredns" '["/coredns"]'
  fi
  rm -rf "$r"
}

build_all() {
  command -v go >/dev/null || die "Go is required to build the cluster's components"
  command -v gcc >/dev/null || die "a C compiler is required to build runc (cgo)"
  local start=$SECONDS
  # One build at a time (CI starts one in the background): a second waits, then finds the
  # binaries built.
  mkdir -p "$CACHE_DIR"
  [[ $EUID -ne 0 ]] || ensure_host_tools
  if command -v flock >/dev/null 2>&1; then
    exec 8>"$CACHE_DIR/.cluster-build.lock"
    if ! flock -n 8; then
      log "another build of the cluster binaries is running; waiting for it"
      flock 8
    fi
  fi
  build_containerd
  build_runc
  build_cni
  build_coredns
  build_kube_router
  build_tools
  build_images
  build_kube
  if command -v flock >/dev/null 2>&1; then exec 8>&-; fi
  log "all cluster binaries ready in $((SECONDS - start))s"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  build_all
fi
