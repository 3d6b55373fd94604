// Command netpol enforces Kubernetes NetworkPolicy (networking.k8s.io/v1) for the pods of one
// node of the local cluster with iptables and ipset, in the way of kube-router's firewall:
//
//   - FORWARD's first rule jumps to SEO-NETPOL; INPUT's first rule jumps to SEO-NETPOL-IN;
//   - a pod selected by a policy with Ingress (Egress) type gets a chain SEO-NPI-* (SEO-NPE-*)
//     that RETURNs allowed traffic and REJECTs the rest;
//   - every rule's peers (pods, namespaces, ipBlocks with except) are one ipset (SEO-S*);
//   - replies of allowed connections pass by conntrack state.
//
// Traffic from the node itself to a pod (kubelet probes) is always allowed. Named ports are
// resolved for ingress rules (against the selected pod) and egress rules (against peer pods).
// Everything it makes is named SEO-*, so the cluster's down script removes it all.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	mainChain  = "SEO-NETPOL"
	inputChain = "SEO-NETPOL-IN"
)

var (
	kubeconfig = flag.String("kubeconfig", "", "kubeconfig of the cluster")
	nodeName   = flag.String("node", "", "name of this node: only its pods are guarded")
	resync     = flag.Duration("resync", 30*time.Second, "re-apply the rules at least this often")
)

