// Package controller reconciles MCPServers: resolve references → validate → render → apply →
// status, one small function each, one status write per reconcile and only when it changed.
package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/operator/render"
)

// Recorder records events (controller-runtime's recorder.EventRecorder satisfies it).
type Recorder interface {
	Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...interface{})
}

// Reconciler reconciles MCPServers.
type Reconciler struct {
	client.Client
	Scheme     *runtime.Scheme
	Recorder   Recorder
	ProxyImage string
}

// Index names for the watches of referenced objects.
const (
	indexConfigMaps = "tollgate.dev/configmaps"
	indexSecrets    = "tollgate.dev/secrets"
)

// SetupWithManager registers the controller: it owns the managed objects (its ConfigMap by
// metadata) and watches the metadata of the ConfigMaps and Secrets that MCPServers reference,
// re-reconciling exactly the servers that use a changed one. No ConfigMap's data and no
// Secret is ever cached (manager.ClientOptions): the reconciler reads the ConfigMaps it needs.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &v1alpha1.MCPServer{}, indexConfigMaps, func(o client.Object) []string {
		return configMapNames(o.(*v1alpha1.MCPServer))
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &v1alpha1.MCPServer{}, indexSecrets, func(o client.Object) []string {
		return secretNames(o.(*v1alpha1.MCPServer))
	}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.MCPServer{}).
		Owns(&corev1.ConfigMap{}, builder.OnlyMetadata).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&networkingv1.NetworkPolicy{}).
		WatchesMetadata(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(r.users(indexConfigMaps))).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.users(indexSecrets))).
		Complete(r)
}

// users maps a ConfigMap or Secret to the MCPServers that reference it.
func (r *Reconciler) users(index string) handler.MapFunc {
	return func(ctx context.Context, o client.Object) []reconcile.Request {
		var list v1alpha1.MCPServerList
		if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace()), client.MatchingFields{index: o.GetName()}); err != nil {
			return nil
		}
		reqs := make([]reconcile.Request, len(list.Items))
		for i, s := range list.Items {
			reqs[i] = reconcile.Request{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: s.Name}}
		}
		return reqs
	}
}

// Reconcile brings one MCPServer's managed objects and status in line with its spec.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var s v1alpha1.MCPServer
	if err := r.Get(ctx, req.NamespacedName, &s); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := s.Status.DeepCopy()
	var o observation
	var written *appsv1.Deployment // the Deployment as the server answered this reconcile's write
	in, refErr, err := r.resolve(ctx, &s)
	if err != nil {
		return ctrl.Result{}, err
	}
	o.refsErr = refErr
	o.rateLimit = validateRateLimiting(&s)

	if refErr == nil {
		// Defense in depth: with perUser buckets but no authentication, reconciliation goes on
		// and the proxy enforces the other limits; the condition says what is not in force.
		in.Server = enforceable(&s)
		objs, err := render.Render(in)
		var invalid *render.InvalidError
		switch {
		case errors.As(err, &invalid):
			o.invalid = invalid // nothing is applied, not even the key: the proxy would refuse it
		case err != nil:
			return ctrl.Result{}, err
		default:
			objs, o.refsErr, err = r.withUserHashKey(ctx, &s, in, objs)
			switch {
			case err != nil:
				o.applyErr = err // the key's Secret could not be made: nothing else is applied
			case o.refsErr == nil:
				written, o.applyErr = r.apply(ctx, &s, objs)
			}
		}
	}
	var d appsv1.Deployment
	if err := r.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: render.Name(s.Name)}, &d); err == nil {
		o.deployment = &d
	} else if !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	// The cache may not have seen the write this reconcile just made: it would show the old
	// spec's status (observed, available) and make Ready true for a spec the proxy does not run
	// yet, until the watch event arrives. The server's answer to the write is newer.
	if written != nil && (o.deployment == nil || written.Generation > o.deployment.Generation) {
		o.deployment = written
	}

	setRateLimitConfigValidCondition(&s, o)
	setReferencesResolvedCondition(&s, o)
	setProxyAvailableCondition(&s, o)
	setReadyCondition(&s, o)
	setStalledCondition(&s, o)
	s.Status.ObservedGeneration = s.Generation
	s.Status.URL = render.URL(&s)
	if err := r.writeStatus(ctx, &s, before); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, o.applyErr
}

