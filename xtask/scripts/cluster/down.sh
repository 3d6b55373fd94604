#!/usr/bin/env bash
# `cargo xtask cluster down`: removes everything `up.sh` made — processes, pod sandboxes, mounts,
# cgroups, the CNI bridge and veths, iptables chains and rules, ipsets, sysctls it changed, and
# the state directory — but keeps the binary cache. Safe to run when nothing (or only part) runs.
set -uo pipefail   # no -e: every step is best effort, the last one checks what is left
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
DOWN_START=$SECONDS

if [[ ! -d $STATE_DIR ]]; then
  log "no cluster state in $STATE_DIR: nothing to take down"
  exit 0
fi
env_get() { sed -n "s/^$1=//p" "$STATE_DIR/cluster.env" 2>/dev/null | head -1; }
KUBE_BIN="$(env_get kube_bin)"
CONTAINERD_BIN="$(env_get containerd_bin)"
TOOLS_BIN="$(env_get tools_bin)"

# 1. The node: stop kubelet first so it restarts nothing, then remove every pod sandbox through
#    CRI, which runs the CNI DEL (veth, address, masquerade rules) for each.
stop_daemon kubelet 20
if is_running containerd && [[ -x $TOOLS_BIN/cri ]]; then
  "$TOOLS_BIN/cri" -endpoint "unix://$CONTAINERD_SOCK" -timeout 90s teardown || log "warning: some pod sandboxes could not be removed through CRI; forcing"
fi
stop_daemon kube-router
stop_daemon storage
stop_daemon kube-proxy
stop_daemon containerd 20

# 2. Leftover processes: shims of our containerd, and anything still in our pod cgroups.
if [[ -n $CONTAINERD_BIN ]]; then
  for exe in /proc/[0-9]*/exe; do
    if [[ "$(readlink "$exe" 2>/dev/null)" == "$CONTAINERD_BIN/containerd-shim-runc-v2" ]]; then
      pid="${exe#/proc/}"; pid="${pid%/exe}"
      log "killing leftover shim $pid"; kill -KILL "$pid" 2>/dev/null || true
    fi
  done
fi
for _ in 1 2 3; do
  found=0
  while IFS= read -r procs; do
    while IFS= read -r pid; do
      [[ -n $pid ]] || continue
      found=1; kill -KILL "$pid" 2>/dev/null || true
    done <"$procs"
  done < <(for c in $(cgroup_dirs); do find "$c" -name cgroup.procs 2>/dev/null; done)
  ((found)) || break
  sleep 1
done
# cgroups, deepest first
for c in $(cgroup_dirs); do
  if [[ -d $c ]]; then find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null; fi
done

# 3. The control plane.
stop_daemon kube-scheduler
stop_daemon kube-controller-manager
stop_daemon kube-apiserver 20
stop_daemon etcd

