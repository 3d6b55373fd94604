# shellcheck shell=bash
# shellcheck disable=SC2034  # the settings here are used by the scripts that source this file
# Shared settings and helpers for the local single-node cluster (`cargo xtask cluster ...`).
# Sourced by up.sh, down.sh, status.sh and build.sh; not meant to be run directly.

# --- pinned versions: the one place the cluster's components are set --------------------------
# Kubernetes, etcd and helm are pinned in ../k8s-bins.sh (KUBE_VERSION, ETCD_VERSION, HELM_VERSION).
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.1.5}"
RUNC_VERSION="${RUNC_VERSION:-v1.3.3}"
CNI_PLUGINS_VERSION="${CNI_PLUGINS_VERSION:-v1.7.1}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.5}"
KUBE_ROUTER_VERSION="${KUBE_ROUTER_VERSION:-v2.1.0}"   # the NetworkPolicy enforcer (its firewall only)
PAUSE_TAG="3.10"            # tag of the locally built sandbox image
# --------------------------------------------------------------------------------------------------

# --- cluster layout -----------------------------------------------------------------------------
CLUSTER_NAME="${SEO_CLUSTER_NAME:-seo}"
POD_CIDR="${SEO_POD_CIDR:-10.244.0.0/24}"
SERVICE_CIDR="${SEO_SERVICE_CIDR:-10.96.0.0/16}"
KUBERNETES_SVC_IP="10.96.0.1"
DNS_SVC_IP="10.96.0.10"
CLUSTER_DOMAIN="cluster.local"
BRIDGE_NAME="seo-cni0"
CGROUP_ROOT="/scan-engine-operator"     # every pod cgroup lives under this one
APISERVER_PORT="${SEO_APISERVER_PORT:-6443}"
ETCD_CLIENT_PORT="${SEO_ETCD_PORT:-2479}"
ETCD_PEER_PORT="$((ETCD_CLIENT_PORT + 1))"
KUBE_ROUTER_HEALTH_PORT="${SEO_KUBE_ROUTER_HEALTH_PORT:-20244}"
CHAIN_PREFIX="SEO-"                     # the iptables chains and ipsets the scripts make (kube-proxy's
                                        # and kube-router's are KUBE-*)
IMAGE_REPO="scan-engine-operator"
PAUSE_IMAGE="docker.io/$IMAGE_REPO/pause:$PAUSE_TAG"
PROBE_IMAGE="docker.io/$IMAGE_REPO/cluster-probe:dev"
COREDNS_IMAGE="docker.io/$IMAGE_REPO/coredns:$COREDNS_VERSION"
STORAGE_PROVISIONER="scan-engine-operator.local/hostpath"
# --------------------------------------------------------------------------------------------------

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../../.." && pwd)"
CACHE_DIR="${SEO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/scan-engine-operator}"
STATE_DIR="${SEO_CLUSTER_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/scan-engine-operator/cluster}"
KUBECONFIG_PATH="$STATE_DIR/kubeconfig"
RUN_DIR="$STATE_DIR/run"        # sockets, pid files
LOG_DIR="$STATE_DIR/logs"
PKI_DIR="$STATE_DIR/pki"
CONTAINERD_SOCK="$RUN_DIR/containerd.sock"

log() { printf '[cluster %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() {
  [[ $EUID -eq 0 ]] || die "the local cluster runs kubelet, containerd and iptables: run as root"
}

# go_env: the environment for every Go build (reproducible, no cgo unless asked for).
go_env() {
  export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS="${GOFLAGS:--buildvcs=false}"
  export CGO_ENABLED=0
}

# write_file PATH: write stdin to PATH only when the content differs, so a running daemon that
# watches its configuration (kube-proxy exits when it changes) is not disturbed by `up` again.
write_file() {
  local path="$1" tmp="$1.new"
  cat >"$tmp"
  if cmp -s "$tmp" "$path"; then rm -f "$tmp"; else mv "$tmp" "$path"; fi
}

# pid helpers: every long-running process has a pid file in RUN_DIR holding its pid and the
# program it runs, so a pid reused by another program after a reboot is never taken for ours.
pid_of() { local f="$RUN_DIR/$1.pid"; [[ -f $f ]] && head -1 "$f"; }
is_running() {
  local pid want have
  pid="$(pid_of "$1")" || return 1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
  want="$(sed -n 2p "$RUN_DIR/$1.pid")"
  have="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -1)"
  [[ -z $want || $have == "$want" ]]
}

# start_daemon NAME CMD...: run CMD in its own session with output to LOG_DIR/NAME.log.
start_daemon() {
  local name="$1"; shift
  if is_running "$name"; then log "$name already running (pid $(pid_of "$name"))"; return 0; fi
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null &
  printf '%s\n%s\n' "$!" "$1" >"$RUN_DIR/$name.pid"
  log "started $name (pid $!, log $LOG_DIR/$name.log)"
}

# stop_daemon NAME [TIMEOUT_S]: SIGTERM, wait, then SIGKILL the process named by the pid file.
stop_daemon() {
  local name="$1" timeout="${2:-15}" pid
  pid="$(pid_of "$name")" || return 0
  if is_running "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < timeout * 5; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then log "$name did not stop in ${timeout}s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    log "stopped $name"
  fi
  rm -f "$RUN_DIR/$name.pid"
}

# wait_for DESCRIPTION TIMEOUT_S CMD...: retry CMD every second until it succeeds.
wait_for() {
  local what="$1" timeout="$2"; shift 2
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - start >= timeout)); then die "timed out after ${timeout}s waiting for $what"; fi
    sleep 1
  done
  log "$what: ready after $((SECONDS - start))s"
}

# node_ip: the address of the interface holding the default route, else the first global one.
node_ip() {
  if [[ -n ${SEO_NODE_IP:-} ]]; then echo "$SEO_NODE_IP"; return; fi
  local ip
  ip="$(ip -4 -o route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')"
  [[ -n $ip ]] || ip="$(ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1)"
  [[ -n $ip ]] || die "no global IPv4 address for the node: set SEO_NODE_IP"
  echo "$ip"
}

# cgroup_dirs: this cluster's cgroup root in every hierarchy kubelet uses (one per v1
# controller mount; the single unified hierarchy on a cgroup v2 host).
cgroup_dirs() {
  if [[ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" == cgroup2fs ]]; then
    echo "/sys/fs/cgroup${CGROUP_ROOT}"
  else
    awk '$9 == "cgroup" {print $5}' /proc/self/mountinfo | sort -u | sed "s|\$|${CGROUP_ROOT}|"
  fi
}

kctl() { KUBECONFIG="$KUBECONFIG_PATH" "$KUBE_BIN/kubectl" --cache-dir "$STATE_DIR/kube-cache" "$@"; }

# ensure_host_tools: what the cluster's build (runc links libseccomp through cgo) and its
# daemons need from the host, installed with apt-get where it is missing (root).
ensure_host_tools() {
  local missing=() t
  for t in iptables ipset ip openssl gcc pkg-config; do command -v "$t" >/dev/null || missing+=("$t"); done
  command -v conntrack >/dev/null || missing+=(conntrack)
  pkg-config --exists libseccomp 2>/dev/null || missing+=(libseccomp)
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null || die "missing host tools: ${missing[*]} (install iptables, ipset, iproute2, openssl, conntrack, gcc, pkg-config and libseccomp's development files)"
  log "installing host packages for: ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq iptables ipset iproute2 openssl conntrack gcc libc6-dev pkg-config libseccomp-dev >/dev/null
}
