package e2e_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/redis/go-redis/v9"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/envtest"
	"github.com/tollgate-dev/tollgate/internal/node"
	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/internal/testupstream"
	"github.com/tollgate-dev/tollgate/operator/render"
)

// searchServer is the manifest most scenarios start from: header authentication, Redis, 3
// calls per user per hour in all, of which at most 2 of the search tool.
func (ch *chain) searchServer() manifest {
	return manifest{Name: "search", Upstream: ch.upstream.Endpoint(), Auth: true, Redis: ch.redis.Addr, PerUser: 3, SearchPerUser: 2}
}

// TestE2EApplyEnforces: a manifest applied to the API server becomes a proxy that enforces
// exactly the limits it declares, and the status says Ready, kstatus Current, Argo CD Healthy.
func TestE2EApplyEnforces(t *testing.T) {
	ch := newChain(t, envtest.Shared(t))
	ch.applyGateway(t)
	ch.apply(t, ch.searchServer())
	ch.waitHealth(t, "search", healthy)
	p := ch.pod(t, "search", anyPod)

	run(t, p, "Each user gets 2 searches and 3 calls in all per hour; a rejection is a 429 with Retry-After naming the bucket; users do not share per-user buckets.", []step{
		{"alice", "search", "ok"},
		{"alice", "search", "ok"},
		{"alice", "search", "429 " + searchPerUserBucket},
		{"alice", "echo", "ok"},
		{"alice", "echo", "429 " + perUserBucket},
		{"bob", "search", "ok"},
		{"bob", "search", "ok"},
		{"bob", "search", "429 " + searchPerUserBucket},
	})
	// An SDK client sees the same limits: go-sdk turns the 429 into an error (it drops the
	// body and Retry-After: docs/proxy.md).
	sdk := sdkSession(t, p, "carol")
	var got []string
	for range 3 {
		ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
		res, err := sdk.CallTool(ctx, &mcp.CallToolParams{Name: "search", Arguments: map[string]any{"text": "x"}})
		cancel()
		switch {
		case err != nil && strings.Contains(err.Error(), "Too Many Requests"):
			got = append(got, "429")
		case err != nil:
			got = append(got, err.Error())
		case res.IsError:
			got = append(got, "tool error")
		default:
			got = append(got, "ok")
		}
	}
	if diff := cmp.Diff([]string{"ok", "ok", "429"}, got); diff != "" {
		t.Errorf("A go-sdk client gets 2 searches, then the rejection.\n-want +got:\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"search": 6, "echo": 1}, executed(t, ch.upstream)); diff != "" {
		t.Errorf("The upstream executes exactly the admitted calls, none of the rejected ones.\nexecuted: -want +got:\n%s", diff)
	}
}

// TestE2ELowerLimitReloadsInPlace: a lowered limit is enforced within seconds by the running
// proxy: the operator rewrites the ConfigMap (not the pod template), the node refreshes the
// mounted file as the kubelet does, the proxy reloads it. No restart, so no open SSE stream
// is cut.
func TestE2ELowerLimitReloadsInPlace(t *testing.T) {
	ch := newChain(t, envtest.Shared(t))
	ch.applyGateway(t)
	m := ch.searchServer()
	ch.apply(t, m)
	ch.waitHealth(t, "search", healthy)
	before := ch.pod(t, "search", anyPod)
	hash := ch.deployment(t, "search").Spec.Template.Annotations[render.ConfigHashAnnotation]
	reloadsBefore := reloads(t, before)

	m.SearchPerUser = 1
	// Ready cannot wait for the reload (the operator does not see it), so the status says
	// healthy for the new generation while the proxy still enforces the old limit, for as
	// long as the file takes to reach the pod and the proxy to notice: here about 2 s, in a
	// cluster the kubelet's ConfigMap refresh (up to a minute or more). Measured, not failed.
	var reloaded atomic.Bool
	stop := ch.watchHealthy(t, "search", ch.generation(t, "search")+1, reloaded.Load)
	began := time.Now()
	ch.apply(t, m)
	ch.waitHealth(t, "search", healthy) // at the new generation
	healthyAfter := time.Since(began)
	deadline := began.Add(reloadLimit)
	for reloads(t, before) == reloadsBefore {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy did not reload the lowered limit within %v", reloadLimit)
		}
		time.Sleep(50 * time.Millisecond)
	}
	reloaded.Store(true)
	t.Logf("after the apply: healthy at the new generation in %v, the lowered limit in force in %v (%d status writes said healthy before it)",
		healthyAfter.Round(time.Millisecond), time.Since(began).Round(time.Millisecond), len(stop()))

	after := ch.pod(t, "search", anyPod)
	// What a user watches to know the new limits are live: the proxy reports the generation
	// it enforces (tollgate_config_generation), now the MCPServer's.
	if got, want := configGeneration(t, after), ch.generation(t, "search"); got != want {
		t.Errorf("tollgate_config_generation %d after the reload, want the MCPServer's generation %d", got, want)
	}
	type process struct {
		PID, Restarts int
		Template      string
		ConfigHash    string
	}
	want := process{before.PID, before.Restarts, before.Template, hash}
	got := process{after.PID, after.Restarts, after.Template, ch.deployment(t, "search").Spec.Template.Annotations[render.ConfigHashAnnotation]}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("A rate-limit change reloads in place: the same process, pod template and config hash.\n-want +got:\n%s", diff)
	}
	run(t, after, "The search tool now admits 1 call per user, not 2.", []step{
		{"carol", "search", "ok"},
		{"carol", "search", "429 " + searchPerUserBucket},
		{"carol", "echo", "ok"},
	})
	if diff := cmp.Diff(map[string]int{"search": 1, "echo": 1}, executed(t, ch.upstream)); diff != "" {
		t.Errorf("executed: -want +got:\n%s", diff)
	}
}