// withUserHashKey makes sure the user-hash key exists (userHashKey) and renders the objects
// again with its Secret's UID on the pod template. A UID other than the live pods' is a key
// replaced under running replicas (the operator's Secret deleted and created again with a new
// key, or userHashKeyRef pointed at another Secret): the pods roll onto it together, and the
// warning says what that costs.
func (r *Reconciler) withUserHashKey(ctx context.Context, s *v1alpha1.MCPServer, in render.Inputs, objs render.Objects) (render.Objects, *refError, error) {
	if s.Spec.SessionStorage == nil {
		return objs, nil, nil
	}
	uid, keyErr, err := r.userHashKey(ctx, s)
	if err != nil || keyErr != nil {
		return objs, keyErr, err
	}
	if uid != "" {
		in.UserHashKeyUID = uid
	}
	if objs, err = render.Render(in); err != nil {
		return objs, nil, err // rendered once already: only the annotation differs
	}
	var live appsv1.Deployment
	err = r.Get(ctx, client.ObjectKeyFromObject(objs.Deployment), &live)
	if err != nil && !apierrors.IsNotFound(err) {
		return objs, nil, fmt.Errorf("reading Deployment %s: %w", objs.Deployment.Name, err)
	}
	if old := live.Spec.Template.Annotations[render.UserHashKeyAnnotation]; old != "" && old != in.UserHashKeyUID && r.Recorder != nil {
		r.Recorder.Eventf(s, nil, corev1.EventTypeWarning, "UserHashKeyReplaced", "RollProxy",
			"The user-hash key's Secret %s is not the one the proxy runs with: the proxy pods roll onto it; if the key differs, user pseudonyms change and every user's per-user buckets start full once",
			render.UserHashKeyRef(s).Name)
	}
	return objs, nil, nil
}

// validateRateLimiting is the RateLimitConfigValid check.
func validateRateLimiting(s *v1alpha1.MCPServer) rateLimitVerdict {
	rl := s.Spec.RateLimiting
	switch {
	case rl == nil:
		return rateLimitVerdict{metav1.ConditionTrue, v1alpha1.ReasonRateLimitNotApplicable, "spec.rateLimiting is not set: nothing to validate"}
	case rl.HasPerUser() && s.Spec.OIDCConfig == nil && s.Spec.OIDCConfigRef == nil && s.Spec.ExternalAuthConfigRef == nil:
		return rateLimitVerdict{metav1.ConditionFalse, v1alpha1.ReasonPerUserRequiresAuth,
			"perUser rate limits need authentication (oidcConfig, oidcConfigRef or externalAuthConfigRef): they are NOT enforced; the other limits are. Admission rules normally refuse this; the check is defense in depth"}
	}
	if err := rl.TierAuthError(hasOIDC(s), s.Spec.ExternalAuthConfigRef != nil); err != nil {
		return rateLimitVerdict{metav1.ConditionFalse, v1alpha1.ReasonTierMatchRequiresAuth,
			"spec.rateLimiting: " + err.Error() + ": such tiers are NOT enforced (their users get the default buckets); the other limits are. Admission rules normally refuse this; the check is defense in depth"}
	}
	if err := rl.Validate(); err != nil {
		return rateLimitVerdict{metav1.ConditionFalse, v1alpha1.ReasonInvalidRateLimitConfig, "spec.rateLimiting: " + err.Error()}
	}
	return rateLimitVerdict{metav1.ConditionTrue, v1alpha1.ReasonRateLimitConfigValid, "the rate-limit configuration is valid"}
}

