package v1alpha1

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tollgate-dev/tollgate/internal/cleanpath"
)

// The proxy's config is defaulted and validated here, in one place: the proxy loads its file
// with it, and the operator checks every ProxyConfig it renders with it before applying it
// (and `operator validate` and `plan` likewise), so that the operator never deploys a config
// the proxy would refuse.

// DefaultMaxBodyBytes bounds a POST body on the MCP endpoint when the config does not.
const DefaultMaxBodyBytes = 1 << 20

// DefaultUserClaim is the claim that names the user when oidc.userClaim is unset.
const DefaultUserClaim = "sub"

// Default fills in the defaults of a ProxyConfig.
func (c *ProxyConfig) Default() {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.Upstream.ResponseHeaderTimeout == nil {
		c.Upstream.ResponseHeaderTimeout = &metav1.Duration{Duration: DefaultResponseHeaderTimeout}
	}
	for i := range c.Upstream.PassthroughPaths {
		if c.Upstream.PassthroughPaths[i].PathType == "" {
			c.Upstream.PassthroughPaths[i].PathType = PathTypeExact
		}
	}
	if c.SessionStorage != nil && c.SessionStorage.KeyPrefix == "" {
		c.SessionStorage.KeyPrefix = DefaultKeyPrefix
	}
	if rl := c.RateLimiting; rl != nil {
		if rl.FailurePolicy == "" {
			rl.FailurePolicy = FailurePolicyAllow
		}
		if rl.Mode == "" {
			rl.Mode = RateLimitModeEnforce
		}
	}
	if c.HTTP == nil {
		c.HTTP = &HTTPServerConfig{}
	}
	h := c.HTTP
	for _, d := range []struct {
		p   **metav1.Duration
		def time.Duration
	}{
		{&h.ReadHeaderTimeout, DefaultReadHeaderTimeout},
		{&h.BodyReadTimeout, DefaultBodyReadTimeout},
		{&h.IdleTimeout, DefaultIdleTimeout},
	} {
		if *d.p == nil {
			*d.p = &metav1.Duration{Duration: d.def}
		}
	}
	for _, n := range []struct {
		p   *int32
		def int32
	}{
		{&h.MaxConnections, DefaultMaxConnections}, {&h.MaxStreams, DefaultMaxStreams}, {&h.MaxStreamsPerCaller, DefaultMaxStreamsPerCaller},
	} {
		if *n.p == 0 {
			*n.p = n.def
		}
	}
	if h.MaxBufferedBytes == 0 {
		h.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if h.MaxBufferedBytesPerCaller == 0 {
		h.MaxBufferedBytesPerCaller = DefaultMaxBufferedPerCaller
	}
}

// Validate checks a ProxyConfig (defaulted or not); every error names its field, and all are
// returned, joined. It runs proxyConfigChecks, a chain of small checks (as cert-manager's
// policies are): a new rule is a new link, not a longer function.
func (c *ProxyConfig) Validate() error {
	var errs []error
	for _, check := range proxyConfigChecks {
		if err := check(c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

var proxyConfigChecks = []func(*ProxyConfig) error{
	func(c *ProxyConfig) error {
		if c.APIVersion != GroupVersion.String() || c.Kind != ProxyConfigKind {
			return fmt.Errorf("apiVersion/kind: must be %s %s, got %q %q", GroupVersion, ProxyConfigKind, c.APIVersion, c.Kind)
		}
		return nil
	},
	func(c *ProxyConfig) error {
		var errs []error
		if msgs := validation.IsDNS1123Label(c.Server.Namespace); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("server.namespace: %q: %s", c.Server.Namespace, msgs[0]))
		}
		if msgs := validation.IsDNS1123Subdomain(c.Server.Name); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("server.name: %q: %s", c.Server.Name, msgs[0]))
		}
		return errors.Join(errs...)
	},
	func(c *ProxyConfig) error {
		u, err := url.Parse(c.Upstream.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("upstream.url: %q: must be an absolute http or https URL", c.Upstream.URL)
		}
		if _, err := cleanpath.Clean(u.EscapedPath()); err != nil {
			return fmt.Errorf("upstream.url: %q: its path: %w", c.Upstream.URL, err)
		}
		return nil
	},
	func(c *ProxyConfig) error { return c.Upstream.Validate("upstream") },
	func(c *ProxyConfig) error {
		if c.PublicURL == "" {
			return nil
		}
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
			return fmt.Errorf("publicURL: %q: must be an absolute http or https URL with no user info, query or fragment", c.PublicURL)
		}
		return nil
	},
	func(c *ProxyConfig) error { return c.HTTP.Validate("http") },
	func(c *ProxyConfig) error { return c.Auth.Validate() },
	func(c *ProxyConfig) error {
		if err := c.RateLimiting.Validate(); err != nil {
			return fmt.Errorf("rateLimiting: %w", err)
		}
		return nil
	},
	func(c *ProxyConfig) error {
		if c.Auth.Anonymous != nil && c.RateLimiting.HasPerUser() {
			return errors.New("rateLimiting: perUser buckets need a caller identity: auth.anonymous has none (use auth.header or auth.oidc)")
		}
		if err := c.RateLimiting.TierAuthError(c.Auth.OIDC != nil, c.Auth.Header != nil); err != nil {
			return fmt.Errorf("rateLimiting: %w", err)
		}
		return nil
	},
	func(c *ProxyConfig) error {
		if c.SessionStorage == nil {
			return nil
		}
		return c.SessionStorage.Validate()
	},
	func(c *ProxyConfig) error {
		if c.Replicas < 0 {
			return fmt.Errorf("replicas: %d: must be at least 1", c.Replicas)
		}
		return nil
	},
	func(c *ProxyConfig) error {
		if r := c.Responses; r != nil && r.RejectStatus != 0 && r.RejectStatus != 429 && r.RejectStatus != 200 {
			return fmt.Errorf("responses.rejectStatus: %d: must be 429 or 200", r.RejectStatus)
		}
		return c.Responses.validateToolRejection("responses")
	},
	func(c *ProxyConfig) error {
		perCaller := int64(DefaultMaxBufferedPerCaller)
		if c.HTTP != nil && c.HTTP.MaxBufferedBytesPerCaller > 0 {
			perCaller = c.HTTP.MaxBufferedBytesPerCaller
		}
		switch {
		case c.MaxBodyBytes < 0:
			return errors.New("maxBodyBytes: must be at least 1")
		case c.MaxBodyBytes > perCaller:
			return fmt.Errorf("maxBodyBytes: %d: must be at most http.maxBufferedBytesPerCaller (%d), or no body of that size could be read", c.MaxBodyBytes, perCaller)
		}
		return nil
	},
}

