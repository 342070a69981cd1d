package controller_test

import (
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/operator/render"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// keyState is what a test sees of an MCPServer's user-hash key: its Secret and what the
// proxy's Deployment and config make of it.
type keyState struct {
	SecretUID  string
	Controlled bool   // the Secret's controller is the MCPServer
	Immutable  bool   // the Secret cannot be edited in place
	KeyLen     int    // bytes of the key as the proxy reads it
	Annotation string // the pod template's tollgate.dev/user-hash-key
	Mounted    string // Secret/key the Deployment mounts at the key file
	ConfigFile string // sessionStorage.userHashKeyFile of the rendered ProxyConfig
	key        []byte
}

func readKeyState(t *testing.T, c client.Client, s *v1alpha1.MCPServer, secretName string) (keyState, error) {
	t.Helper()
	var st keyState
	var sec corev1.Secret
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: s.Namespace, Name: secretName}, &sec); err != nil {
		return st, err
	}
	st.SecretUID = string(sec.UID)
	st.Controlled = metav1.IsControlledBy(&sec, s)
	st.Immutable = sec.Immutable != nil && *sec.Immutable
	for _, v := range sec.Data {
		st.key, st.KeyLen = v, len(v)
	}
	var d appsv1.Deployment
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: s.Namespace, Name: render.Name(s.Name)}, &d); err != nil {
		return st, err
	}
	st.Annotation = d.Spec.Template.Annotations[render.UserHashKeyAnnotation]
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "user-hash-key" {
			src := v.Projected.Sources[0].Secret
			st.Mounted = src.Name + "/" + src.Items[0].Key
		}
	}
	var cm corev1.ConfigMap
	if err := c.Get(t.Context(), types.NamespacedName{Namespace: s.Namespace, Name: render.Name(s.Name)}, &cm); err != nil {
		return st, err
	}
	var pc v1alpha1.ProxyConfig
	if err := yaml.Unmarshal([]byte(cm.Data[render.ConfigKey]), &pc); err != nil {
		return st, err
	}
	if pc.SessionStorage != nil {
		st.ConfigFile = pc.SessionStorage.UserHashKeyFile
	}
	return st, nil
}

// waitKeyState waits until the server's key state is complete and agrees with itself: the pod
// template names the Secret the operator sees.
func waitKeyState(t *testing.T, c client.Client, s *v1alpha1.MCPServer, secretName, notUID string) keyState {
	t.Helper()
	var st keyState
	eventually(t, "the user-hash key of "+s.Name, func() (bool, string) {
		var err error
		st, err = readKeyState(t, c, s, secretName)
		if err != nil {
			return false, err.Error()
		}
		ok := st.SecretUID != notUID && st.Annotation == st.SecretUID
		return ok, fmt.Sprintf("%+v", st)
	})
	return st
}

