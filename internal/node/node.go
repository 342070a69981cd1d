// Package node is a stand-in for a Kubernetes node (kubelet, container runtime) and for the
// deployment controller, for end-to-end tests on envtest: envtest runs a real kube-apiserver
// and etcd but nothing that turns a Deployment into a running process, and no container
// runtime exists here.
//
// A Node watches the Deployments of one namespace (it polls every Interval) and, for each,
// runs ONE process of the program its container image maps to (Options.Images), as a pod
// would run the image (the program stands for the image's entrypoint, command[0]; the rest of
// the command and the args are its arguments):
//
//   - Volumes. configMap, secret, projected (configMap and secret sources) and emptyDir
//     volumes are materialised under the pod's temporary folder, laid out as the kubelet lays
//     them out (a "..data" symlink to a hidden folder, renamed atomically on update). A missing
//     ConfigMap, Secret or key keeps the pod waiting (ContainerCreating), as it does in a
//     cluster. ConfigMap and Secret changes are written into the running pod's volumes within
//     one Interval, without a restart: the kubelet does the same, only slower (its sync period
//     plus a cache TTL, up to a minute or two).
//   - Paths. There is no mount namespace, so paths are rewritten: every container mount path
//     in the container's args, and in the text files of ConfigMap volumes (a config that
//     names a file of another volume, such as the proxy config's passwordFile), is replaced
//     with the host folder it was materialised to. Secret files are written as they are.
//   - Ports. A pod has its own network namespace; the stand-in has loopback. Each declared
//     containerPort gets a free 127.0.0.1 port, and an argument whose value is a listen
//     address on a declared port (":8080", "0.0.0.0:8080", "[::]:8080") is rewritten to it,
//     so nothing listens beyond loopback. Pod(name).Ports says where each named port is. A
//     Service selects nothing real: a test talks to these addresses.
//   - Restarts. A changed pod template (hashed as a whole, so the operator's config-hash
//     annotation changes it) stops the process (SIGTERM, then SIGKILL after the grace period)
//     and starts a new one with fresh ports: Recreate semantics, even for a RollingUpdate
//     Deployment (no old and new pod side by side). A process that exits is started again
//     after a short back-off (CrashLoopBackOff, shortened). A deleted Deployment, or
//     replicas 0, stops it.
//   - Status. The Deployment's status is written as the deployment controller would write it
//     from the pod's readiness: observedGeneration, replicas, updatedReplicas, readyReplicas,
//     availableReplicas, unavailableReplicas and the Available and Progressing conditions.
//     Readiness comes from the container's readinessProbe (httpGet), probed every Interval
//     rather than every periodSeconds, with its failureThreshold.
//
// Not modelled: more than one replica (one process runs; the status says 1 of N, so the
// Deployment is never reported available), the security context (user, read-only root,
// capabilities), resources, liveness probes, env from Secrets or ConfigMaps, init containers
// and side-cars (only the first container runs), rolling-update overlap, and networking
// (Services, NetworkPolicies are not enforced).
package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Options configure a Node.
type Options struct {
	// Client reads Deployments, ConfigMaps and Secrets and writes Deployments' status: what
	// the kubelet and the deployment controller may do.
	Client client.Client
	// Namespace is where the node looks for Deployments.
	Namespace string
	// Images maps a container image to the program that runs it. A container whose image is
	// not here never starts (as an image that cannot be pulled).
	Images map[string]string
	// Interval is how often the node syncs; default 100ms.
	Interval time.Duration
	// MaxGrace caps terminationGracePeriodSeconds; default 10s.
	MaxGrace time.Duration
}

// Pod is what a test may know of the process a Deployment runs.
type Pod struct {
	PID      int               // 0 while none runs
	Ports    map[string]string // container port name → 127.0.0.1:port where it listens
	Ready    bool              // the readiness probe passes
	Restarts int               // how often the process was started again in this pod (crashes)
	Template string            // the hash of the pod template the process runs
	Waiting  string            // why the process does not run (a missing volume source, an image), "" when it runs
	Started  time.Time         // when the process started
	Dir      string            // the pod's host folder (volumes under Dir/volumes/<name>, the log at Dir/log)
}