// Validate checks the proxy's authentication config: exactly one way, a header name the proxy
// can read an identity from, CIDRs, and absolute issuer and JWKS URLs. Errors name the field.
// Each way is checked by its own small function (a new way is a new one).
func (a *ProxyAuth) Validate() error {
	n := 0
	for _, set := range []bool{a.Header != nil, a.OIDC != nil, a.Anonymous != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("auth: set exactly one of header, oidc and anonymous (%d set)", n)
	}
	return errors.Join(a.Header.validate(), a.OIDC.validateProxy())
}

// validate checks header authentication (nil: not configured): a header name the proxy can
// read an identity from, and CIDRs.
func (h *HeaderAuth) validate() error {
	if h == nil {
		return nil
	}
	var errs []error
	switch {
	case h.Name == "":
		errs = append(errs, errors.New("auth.header.name: must not be empty"))
	case !validHeaderName(h.Name):
		errs = append(errs, fmt.Errorf("auth.header.name %q: not a valid HTTP header name", h.Name))
	case strings.EqualFold(h.Name, "Host"):
		errs = append(errs, errors.New("auth.header.name: Host is not a header the proxy can read an identity from"))
	}
	for i, s := range h.TrustedProxies {
		if _, err := netip.ParsePrefix(s); err != nil {
			hint := ""
			if addr, aerr := netip.ParseAddr(s); aerr == nil {
				hint = fmt.Sprintf(" (write %s/%d for one address)", s, addr.BitLen())
			}
			errs = append(errs, fmt.Errorf("auth.header.trustedProxies[%d] %q: not a CIDR%s", i, s, hint))
		}
	}
	return errors.Join(errs...)
}

