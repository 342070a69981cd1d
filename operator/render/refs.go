package render

import (
	"errors"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// Keys of the referenced ConfigMaps.
var (
	// OIDCRequiredKeys must be in an oidcConfigRef ConfigMap (jwksURL and userClaim may be).
	OIDCRequiredKeys = []string{"issuer", "audience"}
	// ExternalAuthRequiredKeys must be in an externalAuthConfigRef ConfigMap.
	ExternalAuthRequiredKeys = []string{"userHeader"}
)

// OIDCFromData reads an oidcConfigRef ConfigMap: issuer, audience, jwksURL, userClaim
// (default sub).
func OIDCFromData(d map[string]string) *v1alpha1.OIDCConfig {
	c := &v1alpha1.OIDCConfig{
		Issuer: strings.TrimSpace(d["issuer"]), Audience: strings.TrimSpace(d["audience"]),
		JWKSURL: strings.TrimSpace(d["jwksURL"]), UserClaim: strings.TrimSpace(d["userClaim"]),
	}
	if c.UserClaim == "" {
		c.UserClaim = "sub"
	}
	return c
}

// ExternalAuthFromData reads an externalAuthConfigRef ConfigMap: userHeader, and optionally
// trustedProxies (comma-separated CIDRs), gatewayPodSelector and gatewayNamespaceSelector
// (label selectors, as kubectl -l takes them).
func ExternalAuthFromData(d map[string]string) (*ExternalAuth, error) {
	ea := &ExternalAuth{UserHeader: strings.TrimSpace(d["userHeader"])}
	for _, c := range strings.Split(d["trustedProxies"], ",") {
		if c = strings.TrimSpace(c); c != "" {
			ea.TrustedProxies = append(ea.TrustedProxies, c)
		}
	}
	var errs []error
	for _, key := range []string{"gatewayPodSelector", "gatewayNamespaceSelector"} {
		v := strings.TrimSpace(d[key])
		if v == "" {
			continue
		}
		sel, err := metav1.ParseToLabelSelector(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("key %s: %w", key, err))
			continue
		}
		if key == "gatewayPodSelector" {
			ea.GatewayPodSelector = sel
		} else {
			ea.GatewayNamespaceSelector = sel
		}
	}
	return ea, errors.Join(errs...)
}

// RefError is a reference that does not resolve: Reason is the ReferencesResolved condition's
// reason (v1alpha1.ReasonConfigMapNotFound, ReasonKeyNotFound).
type RefError struct {
	Reason  string
	Name    string // the ConfigMap
	Message string
}

func (e *RefError) Error() string { return e.Message }

// ConfigMapLookup returns a ConfigMap's data by name, in the MCPServer's namespace; found
// false when there is none. An error is a failure to look (retried), not an absence.
type ConfigMapLookup func(name string) (data map[string]string, found bool, err error)

// ResolveInputs builds the render inputs of an MCPServer, reading the ConfigMaps it
// references (oidcConfigRef, externalAuthConfigRef) through lookup: the reconciler looks them
// up on the API server, `operator validate` and `plan` among the manifests. A reference that
// does not resolve is a *RefError; Secrets are not looked at (only the proxy's pods mount
// them).
func ResolveInputs(s *v1alpha1.MCPServer, proxyImage string, lookup ConfigMapLookup) (Inputs, error) {
	in := Inputs{Server: s, ProxyImage: proxyImage, OIDC: s.Spec.OIDCConfig.DeepCopy()}
	get := func(name string, required []string) (map[string]string, error) {
		data, found, err := lookup(name)
		if err != nil {
			return nil, fmt.Errorf("reading ConfigMap %q: %w", name, err)
		}
		if !found {
			return nil, &RefError{v1alpha1.ReasonConfigMapNotFound, name, fmt.Sprintf("ConfigMap %q not found in namespace %q", name, s.Namespace)}
		}
		for _, k := range required {
			if strings.TrimSpace(data[k]) == "" {
				return nil, &RefError{v1alpha1.ReasonKeyNotFound, name, fmt.Sprintf("ConfigMap %q has no key %q", name, k)}
			}
		}
		return data, nil
	}
	if ref := s.Spec.OIDCConfigRef; ref != nil {
		data, err := get(ref.Name, OIDCRequiredKeys)
		if err != nil {
			return in, err
		}
		in.OIDC = OIDCFromData(data)
	}
	if ref := s.Spec.ExternalAuthConfigRef; ref != nil {
		data, err := get(ref.Name, ExternalAuthRequiredKeys)
		if err != nil {
			return in, err
		}
		ea, err := ExternalAuthFromData(data)
		if err != nil {
			return in, &RefError{v1alpha1.ReasonKeyNotFound, ref.Name, fmt.Sprintf("ConfigMap %q: %v", ref.Name, err)}
		}
		in.ExternalAuth = ea
	}
	return in, nil
}