// TestE2EUpstreamChangeRestarts: a new upstream is a setting the proxy cannot reload: the
// config hash changes, the pod template with it, and the node replaces the process; the
// server is Ready again and calls reach the new upstream. The buckets live in Redis, so a
// restart hands nobody fresh tokens.
func TestE2EUpstreamChangeRestarts(t *testing.T) {
	ch := newChain(t, envtest.Shared(t))
	ch.applyGateway(t)
	m := ch.searchServer()
	ch.apply(t, m)
	ch.waitHealth(t, "search", healthy)
	before := ch.pod(t, "search", anyPod)
	hash := ch.deployment(t, "search").Spec.Template.Annotations[render.ConfigHashAnnotation]
	run(t, before, "Alice spends her 2 searches on the first upstream.", []step{
		{"alice", "search", "ok"},
		{"alice", "search", "ok"},
	})

	second := testupstream.StartGo(t, testupstream.GoOptions{})
	m.Upstream = second.Endpoint()
	stop := ch.watchHealthy(t, "search", ch.generation(t, "search")+1, func() bool {
		p, _ := ch.node.Pod(render.Name("search"))
		return p.Template != before.Template && p.Ready
	})
	ch.apply(t, m)
	after := ch.pod(t, "search", func(p node.Pod) bool { return p.Template != before.Template })
	ch.waitHealth(t, "search", healthy)
	if early := stop(); len(early) > 0 {
		t.Errorf("A GitOps tool saw the new spec healthy before the restarted proxy was available:\n%s", strings.Join(early, "\n"))
	}
	if after.PID == before.PID {
		t.Errorf("the proxy process %d was not replaced", before.PID)
	}
	if got := ch.deployment(t, "search").Spec.Template.Annotations[render.ConfigHashAnnotation]; got == hash {
		t.Errorf("the config hash %s did not change with the upstream", hash)
	}
	run(t, after, "After the restart Alice's search bucket is still empty (it lives in Redis); Bob's calls reach the new upstream.", []step{
		{"alice", "search", "429 " + searchPerUserBucket},
		{"bob", "search", "ok"},
		{"bob", "echo", "ok"},
	})
	if diff := cmp.Diff(map[string]int{"search": 2, "echo": 0}, executed(t, ch.upstream)); diff != "" {
		t.Errorf("the first upstream executed: -want +got:\n%s", diff)
	}
	if diff := cmp.Diff(map[string]int{"search": 1, "echo": 1}, executed(t, second)); diff != "" {
		t.Errorf("the second upstream executed: -want +got:\n%s", diff)
	}
}