// Node runs the Deployments of a namespace as local processes.
type Node struct {
	o    Options
	t    testing.TB
	root string

	mu   sync.Mutex
	pods map[string]*pod // by Deployment name

	stop chan struct{}
	done chan struct{}
}

type pod struct {
	name      string
	dir       string
	template  string // hash of the pod template
	container corev1.Container
	program   string
	mounts    []*mount
	grace     time.Duration

	ports    map[string]int32 // container port name → host port
	byNumber map[int32]int32  // containerPort → host port
	cmd      *exec.Cmd
	exited   chan struct{}
	started  time.Time

	ready     bool
	failures  int
	restarts  int
	waiting   string
	nextStart time.Time
	backoff   time.Duration
}

// Start starts a node; it stops, with every process it started, when t ends. When t failed,
// the end of each process's log is written to t's log.
func Start(t testing.TB, o Options) *Node {
	t.Helper()
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.MaxGrace <= 0 {
		o.MaxGrace = 10 * time.Second
	}
	n := &Node{o: o, t: t, root: t.TempDir(), pods: map[string]*pod{}, stop: make(chan struct{}), done: make(chan struct{})}
	go n.run()
	t.Cleanup(func() {
		close(n.stop)
		<-n.done
		n.mu.Lock()
		defer n.mu.Unlock()
		for name, p := range n.pods {
			if t.Failed() {
				t.Logf("node: the log of %s/%s:\n%s", o.Namespace, name, tail(filepath.Join(p.dir, "log"), 4096))
			}
			p.kill()
		}
	})
	return n
}

// Pod returns the state of the pod that runs Deployment name.
func (n *Node) Pod(name string) (Pod, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, ok := n.pods[name]
	if !ok {
		return Pod{}, false
	}
	out := Pod{Ready: p.ready, Restarts: p.restarts, Template: p.template, Waiting: p.waiting, Started: p.started, Dir: p.dir, Ports: map[string]string{}}
	if p.running() {
		out.PID = p.cmd.Process.Pid
		for name, port := range p.ports {
			out.Ports[name] = net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
		}
	}
	return out, true
}

func (n *Node) run() {
	defer close(n.done)
	tick := time.NewTicker(n.o.Interval)
	defer tick.Stop()
	for {
		n.sync()
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
	}
}

// sync is one pass of the node: every Deployment of the namespace to its pod, and its status.
func (n *Node) sync() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var list appsv1.DeploymentList
	if err := n.o.Client.List(ctx, &list, client.InNamespace(n.o.Namespace)); err != nil {
		n.t.Logf("node: listing Deployments: %v", err)
		return
	}
	seen := map[string]bool{}
	for i := range list.Items {
		d := &list.Items[i]
		seen[d.Name] = true
		n.syncDeployment(ctx, d)
	}
	// A Deployment that is gone takes its pod with it (in a cluster: the garbage collector
	// deletes its ReplicaSet, which deletes the pod, which the kubelet stops).
	n.mu.Lock()
	var gone []*pod
	for name, p := range n.pods {
		if !seen[name] {
			gone = append(gone, p)
			delete(n.pods, name)
		}
	}
	n.mu.Unlock()
	for _, p := range gone {
		p.terminate()
	}
}

