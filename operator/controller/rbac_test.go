package controller_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/envtest"
	"github.com/tollgate-dev/tollgate/operator/manager"
)

// runManager starts the operator's manager (manager.New, the binary's wiring) with cfg and
// stops it when t ends.
func runManager(t *testing.T, cfg *rest.Config, o manager.Options) ctrl.Manager {
	t.Helper()
	o.MetricsAddr, o.ProbeAddr, o.ProxyImage = "0", "0", "proxy:test"
	o.SkipNameValidation = true // several managers in one process
	ctx, cancel := context.WithCancel(context.Background())
	mgr, err := manager.New(ctx, cfg, o)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return mgr
}

// revoke returns rules without the grant of resource in group (exact names, no wildcards),
// keeping everything else a rule grants: controller-gen merges rules with equal verbs, so
// the core events grant shares a rule with events.k8s.io.
func revoke(rules []rbacv1.PolicyRule, group, resource string) []rbacv1.PolicyRule {
	var out []rbacv1.PolicyRule
	for _, r := range rules {
		if !slices.Contains(r.APIGroups, group) || !slices.Contains(r.Resources, resource) {
			out = append(out, r)
			continue
		}
		// Split the rule: its other groups keep every resource, the group keeps the others.
		if others := slices.DeleteFunc(slices.Clone(r.APIGroups), func(g string) bool { return g == group }); len(others) > 0 {
			o := *r.DeepCopy()
			o.APIGroups = others
			out = append(out, o)
		}
		if others := slices.DeleteFunc(slices.Clone(r.Resources), func(s string) bool { return s == resource }); len(others) > 0 {
			o := *r.DeepCopy()
			o.APIGroups, o.Resources = []string{group}, others
			out = append(out, o)
		}
	}
	return out
}

// shippedRoleWithout is the shipped ClusterRole minus one grant, under a name of its own.
func shippedRoleWithout(t *testing.T, name, group, resource string) *rbacv1.ClusterRole {
	t.Helper()
	role, err := envtest.OperatorRole()
	if err != nil {
		t.Fatal(err)
	}
	// A negative case proves something only if the shipped role has the grant it removes.
	// Not fatal: the shipped-role case still runs and shows what the missing grant breaks.
	if !granted(role.Rules, group, resource) {
		t.Errorf("the shipped role does not grant %s in group %q: a case without it proves nothing", resource, group)
	}
	role.Rules = revoke(role.Rules, group, resource)
	if granted(role.Rules, group, resource) {
		t.Fatalf("revoke left %s in group %q", resource, group)
	}
	role.Name = name
	return role
}

func granted(rules []rbacv1.PolicyRule, group, resource string) bool {
	for _, r := range rules {
		if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) {
			return true
		}
	}
	return false
}