// TestE2EMissingSecret: the manifest moves the limiter to a password-protected Redis but the
// Secret is not there yet. The status says so (Ready False/SecretNotFound, not stalled: the
// Secret may yet come, so kstatus InProgress and Argo CD Progressing), and nothing is changed
// meanwhile: the running proxy keeps enforcing on the old Redis. Once the Secret exists the
// proxy restarts with the password mounted, and enforces on the new Redis.
func TestE2EMissingSecret(t *testing.T) {
	ch := newChain(t, envtest.Shared(t))
	ch.applyGateway(t)
	m := ch.searchServer()
	ch.apply(t, m)
	ch.waitHealth(t, "search", healthy)
	before := ch.pod(t, "search", anyPod)

	const password = "e2e-s3cret"
	secured := testredis.Start(t)
	ctx := t.Context()
	if err := secured.Client(t).ConfigSet(ctx, "requirepass", password).Err(); err != nil {
		t.Fatalf("setting a password on the second redis-server: %v", err)
	}
	m.Redis, m.PasswordSecret = secured.Addr, "redis-auth"
	ch.apply(t, m)
	missing := health{
		Current: true,
		Conditions: map[string]string{
			v1alpha1.ConditionRateLimitConfigValid: "True/" + v1alpha1.ReasonRateLimitConfigValid,
			v1alpha1.ConditionReferencesResolved:   "False/" + v1alpha1.ReasonSecretNotFound,
			v1alpha1.ConditionProxyAvailable:       "True/" + v1alpha1.ReasonProxyAvailable,
			v1alpha1.ConditionReady:                "False/" + v1alpha1.ReasonSecretNotFound,
			v1alpha1.ConditionStalled:              "False/" + v1alpha1.ReasonNotStalled,
		},
		Kstatus: "InProgress",
		ArgoCD:  "Progressing",
	}
	ch.waitHealth(t, "search", missing)
	if p, _ := ch.node.Pod(render.Name("search")); p.PID != before.PID || p.Template != before.Template {
		t.Errorf("the running proxy was changed while a Secret is missing: process %d → %d, template %s → %s", before.PID, p.PID, before.Template, p.Template)
	}
	run(t, before, "While the Secret is missing the old proxy keeps enforcing the old limits.", []step{
		{"alice", "search", "ok"},
		{"alice", "search", "ok"},
		{"alice", "search", "429 " + searchPerUserBucket},
	})

	stop := ch.watchHealthy(t, "search", ch.generation(t, "search"), func() bool {
		p, _ := ch.node.Pod(render.Name("search"))
		return p.Template != before.Template && p.Ready
	})
	ch.applyYAML(t, fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: redis-auth, namespace: %s}\nstringData: {password: %s}\n", ch.ns, password))
	after := ch.pod(t, "search", func(p node.Pod) bool { return p.Template != before.Template })
	ch.waitHealth(t, "search", healthy)
	if early := stop(); len(early) > 0 {
		t.Errorf("A GitOps tool saw the server healthy before the proxy with the password was available:\n%s", strings.Join(early, "\n"))
	}
	// Through a failing Redis the proxy fails open (failurePolicy Allow): only a proxy that
	// authenticated to the new Redis rejects Alice's third search there.
	run(t, after, "The proxy enforces on the new Redis, where Alice's buckets are full again.", []step{
		{"alice", "search", "ok"},
		{"alice", "search", "ok"},
		{"alice", "search", "429 " + searchPerUserBucket},
	})
	authed := redis.NewClient(&redis.Options{Addr: secured.Addr, Password: password, MaxRetries: -1})
	defer func() { _ = authed.Close() }()
	if n, err := authed.DBSize(ctx).Result(); err != nil || n == 0 {
		t.Errorf("the password-protected Redis holds %d keys (%v): the proxy's buckets are not there", n, err)
	}
}

