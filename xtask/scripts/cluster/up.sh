#!/usr/bin/env bash
# `cargo xtask cluster up`: a real single-node Kubernetes cluster on this host.
#
# Builds (once, cached) and starts: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd + runc, kubelet, kube-proxy (iptables), the bridge CNI, CoreDNS (Deployment, Service
# 10.96.0.10), kube-router's NetworkPolicy controller as the enforcer (firewall only: iptables and
# ipset; its router and service proxy off) and a hostPath volume provisioner for the default
# StorageClass "standard" (tools/storage). Imports the locally built pause, probe and
# CoreDNS images, and the project's images (target/images/*.tar) when present.
#
# Idempotent: what already runs is left running, what exists is reused. `down.sh` undoes it all.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
UP_START=$SECONDS

# --- host prerequisites -------------------------------------------------------------------------

# ports_free: every port a not-yet-running daemon will listen on is free (a clear error beats a
# daemon that dies on "address already in use").
ports_free() {
  local entry name port busy=()
  for entry in etcd:$ETCD_CLIENT_PORT etcd:$ETCD_PEER_PORT kube-apiserver:$APISERVER_PORT \
    kube-controller-manager:10257 kube-scheduler:10259 kubelet:10250 kubelet:10248 \
    kube-proxy:10249 kube-proxy:10256 kube-router:$KUBE_ROUTER_HEALTH_PORT; do
    name="${entry%%:*}" port="${entry##*:}"
    is_running "$name" && continue
    if [[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]]; then busy+=("$port ($name)"); fi
  done
  ((${#busy[@]} == 0)) || die "ports already in use by another program: ${busy[*]} (SEO_APISERVER_PORT and SEO_ETCD_PORT move the first two)"
}

# --- certificates and kubeconfigs -----------------------------------------------------------------
# sign NAME SUBJECT [SANS]: a key and a certificate signed by the cluster CA (kept if present).
sign() {
  local name="$1" subj="$2" sans="${3:-}" ca="${CA:-ca}"
  [[ -f $PKI_DIR/$name.crt ]] && return 0
  openssl genrsa -out "$PKI_DIR/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI_DIR/$name.key" -subj "$subj" -out "$PKI_DIR/$name.csr" 2>/dev/null
  local ext="$PKI_DIR/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $sans ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$sans"; else echo "extendedKeyUsage=clientAuth"; fi
  } >"$ext"
  openssl x509 -req -in "$PKI_DIR/$name.csr" -CA "$PKI_DIR/$ca.crt" -CAkey "$PKI_DIR/$ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$ext" -out "$PKI_DIR/$name.crt" 2>/dev/null
  rm -f "$PKI_DIR/$name.csr" "$ext"
}

make_ca() {
  local name="$1" cn="$2"
  [[ -f $PKI_DIR/$name.crt ]] && return 0
  openssl genrsa -out "$PKI_DIR/$name.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$PKI_DIR/$name.key" -subj "/CN=$cn" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI_DIR/$name.crt" 2>/dev/null
}

make_pki() {
  mkdir -p "$PKI_DIR"; chmod 700 "$PKI_DIR"
  make_ca ca scan-engine-operator-local-ca
  # the aggregation layer's own CA: API servers behind the aggregator trust it for X-Remote-* headers
  make_ca front-proxy-ca scan-engine-operator-local-front-proxy-ca
  CA=front-proxy-ca sign front-proxy-client "/CN=front-proxy-client"
  if [[ ! -f $PKI_DIR/sa.key ]]; then
    openssl genrsa -out "$PKI_DIR/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
  fi
  local host; host="$(hostname)"
  sign apiserver "/CN=kube-apiserver" "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,DNS:$host,IP:127.0.0.1,IP:$KUBERNETES_SVC_IP,IP:$NODE_IP"
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  sign admin "/O=system:masters/CN=scan-engine-operator-admin"
  sign controller-manager "/CN=system:kube-controller-manager"
  sign scheduler "/CN=system:kube-scheduler"
  sign kube-proxy "/CN=system:kube-proxy"
  sign kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME"
  sign kubelet-serving "/O=system:nodes/CN=system:node:$NODE_NAME" "DNS:$NODE_NAME,DNS:$host,DNS:localhost,IP:$NODE_IP,IP:127.0.0.1"
  sign kube-router "/CN=scan-engine-operator:kube-router"
  sign storage "/CN=scan-engine-operator:storage"
  chmod 600 "$PKI_DIR"/*.key
}

# kubeconfig NAME CERT: a kubeconfig with the credentials embedded.
kubeconfig() {
  local out="$1" cert="$2" server="https://127.0.0.1:$APISERVER_PORT"
  (umask 077; write_file "$out") <<EOF
apiVersion: v1
kind: Config
clusters:
- name: $CLUSTER_NAME
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$PKI_DIR/ca.crt")
users:
- name: $cert
  user:
    client-certificate-data: $(base64 -w0 "$PKI_DIR/$cert.crt")
    client-key-data: $(base64 -w0 "$PKI_DIR/$cert.key")
contexts:
- name: $CLUSTER_NAME
  context: {cluster: $CLUSTER_NAME, user: $cert}
current-context: $CLUSTER_NAME
EOF
}

# --- host state that down.sh restores ---------------------------------------------------------------
record_host_state() {
  local saved="$STATE_DIR/host-state"
  [[ -f $saved ]] && return 0
  {
    echo "ip_forward=$(cat /proc/sys/net/ipv4/ip_forward)"
    echo "bridge_nf=$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo 0)"
    local p
    for p in /var/lib/cni /var/lib/kubelet /var/log/containers /var/log/pods /run/containerd /etc/cni /opt/cni /opt/containerd; do
      [[ -e $p ]] || echo "created_if_present=$p"
    done
  } >"$saved.tmp"
  mv "$saved.tmp" "$saved"
}

setup_host_network() {
  sysctl -qw net.ipv4.ip_forward=1
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null || true
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # Pod traffic must pass even where FORWARD's policy is DROP; kube-router's chain
  # (KUBE-ROUTER-FORWARD) comes first in FORWARD, so these accepts only see traffic it allowed.
  local c="${CHAIN_PREFIX}FORWARD"
  iptables -w -N "$c" 2>/dev/null || true
  iptables -w -F "$c"
  iptables -w -A "$c" -s "$POD_CIDR" -m comment --comment "scan-engine-operator pods" -j ACCEPT
  iptables -w -A "$c" -d "$POD_CIDR" -m comment --comment "scan-engine-operator pods" -j ACCEPT
  iptables -w -C FORWARD -j "$c" 2>/dev/null || iptables -w -A FORWARD -j "$c"
}

# --- control plane --------------------------------------------------------------------------------
start_etcd() {
  start_daemon etcd "$KUBE_BIN/etcd" --name "$CLUSTER_NAME" --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "$CLUSTER_NAME=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
    --quota-backend-bytes 2147483648 --unsafe-no-fsync
  wait_for etcd 60 curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
}

start_apiserver() {
  start_daemon kube-apiserver "$KUBE_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" --bind-address 0.0.0.0 --secure-port "$APISERVER_PORT" \
    --advertise-address "$NODE_IP" --service-cluster-ip-range "$SERVICE_CIDR" --cert-dir "$PKI_DIR/apiserver-generated" \
    --tls-cert-file "$PKI_DIR/apiserver.crt" --tls-private-key-file "$PKI_DIR/apiserver.key" \
    --client-ca-file "$PKI_DIR/ca.crt" \
    --kubelet-client-certificate "$PKI_DIR/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI_DIR/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI_DIR/ca.crt" --kubelet-preferred-address-types InternalIP,Hostname \
    --service-account-key-file "$PKI_DIR/sa.pub" --service-account-signing-key-file "$PKI_DIR/sa.key" \
    --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --requestheader-client-ca-file "$PKI_DIR/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI_DIR/front-proxy-client.crt" --proxy-client-key-file "$PKI_DIR/front-proxy-client.key" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction --allow-privileged=true \
    --profiling=false --v=1
  wait_for kube-apiserver 120 kctl get --raw /readyz
}

start_controllers() {
  start_daemon kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
    --kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --cert-dir "$PKI_DIR/controller-manager-generated" --leader-elect=false \
    --service-account-private-key-file "$PKI_DIR/sa.key" --root-ca-file "$PKI_DIR/ca.crt" \
    --cluster-signing-cert-file "$PKI_DIR/ca.crt" --cluster-signing-key-file "$PKI_DIR/ca.key" \
    --use-service-account-credentials --service-cluster-ip-range "$SERVICE_CIDR" --v=1
  start_daemon kube-scheduler "$KUBE_BIN/kube-scheduler" \
    --kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --cert-dir "$PKI_DIR/scheduler-generated" --leader-elect=false --v=1
}

# --- node -----------------------------------------------------------------------------------------
write_cni_config() {
  mkdir -p "$STATE_DIR/cni/net.d" "$STATE_DIR/cni/ipam"
  write_file "$STATE_DIR/cni/net.d/10-$CLUSTER_NAME.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CLUSTER_NAME",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE_NAME", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$STATE_DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

start_containerd() {
  mkdir -p "$STATE_DIR/containerd"
  write_file "$STATE_DIR/containerd/config.toml" <<EOF
version = 3
root = "$STATE_DIR/containerd/root"
state = "$STATE_DIR/containerd/state"
temp = "$STATE_DIR/containerd/tmp"
plugin_dir = ""
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[debug]
  address = ""
  level = "info"

[plugins.'io.containerd.internal.v1.opt']
  path = "$STATE_DIR/containerd/opt"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"

[plugins.'io.containerd.cri.v1.runtime']
  enable_cdi = false
  netns_mounts_under_state_dir = true
  # never ask for a lower oom_score_adj than containerd's own (lowering needs CAP_SYS_RESOURCE,
  # which containers and some VMs do not grant)
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI_BIN"]
    conf_dir = "$STATE_DIR/cni/net.d"
    max_conf_num = 1
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$RUNC_BIN/runc"
        Root = "$STATE_DIR/containerd/runc"
        SystemdCgroup = false
EOF
  PATH="$CONTAINERD_BIN:$RUNC_BIN:$PATH" start_daemon containerd "$CONTAINERD_BIN/containerd" --config "$STATE_DIR/containerd/config.toml"
  wait_for containerd 60 "$CONTAINERD_BIN/ctr" --address "$CONTAINERD_SOCK" version
}

ctr_k8s() { "$CONTAINERD_BIN/ctr" --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# import_image TAR: `ctr images import` into the k8s.io namespace, once per distinct tarball.
import_image() {
  local tar="$1" sum
  sum="$(sha256sum "$tar" | cut -c1-16)"
  mkdir -p "$STATE_DIR/imported"
  [[ -f $STATE_DIR/imported/$sum ]] && return 0
  ctr_k8s images import --local "$tar" >"$LOG_DIR/import.log" 2>&1 \
    || ctr_k8s images import "$tar" >>"$LOG_DIR/import.log" 2>&1 \
    || { cat "$LOG_DIR/import.log" >&2; die "importing $tar failed"; }
  echo "$tar" >"$STATE_DIR/imported/$sum"
  log "imported $(basename "$tar")"
}

import_images() {
  import_image "$IMAGE_DIR/pause.tar"
  import_image "$IMAGE_DIR/probe.tar"
  import_image "$IMAGE_DIR/coredns.tar"
  local t n=0
  for t in "$REPO_ROOT"/target/images/*.tar; do
    [[ -f $t ]] || continue
    import_image "$t"; n=$((n + 1))
  done
  if ((n == 0)); then log "no project images in target/images/ (run \`cargo xtask images\`, then \`cargo xtask cluster up\` again to import them)"; fi
}

start_kubelet() {
  local c
  for c in $(cgroup_dirs); do mkdir -p "$c"; done
  mkdir -p "$STATE_DIR/kubelet" "$STATE_DIR/pod-logs" "$STATE_DIR/volume-plugins"
  # with systemd-resolved, /etc/resolv.conf names a loopback stub that pods cannot reach
  local resolv=/etc/resolv.conf
  [[ -f /run/systemd/resolve/resolv.conf ]] && resolv=/run/systemd/resolve/resolv.conf
  write_file "$STATE_DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI_DIR/ca.crt"}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: "$CGROUP_ROOT"
failCgroupV1: false
failSwapOn: false
clusterDNS: ["$DNS_SVC_IP"]
clusterDomain: "$CLUSTER_DOMAIN"
containerRuntimeEndpoint: "unix://$CONTAINERD_SOCK"
tlsCertFile: "$PKI_DIR/kubelet-serving.crt"
tlsPrivateKeyFile: "$PKI_DIR/kubelet-serving.key"
podLogsDir: "$STATE_DIR/pod-logs"
volumePluginDir: "$STATE_DIR/volume-plugins"
resolvConf: "$resolv"
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
maxPods: 110
EOF
  PATH="$CONTAINERD_BIN:$RUNC_BIN:$PATH" start_daemon kubelet "$KUBE_BIN/kubelet" \
    --config "$STATE_DIR/kubelet/config.yaml" --kubeconfig "$STATE_DIR/kubelet.kubeconfig" \
    --root-dir "$STATE_DIR/kubelet" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1
}

start_kube_proxy() {
  write_file "$STATE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: "$POD_CIDR"
hostnameOverride: "$NODE_NAME"
clientConnection: {kubeconfig: "$STATE_DIR/kube-proxy.kubeconfig"}
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0}
nodePortAddresses: [primary]
EOF
  start_daemon kube-proxy "$KUBE_BIN/kube-proxy" --config "$STATE_DIR/kube-proxy.yaml" --v=1
}

# kube-router with only its NetworkPolicy controller: per local pod a KUBE-POD-FW-* chain, per
# policy a KUBE-NWPLCY-* chain, its peers in ipsets (KUBE-SRC-*, KUBE-DST-*); KUBE-ROUTER-FORWARD,
# -INPUT and -OUTPUT come first in the filter table's chains. down.sh removes them all.
start_kube_router() {
  start_daemon kube-router "$KUBE_ROUTER_BIN/kube-router" \
    --run-firewall=true --run-router=false --run-service-proxy=false --run-loadbalancer=false \
    --kubeconfig "$STATE_DIR/kube-router.kubeconfig" --hostname-override "$NODE_NAME" \
    --service-cluster-ip-range "$SERVICE_CIDR" --health-port "$KUBE_ROUTER_HEALTH_PORT" --metrics-port 0 \
    --v=1
}

# --- add-ons --------------------------------------------------------------------------------------
apply_addons() {
  kctl apply -f - >/dev/null <<EOF
# kube-router's own ClusterRole (its daemonset manifests), less what its router and load-balancer
# allocator need: it watches these even with only the firewall on.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "scan-engine-operator:kube-router"}
rules:
- apiGroups: [""]
  resources: [namespaces, pods, services, nodes, endpoints]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "scan-engine-operator:kube-router"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "scan-engine-operator:kube-router"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "scan-engine-operator:kube-router"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "scan-engine-operator:storage"}
rules:
- apiGroups: [""]
  resources: [persistentvolumes]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, list, watch]
- apiGroups: [storage.k8s.io]
  resources: [storageclasses]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "scan-engine-operator:storage"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "scan-engine-operator:storage"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "scan-engine-operator:storage"}]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: $STORAGE_PROVISIONER
reclaimPolicy: Delete
volumeBindingMode: Immediate
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "scan-engine-operator:kube-proxy"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node-proxier"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:kube-proxy"}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health {
            lameduck 5s
        }
        ready
        kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        forward . /etc/resolv.conf
        cache 30
        loop
        reload
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      securityContext:
        runAsNonRoot: true
        runAsUser: 65534
        sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "0"}]
      containers:
      - name: coredns
        image: $COREDNS_IMAGE
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        - {name: metrics, containerPort: 9153, protocol: TCP}
        resources:
          requests: {cpu: 50m, memory: 64Mi}
          limits: {memory: 170Mi}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        livenessProbe:
          httpGet: {path: /health, port: 8080}
          initialDelaySeconds: 10
          periodSeconds: 10
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 2
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes:
      - name: config
        configMap: {name: coredns, items: [{key: Corefile, path: Corefile}]}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  selector: {k8s-app: kube-dns}
  clusterIP: $DNS_SVC_IP
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
  - {name: metrics, port: 9153, protocol: TCP, targetPort: 9153}
EOF
}

# --- main -----------------------------------------------------------------------------------------
ensure_host_tools
# shellcheck source=build.sh
source "$SCRIPT_DIR/build.sh"
BUILD_START=$SECONDS
build_all
BUILD_SECS=$((SECONDS - BUILD_START))

NODE_IP="$(node_ip)"
NODE_NAME="${SEO_NODE_NAME:-seo-node}"
mkdir -p "$STATE_DIR" "$RUN_DIR" "$LOG_DIR"
chmod 700 "$STATE_DIR"
record_host_state
echo "node_name=$NODE_NAME" >"$STATE_DIR/cluster.env"
{ echo "node_ip=$NODE_IP"; echo "kube_bin=$KUBE_BIN"; echo "containerd_bin=$CONTAINERD_BIN"; echo "tools_bin=$TOOLS_BIN"; echo "kube_router_bin=$KUBE_ROUTER_BIN"; } >>"$STATE_DIR/cluster.env"
make_pki
kubeconfig "$KUBECONFIG_PATH" admin
kubeconfig "$STATE_DIR/controller-manager.kubeconfig" controller-manager
kubeconfig "$STATE_DIR/scheduler.kubeconfig" scheduler
kubeconfig "$STATE_DIR/kube-proxy.kubeconfig" kube-proxy
kubeconfig "$STATE_DIR/kubelet.kubeconfig" kubelet-client
kubeconfig "$STATE_DIR/kube-router.kubeconfig" kube-router
kubeconfig "$STATE_DIR/storage.kubeconfig" storage

ports_free
setup_host_network
start_etcd
start_apiserver
start_controllers
apply_addons
write_cni_config
start_containerd
import_images
start_kubelet
start_kube_proxy
start_daemon storage "$TOOLS_BIN/storage" -kubeconfig "$STATE_DIR/storage.kubeconfig" -node "$NODE_NAME" -dir "$STATE_DIR/volumes" \
  -provisioner "$STORAGE_PROVISIONER"

# kube-router reads its node object (name, InternalIP) once at start: start it once kubelet has
# registered the node, and before any pod of the project's runs.
wait_for "node $NODE_NAME registered" 120 kctl get "node/$NODE_NAME"
start_kube_router
wait_for "node $NODE_NAME Ready" 180 kctl wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
wait_for "kube-router's NetworkPolicy controller" 120 curl -fsS "http://127.0.0.1:$KUBE_ROUTER_HEALTH_PORT/healthz"
# diagnose: what a failed wait leaves to read — pods, events, CoreDNS's log, the forwarding rules.
diagnose() {
  {
    echo "== pods"; kctl get pods -A -o wide || true
    echo "== events"; kctl get events -A --sort-by=.lastTimestamp | tail -40 || true
    echo "== coredns"; kctl -n kube-system describe pods -l k8s-app=kube-dns | tail -60 || true
    kctl -n kube-system logs -l k8s-app=kube-dns --tail=40 --all-containers || true
    echo "== iptables filter FORWARD"; iptables -w -S FORWARD || true
    echo "== routes"; ip route || true
    echo "== runc"; "$RUNC_BIN/runc" --version || true
  } >"$LOG_DIR/diagnose.log" 2>&1
  log "what the cluster looked like: $LOG_DIR/diagnose.log (kept after \`cluster down\`)"
  sed 's/^/  | /' "$LOG_DIR/diagnose.log" | head -150 >&2 || true
}
if ! (wait_for "CoreDNS available" 180 kctl -n kube-system wait --for=condition=Available deployment/coredns --timeout=5s); then
  diagnose
  die "CoreDNS did not become available"
fi

log "cluster up in $((SECONDS - UP_START))s (builds and checks of cached binaries: ${BUILD_SECS}s)"
log "kubectl and helm: $KUBE_BIN; logs: $LOG_DIR"
echo "export KUBECONFIG=$KUBECONFIG_PATH"