// validateProxy checks the OIDC block of a ProxyConfig (nil: not configured): absolute
// issuer and JWKS URLs, an audience, bounded lengths. Errors name the field under auth.oidc.
func (o *OIDCConfig) validateProxy() error {
	if o == nil {
		return nil
	}
	errs := []error{checkOIDCURL("issuer", o.Issuer, true), checkOIDCURL("jwksURL", o.JWKSURL, false)}
	switch {
	case o.Audience == "":
		errs = append(errs, errors.New("auth.oidc.audience: must be set"))
	case len(o.Audience) > 1024:
		errs = append(errs, errors.New("auth.oidc.audience: longer than 1024 bytes"))
	}
	if len(o.UserClaim) > 256 {
		errs = append(errs, errors.New("auth.oidc.userClaim: longer than 256 bytes"))
	}
	return errors.Join(errs...)
}

// checkOIDCURL checks the URL s of auth.oidc.<field>: an absolute http(s) URL of at most
// 2048 bytes; "" only when not required.
func checkOIDCURL(field, s string, required bool) error {
	switch {
	case s == "" && required:
		return fmt.Errorf("auth.oidc.%s: must be set", field)
	case s == "":
		return nil
	case len(s) > 2048:
		return fmt.Errorf("auth.oidc.%s: longer than 2048 bytes", field)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("auth.oidc.%s %q: must be an absolute http or https URL", field, s)
	}
	return nil
}

// validHeaderName reports whether s is an RFC 9110 field name (a token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// Validate checks the proxy's sessionStorage block, structurally (files are read by the
// store when it opens): the provider, the address shapes of standalone, Cluster and Sentinel,
// the database. Errors name the field; the first one found is returned.
func (s *ProxySessionStorage) Validate() error {
	switch s.Provider {
	case SessionStorageMemory:
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"address", s.Address != ""}, {"addresses", len(s.Addresses) > 0}, {"masterName", s.MasterName != ""},
			{"db", s.DB != 0}, {"usernameFile", s.UsernameFile != ""}, {"passwordFile", s.PasswordFile != ""}, {"tls", s.TLS != nil},
		} {
			if f.set {
				return fmt.Errorf("sessionStorage.%s: must be unset with provider memory", f.name)
			}
		}
		return nil
	case SessionStorageRedis:
	case "":
		return errors.New("sessionStorage.provider: required: redis or memory")
	default:
		return fmt.Errorf("sessionStorage.provider: %q is not supported: want redis or memory", s.Provider)
	}
	cluster := false
	switch {
	case s.Address != "" && len(s.Addresses) > 0:
		return errors.New("sessionStorage.address and sessionStorage.addresses: set only one " +
			"(address: a standalone Redis; addresses: Cluster nodes, or Sentinels with masterName)")
	case s.Address != "":
		if s.MasterName != "" {
			return errors.New("sessionStorage.masterName: needs addresses (the Sentinels), not address")
		}
		if err := ValidateAddress(s.Address); err != nil {
			return fmt.Errorf("sessionStorage.address: %w", err)
		}
	case len(s.Addresses) > 0:
		for i, a := range s.Addresses {
			if err := ValidateAddress(a); err != nil {
				return fmt.Errorf("sessionStorage.addresses[%d]: %w", i, err)
			}
		}
		cluster = s.MasterName == ""
	default:
		return errors.New("sessionStorage.address: provider redis needs address (standalone) or addresses (Cluster, or Sentinels with masterName)")
	}
	switch {
	case s.DB < 0:
		return fmt.Errorf("sessionStorage.db: %d is negative", s.DB)
	case s.DB != 0 && cluster:
		return fmt.Errorf("sessionStorage.db: %d, but Redis Cluster has only database 0", s.DB)
	}
	if s.Timeout != nil && s.Timeout.Duration <= 0 {
		return errors.New("sessionStorage.timeout: must be greater than 0")
	}
	return nil
}

// ValidateAddress accepts host:port with a host and a port from 1 to 65535: a Redis address
// in sessionStorage, or in the proxy's --redis URL.
func ValidateAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return fmt.Errorf("%q: %s", addr, ae.Err)
		}
		return fmt.Errorf("%q: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("%q: missing host", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", addr, port)
	}
	return nil
}

// validateToolRejection checks toolRejection; errors name the field under prefix.
func (r *ProxyResponses) validateToolRejection(prefix string) error {
	if r == nil {
		return nil
	}
	switch r.ToolRejection {
	case "", ToolRejectionError, ToolRejectionToolResult:
		return nil
	}
	return fmt.Errorf("%s.toolRejection %q: must be Error or ToolResult", prefix, r.ToolRejection)
}