func (n *Node) syncDeployment(ctx context.Context, d *appsv1.Deployment) {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	hash := templateHash(&d.Spec.Template)
	n.mu.Lock()
	p := n.pods[d.Name]
	n.mu.Unlock()
	if p != nil && (p.template != hash || want == 0) {
		// A new pod template is a new ReplicaSet, so a new pod: the old process stops first.
		p.terminate()
		n.mu.Lock()
		delete(n.pods, d.Name)
		n.mu.Unlock()
		p = nil
	}
	if p == nil && want > 0 {
		var err error
		if p, err = n.newPod(d, hash); err != nil {
			n.t.Logf("node: Deployment %s/%s: %v", d.Namespace, d.Name, err)
			return
		}
		n.mu.Lock()
		n.pods[d.Name] = p
		n.mu.Unlock()
	}
	if p != nil {
		n.syncPod(ctx, p)
	}
	n.writeStatus(ctx, d, p, want)
}

// templateHash stands for the deployment controller's pod-template-hash: any change of the
// template is a new ReplicaSet.
func templateHash(t *corev1.PodTemplateSpec) string {
	b, _ := json.Marshal(t)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

func (n *Node) newPod(d *appsv1.Deployment, hash string) (*pod, error) {
	spec := d.Spec.Template.Spec
	if len(spec.Containers) == 0 {
		return nil, errors.New("no container")
	}
	dir, err := os.MkdirTemp(n.root, d.Name+"-")
	if err != nil {
		return nil, err
	}
	c := spec.Containers[0]
	p := &pod{name: d.Name, dir: dir, template: hash, container: c, program: n.o.Images[c.Image], grace: n.o.MaxGrace}
	if g := spec.TerminationGracePeriodSeconds; g != nil && time.Duration(*g)*time.Second < p.grace {
		p.grace = time.Duration(*g) * time.Second
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	for _, vm := range c.VolumeMounts {
		v, ok := volumes[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %q names no volume", vm.Name)
		}
		if vm.SubPath != "" {
			return nil, fmt.Errorf("volumeMount %q: subPath is not supported by the node stand-in", vm.Name)
		}
		p.mounts = append(p.mounts, &mount{
			containerPath: filepath.Clean(vm.MountPath),
			hostDir:       filepath.Join(dir, "volumes", vm.Name),
			volume:        v,
			configMap:     v.ConfigMap != nil || (v.Projected != nil && onlyConfigMaps(v.Projected)),
		})
	}
	return p, nil
}

func onlyConfigMaps(p *corev1.ProjectedVolumeSource) bool {
	for _, s := range p.Sources {
		if s.ConfigMap == nil {
			return false
		}
	}
	return len(p.Sources) > 0
}

// syncPod refreshes the pod's volumes, starts its process when it does not run (at first, or
// after a crash and its back-off) and probes its readiness.
func (n *Node) syncPod(ctx context.Context, p *pod) {
	waiting := ""
	for _, m := range p.mounts {
		if _, err := m.sync(ctx, n.o.Client, n.o.Namespace, p.mounts); err != nil {
			if !isWaiting(err) {
				n.t.Logf("node: pod %s: %v", p.name, err)
			}
			waiting = "ContainerCreating: " + err.Error()
			break
		}
	}
	if p.program == "" {
		waiting = fmt.Sprintf("ErrImagePull: no program for image %q", p.container.Image)
	}
	if p.cmd != nil && !p.running() {
		// The process exited: a crash. The kubelet restarts it after a back-off.
		n.mu.Lock()
		p.cmd, p.ready, p.failures = nil, false, 0
		p.restarts++
		n.mu.Unlock()
		p.backoff = min(max(2*p.backoff, 250*time.Millisecond), 5*time.Second)
		p.nextStart = time.Now().Add(p.backoff)
		n.t.Logf("node: pod %s: the process exited (restart %d in %v)", p.name, p.restarts, p.backoff)
	}
	if p.cmd == nil && waiting == "" && time.Now().After(p.nextStart) {
		if err := n.startProcess(p); err != nil {
			waiting = "RunContainerError: " + err.Error()
		}
	}
	n.mu.Lock()
	p.waiting = waiting
	if p.running() {
		p.waiting = "" // a running container keeps its files when a source goes away
	}
	n.mu.Unlock()
	if p.running() {
		ready := n.probe(ctx, p)
		n.mu.Lock()
		p.ready = ready
		n.mu.Unlock()
	}
}

// listenArg is a listen address on a port: ":8080", "0.0.0.0:8080", "[::]:8080".
var listenArg = regexp.MustCompile(`^(|0\.0\.0\.0|\[::\]):([0-9]+)$`)

func (n *Node) startProcess(p *pod) error {
	// Fresh ports for each start: without a network namespace of its own, a restarted process
	// could find an old port taken.
	p.ports, p.byNumber = map[string]int32{}, map[int32]int32{}
	for _, cp := range p.container.Ports {
		port, err := freePort()
		if err != nil {
			return err
		}
		p.byNumber[cp.ContainerPort] = port
		if cp.Name != "" {
			p.ports[cp.Name] = port
		}
	}
	args := make([]string, 0, len(p.container.Command)+len(p.container.Args))
	for _, a := range append(append([]string{}, p.container.Command[min(1, len(p.container.Command)):]...), p.container.Args...) {
		args = append(args, n.rewriteArg(p, a))
	}
	cmd := exec.Command(p.program, args...)
	cmd.Dir = p.dir
	for _, e := range p.container.Env {
		if e.ValueFrom == nil {
			cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
		}
	}
	if cmd.Env == nil {
		cmd.Env = []string{} // a container's environment, not the test's
	}
	log, err := os.OpenFile(filepath.Join(p.dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer func() { _ = log.Close() }() // the child holds its own descriptor
	cmd.Stdout, cmd.Stderr = log, log
	// The process dies with the test binary, however that ends (a panic, -timeout, SIGKILL).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", p.program, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	n.mu.Lock()
	p.cmd, p.exited, p.started = cmd, exited, time.Now()
	p.ready, p.failures = false, 0
	n.mu.Unlock()
	return nil
}

// rewriteArg points listen addresses at loopback ports and mount paths at the host folders.
func (n *Node) rewriteArg(p *pod, a string) string {
	flag, value, hasFlag := "", a, false
	if f, v, ok := cutFlag(a); ok {
		flag, value, hasFlag = f, v, true
	}
	if m := listenArg.FindStringSubmatch(value); m != nil {
		if port, err := strconv.Atoi(m[2]); err == nil {
			if host, ok := p.byNumber[int32(port)]; ok {
				value = net.JoinHostPort("127.0.0.1", strconv.Itoa(int(host)))
			}
		}
	}
	value = rewrite(value, p.mounts)
	if hasFlag {
		return flag + "=" + value
	}
	return value
}

// cutFlag splits "--name=value".
func cutFlag(a string) (flag, value string, ok bool) {
	if len(a) < 2 || a[0] != '-' {
		return "", "", false
	}
	for i := range len(a) {
		if a[i] == '=' {
			return a[:i], a[i+1:], true
		}
	}
	return "", "", false
}

// probe runs the readiness probe once (httpGet only; no probe: ready once running).
func (n *Node) probe(ctx context.Context, p *pod) bool {
	rp := p.container.ReadinessProbe
	if rp == nil || rp.HTTPGet == nil {
		return true
	}
	var port int32
	if rp.HTTPGet.Port.IntVal != 0 {
		port = p.byNumber[rp.HTTPGet.Port.IntVal]
	} else {
		port = p.ports[rp.HTTPGet.Port.StrVal]
	}
	timeout := time.Duration(max(rp.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ok := false
	if port != 0 {
		url := fmt.Sprintf("http://127.0.0.1:%d%s", port, rp.HTTPGet.Path)
		if req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil); err == nil {
			if resp, err := http.DefaultClient.Do(req); err == nil {
				ok = resp.StatusCode >= 200 && resp.StatusCode < 400 // as the kubelet judges an httpGet probe
				_ = resp.Body.Close()
			}
		}
	}
	if ok {
		p.failures = 0
		return true
	}
	p.failures++
	// Once ready, a pod stays ready until failureThreshold probes in a row fail.
	return p.ready && p.failures < int(max(rp.FailureThreshold, 1))
}

// writeStatus writes the Deployment's status as the deployment controller computes it from
// its pods, when it changed.
func (n *Node) writeStatus(ctx context.Context, d *appsv1.Deployment, p *pod, want int32) {
	var running, ready int32
	if p != nil && p.running() {
		running = 1
		if p.ready {
			ready = 1
		}
	}
	st := appsv1.DeploymentStatus{
		ObservedGeneration:  d.Generation,
		Replicas:            running,
		UpdatedReplicas:     running, // the stand-in replaces a pod before it runs a new template
		ReadyReplicas:       ready,
		AvailableReplicas:   ready, // minReadySeconds is not modelled
		UnavailableReplicas: max(want-ready, 0),
		Conditions:          d.Status.Conditions,
	}
	now := metav1.Now()
	if ready >= want {
		setCondition(&st, appsv1.DeploymentAvailable, corev1.ConditionTrue, "MinimumReplicasAvailable", "Deployment has minimum availability.", now)
		setCondition(&st, appsv1.DeploymentProgressing, corev1.ConditionTrue, "NewReplicaSetAvailable", fmt.Sprintf("ReplicaSet %q has successfully progressed.", d.Name+"-"+templateHash(&d.Spec.Template)), now)
	} else {
		setCondition(&st, appsv1.DeploymentAvailable, corev1.ConditionFalse, "MinimumReplicasUnavailable", "Deployment does not have minimum availability.", now)
		setCondition(&st, appsv1.DeploymentProgressing, corev1.ConditionTrue, "ReplicaSetUpdated", fmt.Sprintf("ReplicaSet %q is progressing.", d.Name+"-"+templateHash(&d.Spec.Template)), now)
	}
	if equality.Semantic.DeepEqual(st, d.Status) {
		return
	}
	d.Status = st
	if err := n.o.Client.Status().Update(ctx, d); err != nil {
		// A conflict or a deleted Deployment: the next sync sees the new state.
		n.t.Logf("node: writing the status of Deployment %s: %v", d.Name, err)
	}
}

// setCondition sets a Deployment condition, keeping its times when nothing changed.
func setCondition(st *appsv1.DeploymentStatus, typ appsv1.DeploymentConditionType, status corev1.ConditionStatus, reason, msg string, now metav1.Time) {
	conds := make([]appsv1.DeploymentCondition, 0, len(st.Conditions)+1)
	found := false
	for _, c := range st.Conditions {
		if c.Type != typ {
			conds = append(conds, c)
			continue
		}
		found = true
		if c.Status == status && c.Reason == reason && c.Message == msg {
			conds = append(conds, c)
			continue
		}
		nc := appsv1.DeploymentCondition{Type: typ, Status: status, Reason: reason, Message: msg, LastUpdateTime: now, LastTransitionTime: c.LastTransitionTime}
		if c.Status != status {
			nc.LastTransitionTime = now
		}
		conds = append(conds, nc)
	}
	if !found {
		conds = append(conds, appsv1.DeploymentCondition{Type: typ, Status: status, Reason: reason, Message: msg, LastUpdateTime: now, LastTransitionTime: now})
	}
	st.Conditions = conds
}

func (p *pod) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// terminate stops the process as the kubelet stops a container: SIGTERM, then SIGKILL after
// the grace period.
func (p *pod) terminate() {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(p.grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// kill stops the process at once (the test is over).
func (p *pod) kill() {
	if p.running() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func freePort() (int32, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return int32(l.Addr().(*net.TCPAddr).Port), nil
}

// tail returns the last n bytes of a file.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := max(fi.Size()-n, 0)
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil {
		return err.Error()
	}
	return string(b)
}
