#!/usr/bin/env bash
# A kind cluster for the project, for users who have kind and docker (or podman) — an
# alternative to `cargo xtask cluster up` that needs neither root nor a cgroup v1 host.
#
#   xtask/scripts/cluster/kind.sh [up]   create the cluster (if absent), load target/images/*.tar,
#                                        write the kubeconfig and print `export KUBECONFIG=...`
#   xtask/scripts/cluster/kind.sh load   (re)load target/images/*.tar only
#   xtask/scripts/cluster/kind.sh down   delete the cluster and its kubeconfig
#
# NetworkPolicy: kind >= v0.24.0 runs a NetworkPolicy enforcer (kube-network-policies) next to its
# default CNI, kindnet; older kind enforces none. With an older kind, or with
# SEO_KIND_CNI=calico, the cluster is created without kindnet and Calico is installed from
# SEO_CALICO_MANIFEST (a URL or file the user provides; nothing is fetched by default).
#
# Environment: SEO_KIND_CLUSTER (name, default scan-engine-operator), SEO_KIND_NODE_IMAGE
# (default: kind's own default node image), SEO_KIND_CNI (kindnet | calico), SEO_CALICO_MANIFEST.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME="${SEO_KIND_CLUSTER:-scan-engine-operator}"
KIND_STATE="${SEO_KIND_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/scan-engine-operator/kind}"
KIND_KUBECONFIG="$KIND_STATE/kubeconfig"
CNI="${SEO_KIND_CNI:-kindnet}"
action="${1:-up}"

command -v kind >/dev/null || die "kind is not installed (https://kind.sigs.k8s.io); or use \`cargo xtask cluster up\` as root"
command -v kubectl >/dev/null || die "kubectl is required (\`xtask/scripts/k8s-bins.sh kubectl\` builds one; put its directory on PATH)"

exists() { kind get clusters 2>/dev/null | grep -qx "$NAME"; }

# kind_at_least MINOR: kind's version is >= v0.MINOR
kind_at_least() {
  local v; v="$(kind version 2>/dev/null | sed -n 's/^kind v0\.\([0-9]*\)\..*/\1/p')"
  [[ -n $v ]] && ((v >= $1))
}

load_images() {
  local t n=0
  for t in "$REPO_ROOT"/target/images/*.tar; do
    [[ -f $t ]] || continue
    log "loading $(basename "$t") into kind cluster $NAME"
    kind load image-archive "$t" --name "$NAME"
    n=$((n + 1))
  done
  ((n)) || log "no project images in target/images/ (run \`cargo xtask images\`, then \`$0 load\`)"
}

case "$action" in
  up)
    mkdir -p "$KIND_STATE"
    if ! kind_at_least 24 && [[ $CNI == kindnet ]]; then
      log "warning: this kind is older than v0.24.0: kindnet will not enforce NetworkPolicy; use a newer kind or SEO_KIND_CNI=calico"
    fi
    if exists; then
      log "kind cluster $NAME exists"
    else
      config="$KIND_STATE/kind-config.yaml"
      {
        echo "kind: Cluster"
        echo "apiVersion: kind.x-k8s.io/v1alpha4"
        echo "networking:"
        echo "  podSubnet: 10.244.0.0/16"
        echo "  serviceSubnet: $SERVICE_CIDR"
        [[ $CNI == calico ]] && echo "  disableDefaultCNI: true"
        echo "nodes:"
        echo "- role: control-plane"
      } >"$config"
      args=(create cluster --name "$NAME" --config "$config")
      # without a CNI the node becomes Ready only once Calico runs: wait after installing it
      if [[ $CNI != calico ]]; then args+=(--wait 180s); fi
      if [[ -n ${SEO_KIND_NODE_IMAGE:-} ]]; then args+=(--image "$SEO_KIND_NODE_IMAGE"); fi
      kind "${args[@]}"
    fi
    kind get kubeconfig --name "$NAME" >"$KIND_KUBECONFIG"
    chmod 600 "$KIND_KUBECONFIG"
    if [[ $CNI == calico ]]; then
      [[ -n ${SEO_CALICO_MANIFEST:-} ]] || die "SEO_CALICO_MANIFEST must name Calico's manifest (URL or file) for SEO_KIND_CNI=calico"
      KUBECONFIG="$KIND_KUBECONFIG" kubectl apply -f "$SEO_CALICO_MANIFEST"
      KUBECONFIG="$KIND_KUBECONFIG" kubectl wait --for=condition=Ready node --all --timeout=300s
    fi
    load_images
    echo "export KUBECONFIG=$KIND_KUBECONFIG"
    ;;
  load)
    exists || die "no kind cluster $NAME: run $0 up"
    load_images
    ;;
  down)
    if exists; then kind delete cluster --name "$NAME"; fi
    rm -rf "$KIND_STATE"
    ;;
  *) die "usage: $0 [up|load|down]" ;;
esac
