package controller

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/tollgate-dev/tollgate/operator/render"
)

// TestUserHashKeyCreateRace: another reconcile (another operator replica during a leader
// hand-over) creates the key's Secret between this reconcile's read and its create. The
// create fails with AlreadyExists, and this reconcile uses the other's key: the key is never
// overwritten, and the pods mount the Secret that exists.
func TestUserHashKeyCreateRace(t *testing.T) {
	s := mcpServer(nil)
	h := newHarness(t, s)
	raced := false
	inner := h.c
	h.c = interceptor.NewClient(inner.(client.WithWatch), interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.CreateOption) error {
			if _, ok := o.(*corev1.Secret); ok && !raced {
				raced = true
				other := render.UserHashKeySecret(s, []byte("the other reconcile's key, 32 b"))
				other.UID = "uid-of-the-other"
				if err := controllerutil.SetControllerReference(s, other, c.Scheme()); err != nil {
					return err
				}
				if err := c.Create(ctx, other); err != nil {
					return err
				}
			}
			return c.Create(ctx, o, opts...)
		},
	})
	h.r.Client = h.c
	h.reconcile(t)

	var sec corev1.Secret
	if err := h.c.Get(t.Context(), types.NamespacedName{Namespace: "tools", Name: render.UserHashKeySecretName("search")}, &sec); err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := h.c.Get(t.Context(), types.NamespacedName{Namespace: "tools", Name: render.Name("search")}, &d); err != nil {
		t.Fatal(err)
	}
	otherKey := render.UserHashKeySecret(s, []byte("the other reconcile's key, 32 b")).Data[render.UserHashKeySecretKey]
	want := map[string]string{"key": string(otherKey), "annotation": "uid-of-the-other"}
	got := map[string]string{"key": string(sec.Data[render.UserHashKeySecretKey]), "annotation": d.Spec.Template.Annotations[render.UserHashKeyAnnotation]}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("raced: -want +got:\n%s", diff)
	}
}