// TestUserHashKeySecret: the operator creates each MCPServer's user-hash key once, owned by
// it, mounts it and names it in the proxy config; keeps it (no write at steady state);
// creates a new one when it is deleted, rolling the pods onto it with a warning; gives two
// servers different keys; uses a referenced Secret instead when told to; and leaves alone a
// Secret of its name that it does not own.
func TestUserHashKeySecret(t *testing.T) {
	op := startOperator(t)
	c := op.env.Client
	ctx := t.Context()
	ns := op.env.Namespace(t)

	a := newServer(ns, "alpha", nil)
	b := newServer(ns, "beta", nil)
	for _, s := range []*v1alpha1.MCPServer{a, b} {
		if err := c.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	stA := waitKeyState(t, c, a, render.UserHashKeySecretName("alpha"), "")
	stB := waitKeyState(t, c, b, render.UserHashKeySecretName("beta"), "")
	want := keyState{SecretUID: stA.SecretUID, Controlled: true, Immutable: true, KeyLen: 64, Annotation: stA.SecretUID,
		Mounted: "alpha-proxy-userhash/" + render.UserHashKeySecretKey, ConfigFile: render.UserHashKeyFile}
	if diff := cmp.Diff(want, stA, cmpopts.IgnoreUnexported(keyState{})); diff != "" {
		t.Errorf("the managed key: -want +got:\n%s", diff)
	}
	if _, err := hex.DecodeString(string(stA.key)); err != nil {
		t.Errorf("the key is not 64 hex digits (256 bits): %v", err)
	}
	if ratelimit.HashUser(stA.key, "alice@example.com") == ratelimit.HashUser(stB.key, "alice@example.com") {
		t.Error("two servers with generated keys give alice the same pseudonym")
	}

	// Steady state: no write, the key is neither re-created nor changed.
	op.settle(t)
	before := op.writes.Load()
	if err := c.Get(ctx, client.ObjectKeyFromObject(a), a); err != nil {
		t.Fatal(err)
	}
	a.Annotations = map[string]string{"touch": "1"} // a reconcile without a spec change
	if err := c.Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	op.settle(t)
	if n := op.writes.Load() - before; n != 0 {
		t.Errorf("after a reconcile at steady state the operator wrote %d times, want 0", n)
	}
	if again, _ := readKeyState(t, c, a, render.UserHashKeySecretName("alpha")); again.SecretUID != stA.SecretUID || string(again.key) != string(stA.key) {
		t.Error("the key changed without anyone touching it")
	}

	// Deleted: a new key, the pods roll onto it, and a warning says what it costs.
	if err := c.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: render.UserHashKeySecretName("alpha")}}); err != nil {
		t.Fatal(err)
	}
	rotated := waitKeyState(t, c, a, render.UserHashKeySecretName("alpha"), stA.SecretUID)
	if string(rotated.key) == string(stA.key) {
		t.Error("the re-created Secret holds the old key")
	}
	eventually(t, "the UserHashKeyReplaced warning", func() (bool, string) {
		var list eventsv1.EventList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, e := range list.Items {
			seen = append(seen, e.Reason)
			if e.Reason == "UserHashKeyReplaced" && e.Type == corev1.EventTypeWarning && e.Regarding.Name == "alpha" &&
				strings.Contains(e.Note, "per-user buckets start full once") {
				return true, ""
			}
		}
		return false, strings.Join(seen, ",")
	})

	// userHashKeyRef: a missing Secret is a missing reference; once there, it is mounted and
	// no managed Secret is made.
	shared := newServer(ns, "gamma", func(s *v1alpha1.MCPServerSpec) {
		s.SessionStorage.UserHashKeyRef = &v1alpha1.SecretKeyReference{Name: "pseudonyms", Key: "key"}
	})
	if err := c.Create(ctx, shared); err != nil {
		t.Fatal(err)
	}
	op.waitCondition(t, ns, "gamma", v1alpha1.ConditionReferencesResolved, "False", v1alpha1.ReasonSecretNotFound)
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pseudonyms"},
		StringData: map[string]string{"key": "a key shared by several servers"}}); err != nil {
		t.Fatal(err)
	}
	stG := waitKeyState(t, c, shared, "pseudonyms", "")
	if diff := cmp.Diff("pseudonyms/key", stG.Mounted); diff != "" {
		t.Errorf("userHashKeyRef: -want +got:\n%s", diff)
	}
	err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: render.UserHashKeySecretName("gamma")}, &corev1.Secret{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("with userHashKeyRef the operator made its own Secret too: %v", err)
	}

	// A Secret of the managed name that this server does not own is left alone.
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: render.UserHashKeySecretName("delta")},
		StringData: map[string]string{"userHashKey": "someone else's"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, newServer(ns, "delta", nil)); err != nil {
		t.Fatal(err)
	}
	op.waitCondition(t, ns, "delta", v1alpha1.ConditionReferencesResolved, "False", v1alpha1.ReasonSecretNotOwned)
	op.waitCondition(t, ns, "delta", v1alpha1.ConditionReady, "False", v1alpha1.ReasonSecretNotOwned)
	err = c.Get(ctx, types.NamespacedName{Namespace: ns, Name: render.Name("delta")}, &appsv1.Deployment{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("a proxy was deployed with a key the operator does not own: %v", err)
	}
}
