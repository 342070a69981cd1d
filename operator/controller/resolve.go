package controller

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/operator/render"
)

// refError is a reference that does not resolve; reason is the condition reason.
type refError struct {
	reason string
	msg    string
}

func (e *refError) Error() string { return e.msg }

// resolve reads what the spec references: the OIDC and external-auth ConfigMaps (their
// keys go into the proxy's config; render.ResolveInputs, shared with `operator validate` and
// `plan`) and the existence of the Secrets (their content never passes through the operator:
// the proxy mounts them).
func (r *Reconciler) resolve(ctx context.Context, s *v1alpha1.MCPServer) (render.Inputs, *refError, error) {
	in, err := render.ResolveInputs(s, r.ProxyImage, func(name string) (map[string]string, bool, error) {
		var cm corev1.ConfigMap
		err := r.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: name}, &cm) // from the API server: never cached
		if apierrors.IsNotFound(err) {
			return nil, false, nil
		}
		return cm.Data, err == nil, err
	})
	var re *render.RefError
	switch {
	case errors.As(err, &re):
		return in, &refError{reason: re.Reason, msg: re.Message}, nil
	case err != nil:
		return in, nil, err
	}
	for _, name := range secretNames(s) {
		var m metav1.PartialObjectMetadata
		m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		err := r.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: name}, &m)
		if apierrors.IsNotFound(err) {
			return in, &refError{reason: v1alpha1.ReasonSecretNotFound, msg: fmt.Sprintf("Secret %q not found in namespace %q", name, s.Namespace)}, nil
		}
		if err != nil {
			return in, nil, fmt.Errorf("reading Secret %q: %w", name, err)
		}
	}
	return in, nil, nil
}

// configMapNames are the ConfigMaps an MCPServer references (for the watch index).
func configMapNames(s *v1alpha1.MCPServer) []string {
	var out []string
	if s.Spec.OIDCConfigRef != nil {
		out = append(out, s.Spec.OIDCConfigRef.Name)
	}
	if s.Spec.ExternalAuthConfigRef != nil {
		out = append(out, s.Spec.ExternalAuthConfigRef.Name)
	}
	return out
}

// secretNames are the Secrets an MCPServer references.
func secretNames(s *v1alpha1.MCPServer) []string {
	ss := s.Spec.SessionStorage
	if ss == nil {
		return nil
	}
	var out []string
	for _, ref := range []*v1alpha1.SecretKeyReference{ss.UsernameRef, ss.PasswordRef} {
		if ref != nil {
			out = append(out, ref.Name)
		}
	}
	if ss.TLS != nil && ss.TLS.CACertRef != nil {
		out = append(out, ss.TLS.CACertRef.Name)
	}
	return out
}

var _ client.Object = (*v1alpha1.MCPServer)(nil)
