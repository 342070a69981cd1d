package controller

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// observation is what one reconcile learned; the condition functions turn it into status.
type observation struct {
	refsErr    *refError          // a referenced ConfigMap or Secret is missing or lacks a key
	rateLimit  rateLimitVerdict   // the defense-in-depth check of spec.rateLimiting
	applyErr   error              // writing a managed object failed
	invalid    error              // the spec cannot be rendered into what the proxy and API server accept
	deployment *appsv1.Deployment // the live proxy Deployment, when there is one
}

// rateLimitVerdict is the RateLimitConfigValid condition's input.
type rateLimitVerdict struct {
	status  metav1.ConditionStatus
	reason  string
	message string
}

// setRateLimitConfigValidCondition: True/RateLimitConfigValid, True/RateLimitNotApplicable
// (nothing configured is trivially valid, not an error), or False with the reason.
func setRateLimitConfigValidCondition(s *v1alpha1.MCPServer, o observation) {
	set(s, v1alpha1.ConditionRateLimitConfigValid, o.rateLimit.status, o.rateLimit.reason, o.rateLimit.message)
}

func setReferencesResolvedCondition(s *v1alpha1.MCPServer, o observation) {
	if o.refsErr != nil {
		set(s, v1alpha1.ConditionReferencesResolved, metav1.ConditionFalse, o.refsErr.reason, o.refsErr.Error())
		return
	}
	set(s, v1alpha1.ConditionReferencesResolved, metav1.ConditionTrue, v1alpha1.ReasonReferencesResolved, "every referenced ConfigMap and Secret exists")
}

// proxyAvailability reads a Deployment's status the way kubectl rollout status does.
func proxyAvailability(d *appsv1.Deployment) (metav1.ConditionStatus, string, string) {
	if d == nil {
		return metav1.ConditionFalse, v1alpha1.ReasonProxyUnavailable, "the proxy Deployment does not exist yet"
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	st := d.Status
	switch {
	case want == 0:
		return metav1.ConditionFalse, v1alpha1.ReasonProxyScaledToZero, "spec.proxy.replicas is 0: no proxy runs, so nothing is enforced and the MCP server is not reachable through the proxy"
	case st.ObservedGeneration < d.Generation:
		return metav1.ConditionFalse, v1alpha1.ReasonProxyProgressing, "the proxy Deployment's new spec is not observed yet"
	case st.UpdatedReplicas < want:
		return metav1.ConditionFalse, v1alpha1.ReasonProxyProgressing, fmt.Sprintf("%d of %d proxy replicas updated", st.UpdatedReplicas, want)
	case st.AvailableReplicas < want:
		return metav1.ConditionFalse, v1alpha1.ReasonProxyUnavailable, fmt.Sprintf("%d of %d proxy replicas available", st.AvailableReplicas, want)
	}
	return metav1.ConditionTrue, v1alpha1.ReasonProxyAvailable, fmt.Sprintf("%d of %d proxy replicas available", st.AvailableReplicas, want)
}

func setProxyAvailableCondition(s *v1alpha1.MCPServer, o observation) {
	status, reason, msg := proxyAvailability(o.deployment)
	set(s, v1alpha1.ConditionProxyAvailable, status, reason, msg)
}

// setReadyCondition summarises: Ready only when everything declared is in force. The first
// cause found is the reason; kstatus reads Ready with observedGeneration.
func setReadyCondition(s *v1alpha1.MCPServer, o observation) {
	status, reason, msg := metav1.ConditionTrue, v1alpha1.ReasonReady, "the proxy is available and enforcing the declared limits"
	switch proxy, proxyReason, proxyMsg := proxyAvailability(o.deployment); {
	case o.rateLimit.status == metav1.ConditionFalse:
		status, reason, msg = metav1.ConditionFalse, o.rateLimit.reason, o.rateLimit.message
	case o.refsErr != nil:
		status, reason, msg = metav1.ConditionFalse, o.refsErr.reason, o.refsErr.Error()
	case o.invalid != nil:
		status, reason, msg = metav1.ConditionFalse, v1alpha1.ReasonInvalidConfig, o.invalid.Error()
	case o.applyErr != nil:
		status, reason, msg = metav1.ConditionFalse, v1alpha1.ReasonApplyFailed, o.applyErr.Error()
	case proxy != metav1.ConditionTrue:
		status, reason, msg = metav1.ConditionFalse, proxyReason, proxyMsg
	}
	set(s, v1alpha1.ConditionReady, status, reason, msg)
}

// setStalledCondition: True for what will not fix itself (an invalid rate-limit config, a
// spec that renders into what the proxy or the API server would refuse),
// so that kstatus reports Failed rather than InProgress forever.
func setStalledCondition(s *v1alpha1.MCPServer, o observation) {
	if o.rateLimit.status == metav1.ConditionFalse {
		set(s, v1alpha1.ConditionStalled, metav1.ConditionTrue, o.rateLimit.reason, o.rateLimit.message)
		return
	}
	if o.invalid != nil {
		set(s, v1alpha1.ConditionStalled, metav1.ConditionTrue, v1alpha1.ReasonInvalidConfig, o.invalid.Error())
		return
	}
	set(s, v1alpha1.ConditionStalled, metav1.ConditionFalse, v1alpha1.ReasonNotStalled, "reconciliation is making progress")
}

// set stamps a condition with the generation it describes. meta.SetStatusCondition keeps
// lastTransitionTime when the status does not change.
func set(s *v1alpha1.MCPServer, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&s.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: s.Generation,
	})
}