// TestOwnerReferencesPermissionEnforcement: the operator's applies pass the
// OwnerReferencesPermissionEnforcement admission plugin (on in OpenShift) under the shipped
// role. The managed objects carry a controller reference with blockOwnerDeletion, which that
// plugin allows only to who may update the owner's finalizers: without
// mcpservers/finalizers every apply fails, as it did in the field; without the plugin the
// gap does not show, which is why this test runs a control plane of its own with it.
func TestOwnerReferencesPermissionEnforcement(t *testing.T) {
	enforcing := envtest.Start(t, envtest.WithAdmissionPlugins("OwnerReferencesPermissionEnforcement"))

	// --enable-admission-plugins adds to the defaults: NamespaceLifecycle (a default) still
	// refuses an object in a namespace that does not exist.
	err := enforcing.Client.Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "absent", Name: "x"}})
	if !apierrors.IsNotFound(err) || !strings.Contains(err.Error(), `namespaces "absent" not found`) {
		t.Fatalf("with OwnerReferencesPermissionEnforcement enabled, a ConfigMap in a missing namespace: %v; want NamespaceLifecycle's NotFound (the default plugins must stay enabled)", err)
	}

	noFinalizers := shippedRoleWithout(t, "tollgate-operator-no-finalizers", v1alpha1.GroupVersion.Group, "mcpservers/finalizers")
	type result struct {
		Reason  string   // of the Ready condition after the first reconcile
		Created []string // the managed objects that exist
		Denials []string // the requests the API server refused
	}
	cases := map[string]struct {
		reason string
		shared bool                // the shared control plane, without the plugin
		role   *rbacv1.ClusterRole // nil: the shipped role (AsOperator)
		want   func(ns string) result
	}{
		"ShippedRole": {
			reason: "Under the shipped role, the plugin admits the applies: the objects exist and Ready waits for the proxy.",
			want: func(string) result {
				return result{Reason: v1alpha1.ReasonProxyProgressing, Created: []string{"ConfigMap", "Deployment", "Service"}}
			},
		},
		"WithoutFinalizers": {
			reason: "Without mcpservers/finalizers the plugin refuses the first owned object (the user-hash key's Secret), as on OpenShift: Ready is ApplyFailed and nothing is created.",
			role:   noFinalizers,
			want: func(ns string) result {
				return result{Reason: v1alpha1.ReasonApplyFailed, Denials: []string{"POST /api/v1/namespaces/" + ns + "/secrets"}}
			},
		},
		"WithoutFinalizersWithoutPlugin": {
			reason: "Without the plugin the same role works: a control plane with the default plugins cannot reveal the missing verb.",
			shared: true,
			role:   noFinalizers,
			want: func(string) result {
				return result{Reason: v1alpha1.ReasonProxyProgressing, Created: []string{"ConfigMap", "Deployment", "Service"}}
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			env := enforcing
			if tc.shared {
				env = envtest.Shared(t)
			}
			ns := env.Namespace(t)
			var cfg *rest.Config
			if tc.role == nil {
				cfg = env.AsOperator(t)
			} else {
				cfg = env.GrantClusterRole(t, ns, "operator", tc.role)
			}
			var denials envtest.Denials
			runManager(t, denials.Wrap(cfg), manager.Options{})

			c := env.Client
			s := newServer(ns, "search", nil)
			if err := c.Create(t.Context(), s); err != nil {
				t.Fatal(err)
			}
			// Deleted when the case ends, so that the next case's manager (which watches every
			// namespace) does not reconcile it under another role. envtest runs no garbage
			// collector: the managed objects stay, unwatched.
			t.Cleanup(func() { _ = c.Delete(context.Background(), s) })

			var got result
			eventually(t, "the first reconcile's Ready condition", func() (bool, string) {
				var cur v1alpha1.MCPServer
				if err := c.Get(t.Context(), client.ObjectKeyFromObject(s), &cur); err != nil {
					return false, err.Error()
				}
				cond := meta.FindStatusCondition(cur.Status.Conditions, v1alpha1.ConditionReady)
				if cond == nil || cond.ObservedGeneration != cur.Generation {
					return false, "no Ready condition yet"
				}
				got.Reason = cond.Reason
				if cond.Reason == v1alpha1.ReasonApplyFailed && !strings.Contains(cond.Message, "blockOwnerDeletion") {
					t.Errorf("ApplyFailed, but not for blockOwnerDeletion: %s", cond.Message)
				}
				return true, ""
			})
			for _, obj := range []client.Object{&corev1.ConfigMap{}, &appsv1.Deployment{}, &corev1.Service{}} {
				err := c.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "search-proxy"}, obj)
				switch {
				case err == nil:
					got.Created = append(got.Created, kind(obj))
				case !apierrors.IsNotFound(err):
					t.Fatal(err)
				}
			}
			got.Denials = denials.List()
			if diff := cmp.Diff(tc.want(ns), got); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

func kind(obj client.Object) string {
	switch obj.(type) {
	case *corev1.ConfigMap:
		return "ConfigMap"
	case *appsv1.Deployment:
		return "Deployment"
	case *corev1.Service:
		return "Service"
	}
	return "?"
}

// TestLeaderElectionEvents: with --leader-elect, the manager under the shipped role acquires
// the lease and records the leader-election event. client-go records that event through the
// core/v1 API (not events.k8s.io, which the reconciler uses): in the field the role lacked it
// and every replica logged "events is forbidden". The case without core events shows the
// check sees the refusal.
func TestLeaderElectionEvents(t *testing.T) {
	env := envtest.Shared(t)
	noCoreEvents := shippedRoleWithout(t, "tollgate-operator-no-core-events", "", "events")
	type result struct {
		LeaseHeld bool     // the Lease names a holder
		Event     string   // the core Event's message on the Lease ("" when none)
		Denials   []string // the requests the API server refused
	}
	cases := map[string]struct {
		reason string
		role   *rbacv1.ClusterRole // nil: the shipped role (AsOperator)
		want   func(ns, holder string) result
	}{
		"ShippedRole": {
			reason: "The shipped role lets the leader record its event.",
			want: func(_, holder string) result {
				return result{LeaseHeld: true, Event: holder + " became leader"}
			},
		},
		"WithoutCoreEvents": {
			reason: "Without core events the lease is still acquired, but the event is refused (and not retried).",
			role:   noCoreEvents,
			want: func(ns, _ string) result {
				return result{LeaseHeld: true, Denials: []string{"POST /api/v1/namespaces/" + ns + "/events"}}
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ns := env.Namespace(t)
			var cfg *rest.Config
			if tc.role == nil {
				cfg = env.AsOperator(t)
			} else {
				cfg = env.GrantClusterRole(t, ns, "operator", tc.role)
			}
			var denials envtest.Denials
			mgr := runManager(t, denials.Wrap(cfg), manager.Options{LeaderElect: true, LeaderElectionNamespace: ns})
			select {
			case <-mgr.Elected():
			case <-time.After(30 * time.Second):
				t.Fatalf("not elected within 30 s; refused: %v", denials.List())
			}

			var lease coordinationv1.Lease
			if err := env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: manager.LeaderElectionID}, &lease); err != nil {
				t.Fatal(err)
			}
			holder := ""
			if lease.Spec.HolderIdentity != nil {
				holder = *lease.Spec.HolderIdentity
			}
			got := result{LeaseHeld: holder != ""}
			// The event is sent asynchronously after the election: wait for it, or for its
			// refusal, whichever shows.
			eventually(t, "the leader-election event or its refusal", func() (bool, string) {
				var events corev1.EventList
				if err := env.Client.List(t.Context(), &events, client.InNamespace(ns)); err != nil {
					return false, err.Error()
				}
				for _, e := range events.Items {
					if e.Reason == "LeaderElection" && e.InvolvedObject.Kind == "Lease" && e.InvolvedObject.Name == manager.LeaderElectionID {
						got.Event = e.Message
					}
				}
				got.Denials = denials.List()
				return got.Event != "" || len(got.Denials) > 0, "no event, no refusal"
			})
			if diff := cmp.Diff(tc.want(ns, holder), got); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
}
