// Package auth identifies the caller of each request the proxy serves, for per-user rate
// limits. It implements the three ways of v1alpha1.ProxyAuth: a trusted identity header set by
// an authenticating gateway, OIDC bearer JWTs verified against the issuer's JWKS, and
// anonymous.
//
// Nothing in this package logs, and no error it returns contains a token.
package auth

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// Identity is the caller of one request, as authentication established it.
type Identity struct {
	// User is the user id; "" for an anonymous caller.
	User string
	// Attributes are what rate-limit tiers match on (ratelimit.ResolveTier), and only what
	// authentication vouches for: the verified token's claims (OIDC), or the request's
	// headers when the trusted gateway set the identity header (header). Empty when User is
	// "": an anonymous caller has no tier. The package does not know which claims or headers
	// tiers read; the header is the request's own, valid while the request is served. The
	// claims of a token answered from the token cache are shared by every request that
	// carries the token: read-only.
	Attributes ratelimit.Attributes
}

// Authenticator identifies the caller of one HTTP request. Implementations are safe for
// concurrent use.
type Authenticator interface {
	// Authenticate returns the caller's identity, with User "" for an anonymous caller
	// (allowed only where no per-user limit applies — the proxy decides that), or an *Error.
	Authenticate(r *http.Request) (Identity, error)
	// Required reports whether every request must carry an identity (OIDC: yes — a missing
	// token is a 401 with a challenge so MCP clients start OAuth; header and anonymous: no).
	Required() bool
	// IdentityHeaders are the request headers the identity is read from (canonical form):
	// the proxy refuses a request that would keep one of them from the upstream (a
	// Connection header naming it), so that the upstream sees the identity that was charged.
	IdentityHeaders() []string
	// Challenge returns the 401 response headers to send when an identity is required but
	// missing (WWW-Authenticate), for request r. The header is new on every call: the caller
	// may modify it. It is empty for header and anonymous authentication, which have no
	// challenge to offer.
	Challenge(r *http.Request) http.Header
}

// Error is a request the proxy must refuse because of its identity.
//
// Status is 401 for a missing, invalid or untrusted identity, 400 for a malformed request
// (an Authorization header that is not one bearer token, an identity header value that no
// user id can be), or 503 when the OIDC issuer's discovery document or keys cannot be fetched
// (the token may be fine; telling the client it is invalid would make it start OAuth again).
// Header holds the response headers to send: WWW-Authenticate for OIDC 401s and 400s, nil
// otherwise.
//
// Message is short, fixed text that is safe to send to the client; Error returns it.
// Unwrap returns the underlying cause (a verification or fetch error), for logs.
type Error struct {
	Status  int
	Message string
	Header  http.Header

	cause error
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the cause of the refusal, or nil.
func (e *Error) Unwrap() error { return e.cause }

// DefaultTimeout bounds each fetch of the OIDC discovery document and of the JWKS, and the
// wait of one request for them.
const DefaultTimeout = 10 * time.Second

// Option tunes New.
type Option func(*options)

type options struct {
	publicURL string
	client    *http.Client
	now       func() time.Time
	timeout   time.Duration

	cacheEntries, cacheBytes int
	// jwksRefresh is the age at which keys are fetched again (0: JWKSRefreshInterval;
	// negative: never, for tests that model every fetch themselves).
	jwksRefresh time.Duration
}

// WithPublicURL sets the public base URL of the proxy, such as https://mcp.example.com or
// https://example.com/tools when an ingress strips the /tools prefix. OIDC challenges then
// name https://<host>/.well-known/oauth-protected-resource<base path><request path> and the
// request's Host, TLS state and X-Forwarded-Proto are not consulted. Unset, the base URL comes
// from the request: https when it arrived over TLS or carries X-Forwarded-Proto: https, else
// http, and its Host. New fails unless the URL is absolute http(s) with no query or fragment.
func WithPublicURL(u string) Option { return func(o *options) { o.publicURL = u } }

// WithHTTPClient sets the client that fetches the OIDC discovery document and JWKS (tests
// pass their issuer's client). Default: a client with DefaultTimeout.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.client = c } }

// WithClock sets the time source for token expiry (go-oidc's Config.Now) and for the pause
// between discovery retries. It is called from several goroutines. Default: time.Now.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithTokenCache bounds the OIDC verified-token cache (tokencache.go) to entries identities
// and about bytes of memory in all; entries <= 0 turns it off (every token is verified on
// every request). Default: DefaultTokenCacheEntries and DefaultTokenCacheBytes. Header and
// anonymous authentication ignore it.
func WithTokenCache(entries, bytes int) Option {
	return func(o *options) { o.cacheEntries, o.cacheBytes = entries, bytes }
}

// WithTimeout replaces DefaultTimeout.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// New returns the Authenticator for cfg. It validates cfg (exactly one of header, oidc and
// anonymous; a valid header name and CIDRs; an http(s) issuer, an audience) and returns every
// problem found, each naming its field, joined. It does no network I/O: OIDC discovery happens
// on first use, so an issuer that is briefly unreachable does not stop the proxy starting.
// ctx is kept for its values only (as go-oidc does); its cancellation is not watched, and
// every fetch is bounded by the timeout instead.
func New(ctx context.Context, cfg v1alpha1.ProxyAuth, opts ...Option) (Authenticator, error) {
	o := options{now: time.Now, timeout: DefaultTimeout, cacheEntries: DefaultTokenCacheEntries, cacheBytes: DefaultTokenCacheBytes}
	for _, opt := range opts {
		opt(&o)
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.timeout <= 0 {
		return nil, fmt.Errorf("timeout must be positive, got %v", o.timeout)
	}
	if o.cacheEntries > 0 && o.cacheBytes <= 0 {
		return nil, fmt.Errorf("token cache: bytes must be positive, got %d", o.cacheBytes)
	}
	if o.client == nil {
		o.client = &http.Client{Timeout: o.timeout}
	}
	if err := cfg.Validate(); err != nil { // the proxy's and the operator's one validation
		return nil, err
	}
	switch {
	case cfg.Anonymous != nil:
		return anonymous{}, nil
	case cfg.Header != nil:
		return newHeader(*cfg.Header), nil
	default:
		base, err := parsePublicURL(o.publicURL)
		if err != nil {
			return nil, err
		}
		return newOIDC(context.WithoutCancel(ctx), *cfg.OIDC, base, o)
	}
}

// parsePublicURL validates the WithPublicURL value; "" gives nil (derive from requests).
func parsePublicURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("public URL %q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("public URL %q: must be an absolute http or https URL with no user info, query or fragment", s)
	}
	return u, nil
}

// anonymous identifies nobody.
type anonymous struct{}

func (anonymous) Authenticate(*http.Request) (Identity, error) { return Identity{}, nil }
func (anonymous) Required() bool                               { return false }
func (anonymous) Challenge(*http.Request) http.Header          { return http.Header{} }
func (anonymous) IdentityHeaders() []string                    { return nil }
