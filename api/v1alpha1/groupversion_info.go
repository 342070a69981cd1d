// Package v1alpha1 holds the tollgate.dev/v1alpha1 API: the MCPServer custom resource, the
// rate-limit types it shares with the proxy, and ProxyConfig, the proxy's component config.
//
// +kubebuilder:object:generate=true
// +groupName=tollgate.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "tollgate.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the custom resources of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the custom resources of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
