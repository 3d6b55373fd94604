#!/usr/bin/env bash
# `cargo xtask cluster status`: which of the local cluster's processes run, and the node and
# system pods as the API server sees them. Exits 0 when every process runs and the node is Ready.
set -uo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ! -d $STATE_DIR ]]; then
  echo "no local cluster (state directory $STATE_DIR does not exist)"
  exit 1
fi
KUBE_BIN="$(sed -n 's/^kube_bin=//p' "$STATE_DIR/cluster.env" 2>/dev/null)"
ok=0
for d in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy kube-router storage; do
  if is_running "$d"; then printf '%-24s running (pid %s)\n' "$d" "$(pid_of "$d")"
  else printf '%-24s NOT RUNNING (log %s)\n' "$d" "$LOG_DIR/$d.log"; ok=1; fi
done
echo
if [[ -x $KUBE_BIN/kubectl ]] && kctl get --raw /readyz >/dev/null 2>&1; then
  kctl get nodes -o wide
  echo
  kctl get pods -A -o wide
  kctl wait --for=condition=Ready node --all --timeout=1s >/dev/null 2>&1 || ok=1
else
  echo "the API server does not answer"; ok=1
fi
echo
echo "export KUBECONFIG=$KUBECONFIG_PATH"
exit $ok
