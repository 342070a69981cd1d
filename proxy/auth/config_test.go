package auth

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

func TestNewValidation(t *testing.T) {
	oidc := func(f func(*v1alpha1.OIDCConfig)) v1alpha1.ProxyAuth {
		c := &v1alpha1.OIDCConfig{Issuer: "https://issuer.example.com", Audience: "tollgate"}
		f(c)
		return v1alpha1.ProxyAuth{OIDC: c}
	}
	type args struct {
		cfg  v1alpha1.ProxyAuth
		opts []Option
	}
	cases := map[string]struct {
		reason string
		args   args
		// The error's text, "" for none. Text, not sentinels: these are the messages an
		// operator reads when the proxy refuses its config, each naming the field to fix.
		want string
	}{
		"None": {
			reason: "One way of authentication must be chosen.",
			args:   args{cfg: v1alpha1.ProxyAuth{}},
			want:   "auth: set exactly one of header, oidc and anonymous (0 set)",
		},
		"Two": {
			reason: "Only one way of authentication may be chosen.",
			args: args{cfg: v1alpha1.ProxyAuth{
				Header:    &v1alpha1.HeaderAuth{Name: "X-Forwarded-User"},
				Anonymous: &v1alpha1.AnonymousAuth{},
			}},
			want: "auth: set exactly one of header, oidc and anonymous (2 set)",
		},
		"Anonymous": {
			reason: "Anonymous needs nothing.",
			args:   args{cfg: v1alpha1.ProxyAuth{Anonymous: &v1alpha1.AnonymousAuth{}}},
		},
		"Header": {
			reason: "A header name and CIDRs of either family are valid.",
			args: args{cfg: v1alpha1.ProxyAuth{Header: &v1alpha1.HeaderAuth{
				Name: "X-Forwarded-User", TrustedProxies: []string{"10.0.0.0/8", "10.1.2.3/32", "fd00::/8"},
			}}},
		},
		"HeaderNameEmpty": {
			reason: "The header must be named.",
			args:   args{cfg: v1alpha1.ProxyAuth{Header: &v1alpha1.HeaderAuth{}}},
			want:   "auth.header.name: must not be empty",
		},
		"HeaderNameInvalid": {
			reason: "The header name must be an HTTP token.",
			args:   args{cfg: v1alpha1.ProxyAuth{Header: &v1alpha1.HeaderAuth{Name: "X-User: x"}}},
			want:   `auth.header.name "X-User: x": not a valid HTTP header name`,
		},
		"HeaderNameHost": {
			reason: "Host never reaches the header map.",
			args:   args{cfg: v1alpha1.ProxyAuth{Header: &v1alpha1.HeaderAuth{Name: "host"}}},
			want:   "auth.header.name: Host is not a header the proxy can read an identity from",
		},
		"BadCIDRs": {
			reason: "Every bad CIDR is reported with its index; a bare address gets a hint.",
			args: args{cfg: v1alpha1.ProxyAuth{Header: &v1alpha1.HeaderAuth{
				Name: "X-Forwarded-User", TrustedProxies: []string{"10.0.0.0/8", "10.0.0.0/33", "not-a-cidr", "10.0.0.1", "::1"},
			}}},
			want: strings.Join([]string{
				`auth.header.trustedProxies[1] "10.0.0.0/33": not a CIDR`,
				`auth.header.trustedProxies[2] "not-a-cidr": not a CIDR`,
				`auth.header.trustedProxies[3] "10.0.0.1": not a CIDR (write 10.0.0.1/32 for one address)`,
				`auth.header.trustedProxies[4] "::1": not a CIDR (write ::1/128 for one address)`,
			}, "\n"),
		},
		"OIDC": {
			reason: "Issuer and audience are enough; jwksURL and userClaim are optional.",
			args:   args{cfg: oidc(func(*v1alpha1.OIDCConfig) {})},
		},
		"OIDCEmpty": {
			reason: "Issuer and audience are both required, and both are reported.",
			args:   args{cfg: v1alpha1.ProxyAuth{OIDC: &v1alpha1.OIDCConfig{}}},
			want:   "auth.oidc.issuer: must be set\nauth.oidc.audience: must be set",
		},
		"OIDCIssuerNotHTTP": {
			reason: "The issuer must be an http(s) URL.",
			args:   args{cfg: oidc(func(c *v1alpha1.OIDCConfig) { c.Issuer = "issuer.example.com" })},
			want:   `auth.oidc.issuer "issuer.example.com": must be an absolute http or https URL`,
		},
		"OIDCJWKSURLNotHTTP": {
			reason: "jwksURL, when set, must be an http(s) URL.",
			args:   args{cfg: oidc(func(c *v1alpha1.OIDCConfig) { c.JWKSURL = "file:///etc/keys" })},
			want:   `auth.oidc.jwksURL "file:///etc/keys": must be an absolute http or https URL`,
		},
		"OIDCUserClaimTooLong": {
			reason: "userClaim is bounded as the CRD bounds it.",
			args:   args{cfg: oidc(func(c *v1alpha1.OIDCConfig) { c.UserClaim = strings.Repeat("c", 257) })},
			want:   "auth.oidc.userClaim: longer than 256 bytes",
		},
		"PublicURLInvalid": {
			reason: "WithPublicURL must be an absolute http(s) URL.",
			args:   args{cfg: oidc(func(*v1alpha1.OIDCConfig) {}), opts: []Option{WithPublicURL("mcp.example.com/mcp")}},
			want:   `public URL "mcp.example.com/mcp": must be an absolute http or https URL with no user info, query or fragment`,
		},
		"PublicURLQuery": {
			reason: "WithPublicURL is a base URL: no query.",
			args:   args{cfg: oidc(func(*v1alpha1.OIDCConfig) {}), opts: []Option{WithPublicURL("https://mcp.example.com/?a=b")}},
			want:   `public URL "https://mcp.example.com/?a=b": must be an absolute http or https URL with no user info, query or fragment`,
		},
		"TimeoutNotPositive": {
			reason: "WithTimeout must be positive.",
			args:   args{cfg: oidc(func(*v1alpha1.OIDCConfig) {}), opts: []Option{WithTimeout(0)}},
			want:   "timeout must be positive, got 0s",
		},
		"TimeoutPositive": {
			reason: "A positive timeout is accepted.",
			args:   args{cfg: oidc(func(*v1alpha1.OIDCConfig) {}), opts: []Option{WithTimeout(time.Second)}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := New(context.Background(), tc.args.cfg, tc.args.opts...)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\nNew(...): -want error, +got error:\n%s", tc.reason, diff)
			}
		})
	}
}