// TestE2ERedisOutageFailsClosed: with failurePolicy Deny the proxy cannot serve without
// Redis, and says so where Kubernetes looks: its readiness fails, the node reports the
// Deployment unavailable, and the MCPServer is Ready=False/ProxyUnavailable (kstatus
// InProgress, Argo CD Progressing) while clients get 503. Redis back, the same process is
// ready again and enforces on the (empty) new Redis.
func TestE2ERedisOutageFailsClosed(t *testing.T) {
	ch := newChain(t, envtest.Shared(t))
	store := testredis.StartRestartable(t)
	ch.applyGateway(t)
	m := ch.searchServer()
	m.Redis, m.FailurePolicy = store.Addr, string(v1alpha1.FailurePolicyDeny)
	ch.apply(t, m)
	ch.waitHealth(t, "search", healthy)
	before := ch.pod(t, "search", anyPod)
	run(t, before, "Before the outage calls are decided in Redis.", []step{{"alice", "search", "ok"}})

	store.Stop()
	unavailable := health{
		Current: true,
		Conditions: map[string]string{
			v1alpha1.ConditionRateLimitConfigValid: "True/" + v1alpha1.ReasonRateLimitConfigValid,
			v1alpha1.ConditionReferencesResolved:   "True/" + v1alpha1.ReasonReferencesResolved,
			v1alpha1.ConditionProxyAvailable:       "False/" + v1alpha1.ReasonProxyUnavailable,
			v1alpha1.ConditionReady:                "False/" + v1alpha1.ReasonProxyUnavailable,
			v1alpha1.ConditionStalled:              "False/" + v1alpha1.ReasonNotStalled,
		},
		Kstatus: "InProgress",
		ArgoCD:  "Progressing",
	}
	ch.waitHealth(t, "search", unavailable)
	run(t, before, "During the outage the proxy fails closed.", []step{{"alice", "search", "503"}, {"bob", "echo", "503"}})

	store.Restart()
	ch.waitHealth(t, "search", healthy)
	after := ch.pod(t, "search", anyPod)
	if after.PID != before.PID || after.Restarts != before.Restarts {
		t.Errorf("the proxy process was restarted (%d → %d, restarts %d → %d): readiness, not liveness, follows Redis", before.PID, after.PID, before.Restarts, after.Restarts)
	}
	run(t, after, "Redis restarted empty: Alice's search bucket is full again, and enforced.", []step{
		{"alice", "search", "ok"},
		{"alice", "search", "ok"},
		{"alice", "search", "429 " + searchPerUserBucket},
	})
	if diff := cmp.Diff(map[string]int{"search": 3, "echo": 0}, executed(t, ch.upstream)); diff != "" {
		t.Errorf("Nothing reaches the upstream while the proxy fails closed.\nexecuted: -want +got:\n%s", diff)
	}
}

