package controller

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

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
	for _, name := range referencedSecrets(s) {
		var m metav1.PartialObjectMetadata
		m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		err := r.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: name}, &m)
		if apierrors.IsNotFound(err) {
			return in, &refError{reason: v1alpha1.ReasonSecretNotFound, msg: fmt.Sprintf("Secret %q not found in namespace %q", name, s.Namespace)}, nil
		}
		if err != nil {
			return in, nil, fmt.Errorf("reading Secret %q: %w", name, err)
		}
		if ref := s.Spec.SessionStorage.UserHashKeyRef; ref != nil && ref.Name == name {
			in.UserHashKeyUID = string(m.UID)
		}
	}
	return in, nil, nil
}

// userHashKey makes sure the user-hash key the proxy will mount exists, and returns the UID
// of its Secret. With spec.sessionStorage.userHashKeyRef, resolve found it already. Otherwise
// the key is the operator's own Secret: created once with a random 256-bit key, never
// updated, never read back (creating a Secret with data needs no right to read one). A
// Secret of that name that this MCPServer does not control is left alone and reported
// (SecretNotOwned): it may be a deleted namesake's, about to be garbage-collected, or
// someone's own.
//
// Race-free: Create fails with AlreadyExists when another reconcile (another operator
// replica during a leader hand-over) created it first, and this one then uses that key; the
// key is never overwritten. A Secret deleted by hand is created again with a NEW key (the old
// one was never read, so it cannot be restored): the pod template's UID annotation changes
// and every replica rolls onto the new key together; the event says so.
func (r *Reconciler) userHashKey(ctx context.Context, s *v1alpha1.MCPServer) (string, *refError, error) {
	if s.Spec.SessionStorage == nil {
		return "", nil, nil // no buckets, nothing to pseudonymise
	}
	if s.Spec.SessionStorage.UserHashKeyRef != nil {
		return "", nil, nil // resolve read its UID
	}
	name := render.UserHashKeySecretName(s.Name)
	for range 2 {
		var m metav1.PartialObjectMetadata
		m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		err := r.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: name}, &m)
		switch {
		case err == nil && metav1.IsControlledBy(&m, s):
			return string(m.UID), nil, nil
		case err == nil:
			return "", &refError{reason: v1alpha1.ReasonSecretNotOwned, msg: fmt.Sprintf(
				"Secret %q (the user-hash key the operator would create) exists but is not owned by this MCPServer: the operator neither uses nor changes it; delete it, or name it in spec.sessionStorage.userHashKeyRef to use it", name)}, nil
		case !apierrors.IsNotFound(err):
			return "", nil, fmt.Errorf("reading Secret %q: %w", name, err)
		}
		key := make([]byte, render.UserHashKeyBytes)
		if _, err := rand.Read(key); err != nil {
			return "", nil, fmt.Errorf("generating the user-hash key: %w", err)
		}
		secret := render.UserHashKeySecret(s, key)
		if err := controllerutil.SetControllerReference(s, secret, r.Scheme); err != nil {
			return "", nil, err
		}
		err = r.Create(ctx, secret, client.FieldOwner(render.FieldManager))
		switch {
		case err == nil:
			if r.Recorder != nil {
				r.Recorder.Eventf(s, nil, corev1.EventTypeNormal, "UserHashKeyCreated", "CreateSecret",
					"Created Secret %s with a random 256-bit key for user pseudonyms", name)
			}
			return string(secret.UID), nil, nil
		case !apierrors.IsAlreadyExists(err):
			return "", nil, fmt.Errorf("creating Secret %q: %w", name, err)
		}
		// Created meanwhile by another reconcile: read it again and use it.
	}
	return "", nil, fmt.Errorf("creating Secret %q: it exists, yet cannot be read", name)
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

// secretNames are the Secrets whose changes concern an MCPServer (for the watch index): the
// ones it references and the user-hash key's, the operator's own included (deleted, it is
// created again at once).
func secretNames(s *v1alpha1.MCPServer) []string {
	out := referencedSecrets(s)
	if s.Spec.SessionStorage != nil && s.Spec.SessionStorage.UserHashKeyRef == nil {
		out = append(out, render.UserHashKeySecretName(s.Name))
	}
	return out
}

// referencedSecrets are the Secrets an MCPServer's spec names.
func referencedSecrets(s *v1alpha1.MCPServer) []string {
	ss := s.Spec.SessionStorage
	if ss == nil {
		return nil
	}
	var out []string
	for _, ref := range []*v1alpha1.SecretKeyReference{ss.UsernameRef, ss.PasswordRef, ss.UserHashKeyRef} {
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