func main() {
	flag.Parse()
	if *nodeName == "" {
		log.Fatal("-node is required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(cfg)
	factory := informers.NewSharedInformerFactory(client, 0)
	pods := factory.Core().V1().Pods()
	nss := factory.Core().V1().Namespaces()
	pols := factory.Networking().V1().NetworkPolicies()
	trigger := make(chan struct{}, 1)
	kick := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { kick() },
		UpdateFunc: func(any, any) { kick() },
		DeleteFunc: func(any) { kick() },
	}
	for _, inf := range []cache.SharedIndexInformer{pods.Informer(), nss.Informer(), pols.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			log.Fatal(err)
		}
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	log.Printf("netpol: watching pods, namespaces and network policies for node %s", *nodeName)

	last := ""
	ticker := time.NewTicker(*resync)
	defer ticker.Stop()
	for {
		podList, _ := pods.Lister().List(labels.Everything())
		nsList, _ := nss.Lister().List(labels.Everything())
		polList, _ := pols.Lister().List(labels.Everything())
		rs := compute(podList, nsList, polList)
		if err := apply(rs, rs.digest() != last); err != nil {
			log.Printf("netpol: apply: %v", err)
		} else if d := rs.digest(); d != last {
			log.Printf("netpol: applied %d guarded pod chains, %d peer sets", len(rs.chains), len(rs.sets))
			last = d
		}
		select {
		case <-ctx.Done():
			log.Print("netpol: stopping (rules stay until the cluster is taken down)")
			return
		case <-trigger:
			time.Sleep(200 * time.Millisecond) // let a burst of events settle
		case <-ticker.C:
		}
	}
}

// ruleset is everything to install: ipsets by name, and per-pod chains with their rules.
type ruleset struct {
	sets      map[string][]string // name -> entries ("10.0.0.0/8", "10.1.0.0/16 nomatch")
	chains    map[string][]string // chain -> rule specs (without "-A chain")
	mainRules []string
	inRules   []string
}

func (r *ruleset) digest() string {
	var b strings.Builder
	for _, k := range sortedKeys(r.sets) {
		fmt.Fprintf(&b, "S %s %v\n", k, r.sets[k])
	}
	for _, k := range sortedKeys(r.chains) {
		fmt.Fprintf(&b, "C %s %v\n", k, r.chains[k])
	}
	fmt.Fprintf(&b, "M %v I %v", r.mainRules, r.inRules)
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func hash(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return strings.ToUpper(hex.EncodeToString(h[:]))[:12]
}

func podIP(p *corev1.Pod) string {
	if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return ""
	}
	for _, ip := range p.Status.PodIPs {
		if parsed := net.ParseIP(ip.IP); parsed != nil && parsed.To4() != nil {
			return ip.IP
		}
	}
	return ""
}

func matches(sel *metav1.LabelSelector, l map[string]string) bool {
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return s.Matches(labels.Set(l))
}

func compute(pods []*corev1.Pod, nss []*corev1.Namespace, pols []*netv1.NetworkPolicy) *ruleset {
	rs := &ruleset{sets: map[string][]string{}, chains: map[string][]string{}}
	nsLabels := map[string]map[string]string{}
	for _, ns := range nss {
		nsLabels[ns.Name] = ns.Labels
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Namespace+"/"+pods[i].Name < pods[j].Namespace+"/"+pods[j].Name })
	sort.Slice(pols, func(i, j int) bool { return pols[i].Namespace+"/"+pols[i].Name < pols[j].Namespace+"/"+pols[j].Name })

	// peerPods returns the pods a NetworkPolicyPeer selects, seen from a policy in namespace ns.
	peerPods := func(ns string, peer netv1.NetworkPolicyPeer) []*corev1.Pod {
		var out []*corev1.Pod
		for _, p := range pods {
			if podIP(p) == "" {
				continue
			}
			if peer.NamespaceSelector != nil {
				if !matches(peer.NamespaceSelector, nsLabels[p.Namespace]) {
					continue
				}
			} else if p.Namespace != ns {
				continue
			}
			if peer.PodSelector != nil && !matches(peer.PodSelector, p.Labels) {
				continue
			}
			out = append(out, p)
		}
		return out
	}
	// peerSet builds the ipset of a rule's peers and returns its name ("" = any peer).
	peerSet := func(pol *netv1.NetworkPolicy, dir string, idx int, peers []netv1.NetworkPolicyPeer) (string, []*corev1.Pod) {
		if len(peers) == 0 {
			return "", nil
		}
		name := "SEO-S" + hash(string(pol.UID), dir, fmt.Sprint(idx))
		entries := []string{}
		var selected []*corev1.Pod
		for _, peer := range peers {
			if peer.IPBlock != nil {
				entries = append(entries, peer.IPBlock.CIDR)
				for _, ex := range peer.IPBlock.Except {
					entries = append(entries, ex+" nomatch")
				}
				continue
			}
			for _, p := range peerPods(pol.Namespace, peer) {
				entries = append(entries, podIP(p)+"/32")
				selected = append(selected, p)
			}
		}
		rs.sets[name] = entries
		return name, selected
	}
	// portSpecs turns a rule's ports into iptables match fragments; named ports are looked up
	// in the containers of namedIn.
	portSpecs := func(ports []netv1.NetworkPolicyPort, namedIn []*corev1.Pod) []string {
		if len(ports) == 0 {
			return []string{""}
		}
		var out []string
		for _, pp := range ports {
			proto := corev1.ProtocolTCP
			if pp.Protocol != nil {
				proto = *pp.Protocol
			}
			p := strings.ToLower(string(proto))
			switch {
			case pp.Port == nil:
				out = append(out, "-p "+p)
			case pp.Port.Type == 0: // number
				if pp.EndPort != nil {
					out = append(out, fmt.Sprintf("-p %s --dport %d:%d", p, pp.Port.IntVal, *pp.EndPort))
				} else {
					out = append(out, fmt.Sprintf("-p %s --dport %d", p, pp.Port.IntVal))
				}
			default: // named
				seen := map[int32]bool{}
				for _, pod := range namedIn {
					for _, c := range pod.Spec.Containers {
						for _, cp := range c.Ports {
							cpProto := cp.Protocol
							if cpProto == "" {
								cpProto = corev1.ProtocolTCP
							}
							if cp.Name == pp.Port.StrVal && cpProto == proto && !seen[cp.ContainerPort] {
								seen[cp.ContainerPort] = true
								out = append(out, fmt.Sprintf("-p %s --dport %d", p, cp.ContainerPort))
							}
						}
					}
				}
			}
		}
		return out
	}

	for _, pod := range pods {
		ip := podIP(pod)
		if ip == "" || pod.Spec.NodeName != *nodeName {
			continue
		}
		id := hash(pod.Namespace, pod.Name)
		var ingress, egress []string
		isoIn, isoOut := false, false
		for _, pol := range pols {
			if pol.Namespace != pod.Namespace || !matches(&pol.Spec.PodSelector, pod.Labels) {
				continue
			}
			hasIn, hasOut := len(pol.Spec.PolicyTypes) == 0, len(pol.Spec.PolicyTypes) == 0 && len(pol.Spec.Egress) > 0
			for _, t := range pol.Spec.PolicyTypes {
				hasIn = hasIn || t == netv1.PolicyTypeIngress
				hasOut = hasOut || t == netv1.PolicyTypeEgress
			}
			if hasIn {
				isoIn = true
				for i, r := range pol.Spec.Ingress {
					set, _ := peerSet(pol, "in", i, r.From)
					match := ""
					if set != "" {
						match = "-m set --match-set " + set + " src "
					}
					for _, ps := range portSpecs(r.Ports, []*corev1.Pod{pod}) {
						ingress = append(ingress, strings.TrimSpace(match+ps)+" -m comment --comment "+quote(pol.Namespace+"/"+pol.Name)+" -j RETURN")
					}
				}
			}
			if hasOut {
				isoOut = true
				for i, r := range pol.Spec.Egress {
					set, selected := peerSet(pol, "out", i, r.To)
					match := ""
					if set != "" {
						match = "-m set --match-set " + set + " dst "
					}
					for _, ps := range portSpecs(r.Ports, selected) {
						egress = append(egress, strings.TrimSpace(match+ps)+" -m comment --comment "+quote(pol.Namespace+"/"+pol.Name)+" -j RETURN")
					}
				}
			}
		}
		comment := " -m comment --comment " + quote(pod.Namespace+"/"+pod.Name)
		if isoIn {
			chain := "SEO-NPI-" + id
			rs.chains[chain] = append(ingress, "-m comment --comment "+quote("ingress denied")+" -j REJECT")
			rs.mainRules = append(rs.mainRules, "-d "+ip+"/32"+comment+" -j "+chain)
		}
		if isoOut {
			chain := "SEO-NPE-" + id
			rs.chains[chain] = append(egress, "-m comment --comment "+quote("egress denied")+" -j REJECT")
			rs.mainRules = append(rs.mainRules, "-s "+ip+"/32"+comment+" -j "+chain)
			rs.inRules = append(rs.inRules, "-s "+ip+"/32"+comment+" -j "+chain)
		}
	}
	return rs
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, "") + `"` }