# 4. Mounts under the state directory (pod volumes, rootfs overlays, shm, network namespaces).
for _ in 1 2 3; do
  mapfile -t mounts < <(awk -v d="$STATE_DIR" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-)
  ((${#mounts[@]})) || break
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
done

# 5. Network: veths on the bridge, the bridge, iptables chains and rules, ipsets.
if ip link show "$BRIDGE_NAME" >/dev/null 2>&1; then
  for v in $(ip -o link show master "$BRIDGE_NAME" | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link del "$v" 2>/dev/null || true
  done
  ip link del "$BRIDGE_NAME" 2>/dev/null || true
fi
if [[ -x $KUBE_BIN/kube-proxy ]]; then "$KUBE_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi

# remove_chains CMD: delete every rule that jumps to, and every chain named, KUBE-*, SEO-*,
# CNI-HOSTPORT-* or a CNI-* chain of this cluster's network, in every table.
remove_chains() {
  local cmd="$1" table chains
  command -v "$cmd" >/dev/null || return 0
  for table in filter nat mangle raw; do
    local dump; dump="$("$cmd-save" -t "$table" 2>/dev/null)" || continue
    # CNI-<hash> chains made by the bridge plugin carry a comment naming the network
    chains="$(awk '/^:(KUBE-|SEO-|CNI-HOSTPORT-|CNI-DN-)/{print substr($1,2)}' <<<"$dump")"
    chains+=$'\n'"$(grep -E "^-A CNI-[0-9a-f]+ .*name: \\\\?\"$CLUSTER_NAME\\\\?\"" <<<"$dump" | awk '{print $2}' | sort -u)"
    chains="$(grep -v '^$' <<<"$chains" | sort -u)"
    [[ -n $chains ]] || continue
    local re; re="$(paste -sd'|' <<<"$chains")"
    # rules in other chains that jump to ours
    grep -E "^-A .* -j ($re)( |$)" <<<"$dump" | grep -Ev "^-A ($re) " | while IFS= read -r rule; do
      eval "$cmd -w -t $table -D ${rule#-A }" 2>/dev/null || true
    done
    local c
    for c in $chains; do "$cmd" -w -t "$table" -F "$c" 2>/dev/null || true; done
    for c in $chains; do "$cmd" -w -t "$table" -X "$c" 2>/dev/null || true; done
  done
}
for cmd in iptables ip6tables iptables-legacy ip6tables-legacy; do remove_chains "$cmd"; done
if command -v ipset >/dev/null; then
  # ours (SEO-*) and kube-router's NetworkPolicy peers (KUBE-SRC-*, KUBE-DST-*; inet6: for IPv6)
  for s in $(ipset list -n 2>/dev/null | grep -E "^($CHAIN_PREFIX|(inet6:)?KUBE-(SRC|DST)-)" || true); do ipset destroy "$s" 2>/dev/null || true; done
fi
if command -v conntrack >/dev/null; then conntrack -D -s "$POD_CIDR" >/dev/null 2>&1 || true; fi

# 6. Host settings and directories up.sh changed or created.
saved="$STATE_DIR/host-state"
if [[ -f $saved ]]; then
  v="$(sed -n 's/^ip_forward=//p' "$saved")"; [[ -n $v ]] && sysctl -qw "net.ipv4.ip_forward=$v"
  v="$(sed -n 's/^bridge_nf=//p' "$saved")"; [[ -n $v && -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] && sysctl -qw "net.bridge.bridge-nf-call-iptables=$v"
  for p in $(sed -n 's/^created_if_present=//p' "$saved"); do
    [[ -e $p ]] || continue
    case "$p" in
      # only kubelet and this cluster's containerd (CNI result cache) write there
      /var/lib/kubelet | /var/lib/cni) log "removing $p (made by the cluster)"; rm -rf "$p" ;;
      # kubelet's links to the pod logs
      /var/log/containers) find "$p" -maxdepth 1 -type l -lname "$STATE_DIR/*" -delete; rmdir "$p" 2>/dev/null && log "removed $p" ;;
      # anything else only when empty: another program may have started to use it
      *) find "$p" -depth -type d -empty -delete 2>/dev/null
         if [[ -e $p ]]; then log "leaving $p: not empty"; else log "removed $p (empty)"; fi ;;
    esac
  done
fi
remaining="$(awk -v d="$STATE_DIR" 'index($5, d) == 1' /proc/self/mountinfo | wc -l)"
if ((remaining)); then die "$remaining mounts under $STATE_DIR are still busy; run down again"; fi
# The logs outlive the cluster (the last one's only), so a failed `up` can still be read.
LAST_LOGS="$STATE_DIR.last-logs"
rm -rf "$LAST_LOGS"
[[ -d $LOG_DIR ]] && mv "$LOG_DIR" "$LAST_LOGS"
rm -rf "$STATE_DIR"
log "cluster down in $((SECONDS - DOWN_START))s (binary cache kept in $CACHE_DIR; the cluster's logs in $LAST_LOGS)"
