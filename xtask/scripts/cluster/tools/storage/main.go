// Command storage is the local cluster's dynamic volume provisioner: for every pending
// PersistentVolumeClaim of a StorageClass whose provisioner is -provisioner, it makes a directory
// under -dir on this (single) node and a hostPath PersistentVolume bound to the claim; when such
// a volume is Released and its reclaim policy is Delete, it removes the directory and the volume.
//
// Directories are mode 0777, so pods running as any non-root user can write to their volume
// (hostPath volumes ignore fsGroup).
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

const provisionedBy = "pv.kubernetes.io/provisioned-by"

var (
	kubeconfig  = flag.String("kubeconfig", "", "kubeconfig of the cluster")
	nodeName    = flag.String("node", "", "name of this node (the volumes' node affinity)")
	baseDir     = flag.String("dir", "", "directory that holds the volumes")
	provisioner = flag.String("provisioner", "scan-engine-operator.local/hostpath", "provisioner name in StorageClasses")
)

func main() {
	flag.Parse()
	if *nodeName == "" || *baseDir == "" {
		log.Fatal("-node and -dir are required")
	}
	if err := os.MkdirAll(*baseDir, 0o755); err != nil {
		log.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(cfg)
	factory := informers.NewSharedInformerFactory(client, 0)
	pvcs := factory.Core().V1().PersistentVolumeClaims()
	pvs := factory.Core().V1().PersistentVolumes()
	classes := factory.Storage().V1().StorageClasses()
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
	for _, inf := range []cache.SharedIndexInformer{pvcs.Informer(), pvs.Informer(), classes.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			log.Fatal(err)
		}
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	log.Printf("storage: provisioning %s volumes under %s", *provisioner, *baseDir)
	ticker := time.NewTicker(10 * time.Second)
	defer ticker.Stop()
	for {
		claimList, _ := pvcs.Lister().List(labels.Everything())
		volumeList, _ := pvs.Lister().List(labels.Everything())
		classList, _ := classes.Lister().List(labels.Everything())
		sync(ctx, client, claimList, volumeList, classList)
		select {
		case <-ctx.Done():
			return
		case <-trigger:
			time.Sleep(100 * time.Millisecond)
		case <-ticker.C:
		}
	}
}

func sync(ctx context.Context, client kubernetes.Interface, claims []*corev1.PersistentVolumeClaim,
	volumes []*corev1.PersistentVolume, classes []*storagev1.StorageClass) {
	ours := map[string]*storagev1.StorageClass{}
	for _, c := range classes {
		if c.Provisioner == *provisioner {
			ours[c.Name] = c
		}
	}
	existing := map[string]bool{}
	for _, v := range volumes {
		existing[v.Name] = true
	}
	for _, claim := range claims {
		if claim.Spec.StorageClassName == nil || claim.Spec.VolumeName != "" || claim.Status.Phase != corev1.ClaimPending {
			continue
		}
		class := ours[*claim.Spec.StorageClassName]
		if class == nil || claim.DeletionTimestamp != nil {
			continue
		}
		name := "pvc-" + string(claim.UID)
		if existing[name] {
			continue
		}
		if err := provision(ctx, client, claim, class, name); err != nil {
			log.Printf("storage: %s/%s: %v", claim.Namespace, claim.Name, err)
		}
	}
	for _, v := range volumes {
		if v.Annotations[provisionedBy] != *provisioner || v.Status.Phase != corev1.VolumeReleased ||
			v.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete || v.Spec.HostPath == nil {
			continue
		}
		dir := v.Spec.HostPath.Path
		if filepath.Dir(dir) != filepath.Clean(*baseDir) {
			log.Printf("storage: %s: path %s is not under %s; leaving it", v.Name, dir, *baseDir)
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			log.Printf("storage: %s: %v", v.Name, err)
			continue
		}
		err := client.CoreV1().PersistentVolumes().Delete(ctx, v.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			log.Printf("storage: deleting %s: %v", v.Name, err)
			continue
		}
		log.Printf("storage: deleted %s and %s", v.Name, dir)
	}
}

func provision(ctx context.Context, client kubernetes.Interface, claim *corev1.PersistentVolumeClaim,
	class *storagev1.StorageClass, name string) error {
	dir := filepath.Join(*baseDir, name)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o777); err != nil { // not narrowed by the umask
		return err
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	if class.ReclaimPolicy != nil {
		reclaim = *class.ReclaimPolicy
	}
	size := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	hostPathType := corev1.HostPathDirectory
	volumeMode := corev1.PersistentVolumeFilesystem
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{provisionedBy: *provisioner},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   claim.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              class.Name,
			VolumeMode:                    &volumeMode,
			MountOptions:                  class.MountOptions,
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &hostPathType},
			},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{*nodeName},
				}}}},
			}},
		},
	}
	_, err := client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return err
	}
	log.Printf("storage: %s for %s/%s at %s", name, claim.Namespace, claim.Name, dir)
	return nil
}

func init() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
}