// enforceable drops perUser buckets that cannot apply for lack of an identity, so that the
// proxy (which refuses such a config) runs with the limits that can: an entry left with no
// bucket is dropped, and rateLimiting itself when nothing is left (the proxy then limits
// nothing; Ready and Stalled say why).
func enforceable(s *v1alpha1.MCPServer) *v1alpha1.MCPServer {
	switch validateRateLimiting(s).reason {
	case v1alpha1.ReasonTierMatchRequiresAuth:
		// A tier the authentication cannot match is dropped; the others and every bucket stay.
		c := s.DeepCopy()
		oidc, header := hasOIDC(s), s.Spec.ExternalAuthConfigRef != nil
		c.Spec.RateLimiting.Tiers = slices.DeleteFunc(c.Spec.RateLimiting.Tiers, func(t v1alpha1.RateLimitTier) bool {
			return (t.Match.Claim != "" && !oidc) || (t.Match.Header != "" && !header)
		})
		return c
	case v1alpha1.ReasonPerUserRequiresAuth:
	default:
		return s
	}
	c := s.DeepCopy()
	rl := c.Spec.RateLimiting
	rl.PerUser = nil
	rl.Tiers = nil
	rl.Tools = slices.DeleteFunc(rl.Tools, func(t v1alpha1.ToolRateLimitConfig) bool { return t.Shared == nil })
	rl.Prompts = slices.DeleteFunc(rl.Prompts, func(p v1alpha1.PromptRateLimitConfig) bool { return p.Shared == nil })
	rl.Resources = slices.DeleteFunc(rl.Resources, func(r v1alpha1.ResourceRateLimitConfig) bool { return r.Shared == nil })
	for i := range rl.Tools {
		rl.Tools[i].PerUser = nil
	}
	for i := range rl.Prompts {
		rl.Prompts[i].PerUser = nil
	}
	for i := range rl.Resources {
		rl.Resources[i].PerUser = nil
	}
	if rl.Shared == nil && len(rl.Tools) == 0 && len(rl.Prompts) == 0 && len(rl.Resources) == 0 {
		c.Spec.RateLimiting = nil
	}
	return c
}

// hasOIDC reports whether the server authenticates with OIDC (claims can be read).
func hasOIDC(s *v1alpha1.MCPServer) bool {
	return s.Spec.OIDCConfig != nil || s.Spec.OIDCConfigRef != nil
}

// apply server-side-applies each object that differs from the live one. An object whose
// desired fields all equal the live ones is not written at all: at steady state the operator
// sends no mutating request (a no-op patch is still a request). The operator owns the whole
// data of its ConfigMap: a key someone else added is removed (server-side apply would keep it,
// and the comparison would never match again). One event says what a reconcile changed.
// It returns the Deployment as the server answered its write, or nil when it wrote none.
func (r *Reconciler) apply(ctx context.Context, s *v1alpha1.MCPServer, objs render.Objects) (*appsv1.Deployment, error) {
	desired := []client.Object{objs.ConfigMap, objs.Deployment, objs.Service}
	if objs.NetworkPolicy != nil {
		desired = append(desired, objs.NetworkPolicy)
	} else if err := r.deleteIfOwned(ctx, s, &networkingv1.NetworkPolicy{}); err != nil {
		return nil, err
	}
	var written *appsv1.Deployment
	var created, updated []string
	defer func() { r.recordApplied(s, created, updated) }()
	for _, obj := range desired {
		if err := controllerutil.SetControllerReference(s, obj, r.Scheme); err != nil {
			return written, err
		}
		kind := obj.GetObjectKind().GroupVersionKind().Kind
		live := obj.DeepCopyObject().(client.Object)
		err := r.Get(ctx, client.ObjectKeyFromObject(obj), live)
		switch {
		case err == nil && upToDate(obj, live):
			continue
		case err != nil && !apierrors.IsNotFound(err):
			return written, fmt.Errorf("reading %s %s: %w", kind, obj.GetName(), err)
		case err == nil:
			if fixed, ferr := r.replaceForeign(ctx, obj, live); ferr != nil {
				return written, fmt.Errorf("replacing %s %s: %w", kind, obj.GetName(), ferr)
			} else if fixed {
				if d, ok := live.(*appsv1.Deployment); ok {
					written = d // Update wrote the server's answer into live
				}
				if upToDate(obj, live) {
					updated = append(updated, kind)
					continue
				}
			}
		}
		u, cerr := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if cerr != nil {
			return written, cerr
		}
		unstructured.RemoveNestedField(u, "status")
		unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
		answer := &unstructured.Unstructured{Object: u} // Apply decodes the server's answer into it
		if err := r.Apply(ctx, client.ApplyConfigurationFromUnstructured(answer),
			client.FieldOwner(render.FieldManager), client.ForceOwnership); err != nil {
			return written, fmt.Errorf("applying %s %s: %w", kind, obj.GetName(), err)
		}
		if _, ok := obj.(*appsv1.Deployment); ok {
			var d appsv1.Deployment
			if cerr := runtime.DefaultUnstructuredConverter.FromUnstructured(answer.Object, &d); cerr == nil {
				written = &d
			}
		}
		if apierrors.IsNotFound(err) {
			created = append(created, kind)
		} else {
			updated = append(updated, kind)
		}
	}
	return written, nil
}