func run(stdin string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// apply installs the ruleset. Sets are filled through a temporary set and swapped in, chains are
// rewritten atomically by iptables-restore --noflush, and the hooks are kept first in FORWARD and
// INPUT. Stale SEO-NP* chains and SEO-S* sets are removed afterwards.
func apply(rs *ruleset, changed bool) error {
	if changed {
		var b strings.Builder
		for _, name := range sortedKeys(rs.sets) {
			tmp := "SEO-T" + name[5:]
			fmt.Fprintf(&b, "create %s hash:net family inet -exist\ncreate %s hash:net family inet -exist\nflush %s\n", name, tmp, tmp)
			for _, e := range rs.sets[name] {
				fmt.Fprintf(&b, "add %s %s -exist\n", tmp, e)
			}
			fmt.Fprintf(&b, "swap %s %s\ndestroy %s\n", tmp, name, tmp)
		}
		if b.Len() > 0 {
			if _, err := run(b.String(), "ipset", "restore"); err != nil {
				return err
			}
		}
		b.Reset()
		b.WriteString("*filter\n")
		fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", mainChain, inputChain)
		for _, c := range sortedKeys(rs.chains) {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c)
		}
		fmt.Fprintf(&b, "-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n", mainChain)
		for _, r := range rs.mainRules {
			fmt.Fprintf(&b, "-A %s %s\n", mainChain, r)
		}
		fmt.Fprintf(&b, "-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n", inputChain)
		for _, r := range rs.inRules {
			fmt.Fprintf(&b, "-A %s %s\n", inputChain, r)
		}
		for _, c := range sortedKeys(rs.chains) {
			for _, r := range rs.chains[c] {
				fmt.Fprintf(&b, "-A %s %s\n", c, r)
			}
		}
		b.WriteString("COMMIT\n")
		if _, err := run(b.String(), "iptables-restore", "--noflush"); err != nil {
			return err
		}
	}
	for hook, chain := range map[string]string{"FORWARD": mainChain, "INPUT": inputChain} {
		if err := ensureFirst(hook, chain); err != nil {
			return err
		}
	}
	if !changed {
		return nil
	}
	out, err := run("", "iptables", "-w", "-S")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		if c, ok := strings.CutPrefix(line, "-N "); ok && strings.HasPrefix(c, "SEO-NP") && c != mainChain && c != inputChain {
			if _, want := rs.chains[c]; !want {
				_, _ = run("", "iptables", "-w", "-F", c)
				_, _ = run("", "iptables", "-w", "-X", c)
			}
		}
	}
	out, err = run("", "ipset", "list", "-n")
	if err != nil {
		return err
	}
	for _, name := range strings.Fields(out) {
		if _, want := rs.sets[name]; strings.HasPrefix(name, "SEO-S") && !want {
			_, _ = run("", "ipset", "destroy", name)
		}
	}
	return nil
}

func ensureFirst(hook, chain string) error {
	out, err := run("", "iptables", "-w", "-S", hook)
	if err != nil {
		return err
	}
	want := "-A " + hook + " -j " + chain
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) > 1 && lines[1] == want {
		return nil
	}
	for _, l := range lines {
		if l == want {
			_, _ = run("", "iptables", "-w", "-D", hook, "-j", chain)
		}
	}
	_, err = run("", "iptables", "-w", "-I", hook, "1", "-j", chain)
	if err == nil {
		log.Printf("netpol: %s jumps to %s first", hook, chain)
	}
	return err
}

func init() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetOutput(os.Stderr)
}
