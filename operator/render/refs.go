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