// TestE2EPerUserWithoutAuth: per-user limits without authentication, on an object stored
// around the CEL rule that refuses it (an object admitted before the rule existed; here the
// rule is removed from the CRD of a control plane of the test's own). The operator's defense
// in depth: PerUserRequiresAuth, Stalled (kstatus Failed, Argo CD Degraded), and the proxy
// still serves, enforcing the limits that can apply (shared) and not the per-user ones.
func TestE2EPerUserWithoutAuth(t *testing.T) {
	env := envtest.Start(t) // its own control plane: the CRD is changed
	removeAuthRules(t, env)
	ch := newChain(t, env)
	m := manifest{Name: "open", Upstream: ch.upstream.Endpoint(), Redis: ch.redis.Addr, Shared: 4, PerUser: 1, SearchPerUser: 1}
	// The API server applies a CRD update to admission shortly after it stores it.
	deadline := time.Now().Add(statusLimit)
	for {
		err := ch.tryApply(t, m)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server without the auth rules still refuses the object: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ch.waitHealth(t, "open", health{
		Current: true,
		Conditions: map[string]string{
			v1alpha1.ConditionRateLimitConfigValid: "False/" + v1alpha1.ReasonPerUserRequiresAuth,
			v1alpha1.ConditionReferencesResolved:   "True/" + v1alpha1.ReasonReferencesResolved,
			v1alpha1.ConditionProxyAvailable:       "True/" + v1alpha1.ReasonProxyAvailable,
			v1alpha1.ConditionReady:                "False/" + v1alpha1.ReasonPerUserRequiresAuth,
			v1alpha1.ConditionStalled:              "True/" + v1alpha1.ReasonPerUserRequiresAuth,
		},
		Kstatus: "Failed",
		ArgoCD:  "Degraded",
	})
	p := ch.pod(t, "open", anyPod)
	run(t, p, "Without an identity, the per-user limits (1 call, 1 search) are not in force; the shared 4 calls an hour are, whoever calls. A header means nothing to an anonymous proxy.", []step{
		{"", "search", "ok"},
		{"", "search", "ok"},
		{"mallory", "search", "ok"},
		{"mallory", "echo", "ok"},
		{"", "search", "429 " + sharedBucket},
		{"mallory", "echo", "429 " + sharedBucket},
	})
	if diff := cmp.Diff(map[string]int{"search": 3, "echo": 1}, executed(t, ch.upstream)); diff != "" {
		t.Errorf("executed: -want +got:\n%s", diff)
	}
}

// TestE2EDeleteRemovesEverything: deleting the MCPServer removes what it owned and stops the
// proxy. envtest runs no kube-controller-manager, so no garbage collector: the test checks the
// owner references the real collector follows, then collects as it would (collectGarbage),
// and checks that the node stops the process and the operator re-creates nothing. What the
// real collector does with those references is not exercised here.
func TestE2EDeleteRemovesEverything(t *testing.T) {
	ch := newChain(t, envtest.Shared(t))
	ch.applyGateway(t)
	ch.apply(t, ch.searchServer())
	ch.waitHealth(t, "search", healthy)
	p := ch.pod(t, "search", anyPod)
	run(t, p, "The proxy serves before the deletion.", []step{{"alice", "search", "ok"}})

	var s v1alpha1.MCPServer
	if err := ch.c.Get(t.Context(), types.NamespacedName{Namespace: ch.ns, Name: "search"}, &s); err != nil {
		t.Fatal(err)
	}
	yes := true
	wantOwner := []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: "MCPServer", Name: "search", UID: s.UID, Controller: &yes, BlockOwnerDeletion: &yes}}
	for _, obj := range owned() {
		if err := ch.c.Get(t.Context(), types.NamespacedName{Namespace: ch.ns, Name: render.Name("search")}, obj); err != nil {
			t.Fatalf("%T: %v", obj, err)
		}
		if diff := cmp.Diff(wantOwner, obj.GetOwnerReferences()); diff != "" {
			t.Errorf("%T %s: the owner references the garbage collector follows: -want +got:\n%s", obj, obj.GetName(), diff)
		}
	}

	// kubectl delete: background propagation (foreground would wait for a collector that
	// does not run here).
	if err := ch.c.Delete(t.Context(), &s, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatalf("deleting the MCPServer: %v", err)
	}
	collected := collectGarbage(t, ch.c, ch.ns)
	if diff := cmp.Diff([]string{"ConfigMap/search-proxy", "Deployment/search-proxy", "NetworkPolicy/search-proxy", "Service/search-proxy"}, collected); diff != "" {
		t.Errorf("what the garbage collector deletes once the MCPServer is gone: -want +got:\n%s", diff)
	}

	// The node stops the process of a deleted Deployment.
	deadline := time.Now().Add(statusLimit)
	for {
		_, exists := ch.node.Pod(render.Name("search"))
		if !exists && !alive(p.PID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy process %d still runs %v after its Deployment was deleted", p.PID, statusLimit)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c, err := net.DialTimeout("tcp", p.Ports["mcp"], time.Second); err == nil {
		_ = c.Close()
		t.Errorf("something still listens on the deleted proxy's address %s", p.Ports["mcp"])
	}
	// The operator re-creates nothing for a deleted server (watch events of the deleted
	// objects reach it; give them time).
	time.Sleep(2 * time.Second)
	for _, obj := range owned() {
		err := ch.c.Get(t.Context(), types.NamespacedName{Namespace: ch.ns, Name: render.Name("search")}, obj)
		if !apierrors.IsNotFound(err) {
			t.Errorf("%T %s after the deletion: %v, want NotFound", obj, render.Name("search"), err)
		}
	}
}
