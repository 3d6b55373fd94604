#!/usr/bin/env bash
# `cargo xtask cluster verify`: checks a running local cluster end to end, in a throwaway
# namespace, with the locally built probe image:
#   1. the node is Ready;
#   2. a pod resolves kubernetes.default.svc.cluster.local through CoreDNS;
#   3. a client pod reaches a server pod across the bridge, by pod IP and through a Service;
#   4. a deny-all ingress NetworkPolicy blocks that traffic, and an allow rule lets it back in;
#      an egress policy that allows only DNS blocks it again;
#   5. a PersistentVolumeClaim of the default StorageClass is provisioned, written to by a
#      non-root pod, and its volume is deleted with it.
# Prints one line per check and "N passed, N failed" at the end; exits non-zero on any failure.
set -uo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
KUBE_BIN="$(sed -n 's/^kube_bin=//p' "$STATE_DIR/cluster.env" 2>/dev/null)"
[[ -x $KUBE_BIN/kubectl ]] || die "no local cluster: run \`cargo xtask cluster up\` first"
NS="cluster-verify"
passed=0 failed=0
check() {
  local what="$1"; shift
  local start=$SECONDS
  if "$@"; then echo "ok    $what ($((SECONDS - start))s)"; passed=$((passed + 1))
  else echo "FAIL  $what ($((SECONDS - start))s)"; failed=$((failed + 1)); fi
}
# retry TIMEOUT CMD...: CMD succeeds within TIMEOUT seconds
retry() { local t="$1" s=$SECONDS; shift; until "$@" >/dev/null 2>&1; do ((SECONDS - s < t)) || return 1; sleep 1; done; }
# blocked TIMEOUT CMD...: CMD keeps failing, first after the policy is applied (up to TIMEOUT s)
blocked() { local t="$1" s=$SECONDS; shift; while "$@" >/dev/null 2>&1; do ((SECONDS - s < t)) || return 1; sleep 1; done; }
fails() { ! "$@" >/dev/null 2>&1; }
in_client() { kctl -n "$NS" exec client -- /probe "$@"; }

kctl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kctl create namespace "$NS" >/dev/null
kctl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: server}}
spec:
  containers:
  - {name: probe, image: $PROBE_IMAGE, imagePullPolicy: Never, args: [serve, ":8080"], ports: [{name: http, containerPort: 8080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  containers:
  - {name: probe, image: $PROBE_IMAGE, imagePullPolicy: Never, args: [sleep]}
---
apiVersion: v1
kind: Service
metadata: {name: server}
spec:
  selector: {app: server}
  ports: [{port: 80, targetPort: http}]
EOF

check "node Ready" kctl wait --for=condition=Ready node --all --timeout=60s
check "probe pods Running (locally built FROM-scratch image)" kctl -n "$NS" wait --for=condition=Ready pod/server pod/client --timeout=120s
check "CoreDNS resolves kubernetes.default.svc.$CLUSTER_DOMAIN from a pod" \
  retry 30 in_client resolve "kubernetes.default.svc.$CLUSTER_DOMAIN"
echo "      $(in_client resolve "kubernetes.default.svc.$CLUSTER_DOMAIN" 2>&1 | tr '\n' ' ')"
SERVER_IP="$(kctl -n "$NS" get pod server -o jsonpath='{.status.podIP}')"
check "client reaches server by pod IP ($SERVER_IP) across the bridge" retry 30 in_client get "http://$SERVER_IP:8080/" 2s
check "client reaches server through its Service name" retry 30 in_client get "http://server.$NS.svc.$CLUSTER_DOMAIN/" 2s

kctl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all}
spec:
  podSelector: {}
  policyTypes: [Ingress]
EOF
check "deny-all NetworkPolicy blocks client -> server (pod IP)" blocked 20 in_client get "http://$SERVER_IP:8080/" 2s
check "... and stays blocked" fails in_client get "http://$SERVER_IP:8080/" 2s
check "deny-all NetworkPolicy blocks client -> server (Service)" fails in_client get "http://server.$NS.svc.$CLUSTER_DOMAIN/" 2s

kctl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: http}]
EOF
check "an allow rule (podSelector + named port) lets client -> server back in" retry 20 in_client get "http://$SERVER_IP:8080/" 2s

kctl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress-dns-only}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}, podSelector: {matchLabels: {k8s-app: kube-dns}}}]
    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
EOF
check "an egress policy (DNS only) blocks client -> server" blocked 20 in_client get "http://$SERVER_IP:8080/" 2s
check "... while DNS still resolves from the client" retry 10 in_client resolve "kubernetes.default.svc.$CLUSTER_DOMAIN"

kctl -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: probe
    image: $PROBE_IMAGE
    imagePullPolicy: Never
    args: [write, /data/probe.txt]
    securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
EOF
pv_gone() { ! kctl get pv -o name | grep -q "$1"; }
check "a PVC of the default StorageClass binds, and a non-root pod writes to it" \
  kctl -n "$NS" wait --for=jsonpath='{.status.phase}'=Succeeded pod/writer --timeout=60s
PV="$(kctl -n "$NS" get pvc data -o jsonpath='{.spec.volumeName}')"
kctl -n "$NS" delete pod writer --wait=true >/dev/null
kctl -n "$NS" delete pvc data --wait=false >/dev/null
check "deleting the PVC deletes its volume ($PV)" retry 30 pv_gone "${PV:-none}"

if [[ ${KEEP:-0} != 1 ]]; then kctl delete namespace "$NS" --wait=false >/dev/null; fi
echo "$passed passed, $failed failed"
((failed == 0))
