// Package v1alpha1 holds the tollgate.dev/v1alpha1 API: the MCPServer custom resource, the
// rate-limit types it shares with the proxy, and ProxyConfig, the proxy's component config.
//
// +kubebuilder:object:generate=true
// +groupName=tollgate.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "tollgate.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the custom resources of this package with a runtime.Scheme.
	// Plain apimachinery, so that importing the API pulls in no controller-runtime.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the custom resources of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &MCPServer{}, &MCPServerList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