// replaceForeign replaces, with a full update, what server-side apply cannot take away from
// other field managers: keys someone added to the operator's ConfigMap, and a Deployment
// strategy of another type (a defaulted rollingUpdate would stay beside Recreate and make
// the apply invalid). live is updated in place. It reports whether it wrote.
func (r *Reconciler) replaceForeign(ctx context.Context, desired, live client.Object) (bool, error) {
	switch d := desired.(type) {
	case *corev1.ConfigMap:
		l := live.(*corev1.ConfigMap)
		foreign := len(l.BinaryData) > 0
		for k := range l.Data {
			if _, ok := d.Data[k]; !ok {
				foreign = true
			}
		}
		if !foreign {
			return false, nil
		}
		l.Data, l.BinaryData = d.Data, nil
	case *appsv1.Deployment:
		l := live.(*appsv1.Deployment)
		if l.Spec.Strategy.Type == d.Spec.Strategy.Type {
			return false, nil
		}
		l.Spec.Strategy = d.Spec.Strategy
	default:
		return false, nil
	}
	return true, r.Update(ctx, live, client.FieldOwner(render.FieldManager))
}

// recordApplied records one event per reconcile that changed something, naming the kinds:
// events are keyed by reason (Created, Updated), and a burst of reconciles must not turn into
// a burst of events.
func (r *Reconciler) recordApplied(s *v1alpha1.MCPServer, created, updated []string) {
	if r.Recorder == nil {
		return
	}
	if len(created) > 0 {
		r.Recorder.Eventf(s, nil, corev1.EventTypeNormal, "Created", "Apply", "Created %s", strings.Join(created, ", "))
	}
	if len(updated) > 0 {
		r.Recorder.Eventf(s, nil, corev1.EventTypeNormal, "Updated", "Apply", "Updated %s", strings.Join(updated, ", "))
	}
}

// upToDate reports whether every field the operator sets has its value in the live object:
// fields the API server defaulted (unset in desired) are not compared.
func upToDate(desired, live client.Object) bool {
	if !equality.Semantic.DeepDerivative(desired.GetLabels(), live.GetLabels()) ||
		!equality.Semantic.DeepDerivative(desired.GetOwnerReferences(), live.GetOwnerReferences()) {
		return false
	}
	switch d := desired.(type) {
	case *corev1.ConfigMap:
		return equality.Semantic.DeepEqual(d.Data, live.(*corev1.ConfigMap).Data)
	case *appsv1.Deployment:
		return equality.Semantic.DeepDerivative(d.Spec, live.(*appsv1.Deployment).Spec)
	case *corev1.Service:
		return equality.Semantic.DeepDerivative(d.Spec, live.(*corev1.Service).Spec)
	case *networkingv1.NetworkPolicy:
		return equality.Semantic.DeepDerivative(d.Spec, live.(*networkingv1.NetworkPolicy).Spec)
	}
	return false
}

func (r *Reconciler) deleteIfOwned(ctx context.Context, s *v1alpha1.MCPServer, obj client.Object) error {
	err := r.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: render.Name(s.Name)}, obj)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !metav1.IsControlledBy(obj, s) {
		return nil
	}
	return client.IgnoreNotFound(r.Delete(ctx, obj))
}

// writeStatus writes the status once, and only when it changed. A merge patch, not an
// update: the operator is the status's only writer, and an update would fail on an ordinary
// concurrent edit of the spec (a conflict on resourceVersion) only to be retried.
func (r *Reconciler) writeStatus(ctx context.Context, s *v1alpha1.MCPServer, before *v1alpha1.MCPServerStatus) error {
	if equality.Semantic.DeepEqual(before, &s.Status) {
		return nil
	}
	for _, c := range s.Status.Conditions {
		if old := findCondition(before.Conditions, c.Type); r.Recorder != nil && (old == nil || old.Status != c.Status) && c.Type == v1alpha1.ConditionReady {
			typ := corev1.EventTypeNormal
			if c.Status != metav1.ConditionTrue {
				typ = corev1.EventTypeWarning
			}
			r.Recorder.Eventf(s, nil, typ, c.Reason, "Reconcile", "Ready=%s: %s", c.Status, c.Message)
		}
	}
	orig := s.DeepCopy()
	orig.Status = *before
	return r.Status().Patch(ctx, s, client.MergeFrom(orig))
}

func findCondition(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}
