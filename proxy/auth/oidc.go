package auth

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// DiscoveryRetryPause is how long after a failed discovery requests fail fast (503) before
// the next request tries again, so an unreachable issuer is not hammered by every request.
const DiscoveryRetryPause = 2 * time.Second

// signingAlgs are the algorithms a token may be signed with: every asymmetric algorithm
// go-oidc supports, never none nor HMAC (whose key would be the public key). Tokens are
// access tokens, not ID tokens, so the issuer's id_token_signing_alg_values_supported is not
// consulted; the key that verifies must still come from the issuer's JWKS.
var signingAlgs = []string{
	oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.PS256, oidc.PS384, oidc.PS512, oidc.EdDSA,
}

// joseAlgs are signingAlgs for go-jose.
var joseAlgs = func() []jose.SignatureAlgorithm {
	a := make([]jose.SignatureAlgorithm, len(signingAlgs))
	for i, s := range signingAlgs {
		a[i] = jose.SignatureAlgorithm(s)
	}
	return a
}()

// oidcAuth verifies bearer JWTs with go-oidc.
type oidcAuth struct {
	issuer, audience, claim string
	base                    *url.URL // nil: from the request
	now                     func() time.Time
	timeout                 time.Duration
	ctx                     context.Context // carries the HTTP client; never cancelled
	client                  *http.Client

	jwksRefresh time.Duration            // see options.jwksRefresh
	verifier    atomic.Pointer[verifier] // set once discovery succeeded, or at once with jwksURL
	discovery   throttled[*verifier]
	cache       *tokenCache // nil: off
}

// verifier is go-oidc's verifier and the key set it verifies with.
type verifier struct {
	*oidc.IDTokenVerifier
	keys *remoteKeys
}

func newOIDC(ctx context.Context, cfg v1alpha1.OIDCConfig, base *url.URL, o options) (*oidcAuth, error) {
	claim := cfg.UserClaim
	if claim == "" {
		claim = v1alpha1.DefaultUserClaim
	}
	a := &oidcAuth{
		issuer:   cfg.Issuer,
		audience: cfg.Audience,
		claim:    claim,
		base:     base,
		now:      o.now,
		timeout:  o.timeout,
		ctx:      oidc.ClientContext(ctx, o.client),
		client:   o.client,
	}
	a.jwksRefresh = cmp.Or(o.jwksRefresh, JWKSRefreshInterval)
	if o.cacheEntries > 0 {
		a.cache = newTokenCache(o.cacheEntries, o.cacheBytes)
	}
	a.discovery = throttled[*verifier]{what: "OIDC discovery", interval: DiscoveryRetryPause, now: a.now, fetch: a.discover}
	if cfg.JWKSURL != "" {
		a.verifier.Store(a.newVerifier(cfg.JWKSURL))
	}
	return a, nil
}

func (a *oidcAuth) Required() bool { return true }

func (a *oidcAuth) IdentityHeaders() []string { return []string{"Authorization"} }

func (a *oidcAuth) Challenge(r *http.Request) http.Header { return a.challenge(r, "", "") }

// Authenticate verifies the request's bearer token and returns its user claim as the user id,
// with the token's claims as the identity's attributes (tiers match on them). A token
// verified before, whose identity the token cache holds and the verifier would accept now,
// is not verified again (tokencache.go).
func (a *oidcAuth) Authenticate(r *http.Request) (Identity, error) {
	tok, perr := a.bearerCredential(r)
	if perr != nil {
		return Identity{}, perr
	}
	if v := a.verifier.Load(); v != nil {
		v.keys.refreshIfStale() // also for tokens the cache answers: a withdrawn key must drop them
	}
	var sum [sha256.Size]byte
	cacheable := a.cache != nil && len(tok) <= MaxCachedTokenBytes
	if cacheable {
		if v := a.verifier.Load(); v != nil { // none yet: nothing can be cached either
			sum = tokenSum(tok)
			if id, ok := a.cache.get(sum, a.now(), v.keys.current()); ok {
				return id, nil
			}
		}
	}
	if perr := a.checkB64Token(r, tok); perr != nil {
		return Identity{}, perr
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	v, err := a.getVerifier(ctx)
	if err != nil {
		return Identity{}, &Error{Status: http.StatusServiceUnavailable, Message: "identity provider unavailable", cause: err}
	}
	var trace verifyTrace
	idt, err := v.Verify(context.WithValue(ctx, traceKey{}, &trace), tok)
	switch {
	case trace.fetchErr != nil:
		return Identity{}, &Error{Status: http.StatusServiceUnavailable, Message: "identity provider unavailable", cause: trace.fetchErr}
	case err != nil:
		return Identity{}, a.invalid(r, classify(err), err)
	}
	var claims map[string]json.RawMessage
	if err := idt.Claims(&claims); err != nil {
		return Identity{}, a.invalid(r, "malformed token", err)
	}
	raw, ok := claims[a.claim]
	if !ok || string(raw) == "null" {
		return Identity{}, a.invalid(r, fmt.Sprintf("token has no %q claim", a.claim), nil)
	}
	var user string
	if err := json.Unmarshal(raw, &user); err != nil {
		return Identity{}, a.invalid(r, fmt.Sprintf("token claim %q is not a string", a.claim), nil)
	}
	if user == "" {
		return Identity{}, a.invalid(r, fmt.Sprintf("token claim %q is empty", a.claim), nil)
	}
	if msg := checkUserID(user); msg != "" {
		return Identity{}, a.invalid(r, fmt.Sprintf("token claim %q %s", a.claim, msg), nil)
	}
	id := Identity{User: user, Attributes: ratelimit.Attributes{Claims: claims}}
	if cacheable {
		// Only here, after every check passed: a token the verifier refused never enters.
		if w, ok := validity(idt); ok {
			if sum == ([sha256.Size]byte{}) {
				sum = tokenSum(tok)
			}
			a.cache.add(sum, id, w, trace.set, trace.key, len(tok))
		}
	}
	return id, nil
}

// invalid is the RFC 6750 invalid_token refusal.
func (a *oidcAuth) invalid(r *http.Request, msg string, cause error) *Error {
	return &Error{Status: http.StatusUnauthorized, Message: msg, Header: a.challenge(r, "invalid_token", msg), cause: cause}
}

// bearerToken returns the request's bearer token (RFC 6750 section 2.1: one Authorization
// header, scheme Bearer in any case, one token of b64token characters) or the refusal.
// No Authorization header, an empty one, or another scheme (Basic) is a missing token: 401
// with a challenge and no error code (RFC 6750 section 3.1). A repeated header or a bearer
// credential that is empty or not a b64token is invalid_request, 400.
func (a *oidcAuth) bearerToken(r *http.Request) (string, *Error) {
	tok, perr := a.bearerCredential(r)
	if perr == nil {
		perr = a.checkB64Token(r, tok)
	}
	return tok, perr
}

// bearerCredential is bearerToken without the b64token test, which a token found in the
// token cache needs not pass again (it passed before it was verified and cached): a fifth of
// a cache hit's time went to it.
func (a *oidcAuth) bearerCredential(r *http.Request) (string, *Error) {
	vals := r.Header.Values("Authorization")
	if len(vals) > 1 {
		return "", a.malformed(r, "more than one Authorization header")
	}
	if len(vals) == 0 || vals[0] == "" {
		return "", &Error{Status: http.StatusUnauthorized, Message: "missing bearer token", Header: a.challenge(r, "", "")}
	}
	scheme, rest, _ := strings.Cut(vals[0], " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", &Error{Status: http.StatusUnauthorized, Message: "unsupported authorization scheme", Header: a.challenge(r, "", "")}
	}
	tok := strings.Trim(rest, " ")
	if tok == "" {
		return "", a.malformed(r, "empty bearer token")
	}
	return tok, nil
}

// checkB64Token refuses a bearer credential that is not a b64token.
func (a *oidcAuth) checkB64Token(r *http.Request, tok string) *Error {
	if !isB64Token(tok) {
		return a.malformed(r, "malformed bearer token")
	}
	return nil
}

func (a *oidcAuth) malformed(r *http.Request, msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Message: msg, Header: a.challenge(r, "invalid_request", msg)}
}

// isB64Token reports whether s is an RFC 6750 b64token:
// 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func isB64Token(s string) bool {
	s = strings.TrimRight(s, "=")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !b64TokenChar[s[i]] {
			return false
		}
	}
	return true
}

// b64TokenChar holds the characters of a b64token before its padding: a table, as every
// request's token (about a kilobyte) goes through it.
var b64TokenChar = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			continue
		}
		t[c] = true
	}
	return t
}()

// challenge is the WWW-Authenticate header for r: the RFC 9728 resource_metadata URL, and
// the RFC 6750 error code and description when given.
func (a *oidcAuth) challenge(r *http.Request, code, desc string) http.Header {
	v := `Bearer resource_metadata="` + headerSafeURL(metadataURL(a.base, r)) + `"`
	if code != "" {
		v += `, error="` + code + `"`
		if desc != "" {
			v += `, error_description="` + headerSafeText(desc) + `"`
		}
	}
	return http.Header{"Www-Authenticate": {v}}
}

// getVerifier returns the verifier, discovering the issuer first if no discovery has
// succeeded yet. One discovery runs at a time, with its own timeout, and every request waiting
// for it shares its result; a request gives up when ctx ends. After a failure, requests fail
// at once with that failure until DiscoveryRetryPause has passed; then the next one retries.
func (a *oidcAuth) getVerifier(ctx context.Context) (*verifier, error) {
	if v := a.verifier.Load(); v != nil {
		return v, nil
	}
	v, err := a.discovery.get(ctx)
	if err != nil {
		return nil, err
	}
	a.verifier.CompareAndSwap(nil, v) // the first discovery to succeed is kept
	return a.verifier.Load(), nil
}

// discover fetches the issuer's discovery document (which go-oidc checks names the issuer)
// and returns a verifier on its jwks_uri.
func (a *oidcAuth) discover() (*verifier, error) {
	ctx, cancel := context.WithTimeout(a.ctx, a.timeout)
	defer cancel()
	p, err := oidc.NewProvider(ctx, a.issuer)
	if err != nil {
		return nil, fmt.Errorf("discovering OIDC issuer %s: %w", a.issuer, err)
	}
	var doc struct {
		JWKSURL string `json:"jwks_uri"`
	}
	if err := p.Claims(&doc); err != nil {
		return nil, fmt.Errorf("discovering OIDC issuer %s: %w", a.issuer, err)
	}
	if doc.JWKSURL == "" {
		return nil, fmt.Errorf("discovering OIDC issuer %s: the discovery document has no jwks_uri", a.issuer)
	}
	return a.newVerifier(doc.JWKSURL), nil
}

func (a *oidcAuth) newVerifier(jwksURL string) *verifier {
	// Keys are fetched in the background, each fetch bounded by the timeout; a request waits
	// for them no longer than its own deadline.
	keys := newRemoteKeys(jwksURL, a.client, a.timeout, a.now)
	keys.refreshAfter = a.jwksRefresh
	if a.cache != nil {
		keys.onRefresh = a.cache.keysRefreshed
	}
	return &verifier{
		IDTokenVerifier: oidc.NewVerifier(a.issuer, keys, &oidc.Config{
			ClientID:             a.audience, // aud must contain it
			SupportedSigningAlgs: signingAlgs,
			Now:                  a.now,
		}),
		keys: keys,
	}
}

// classify turns a go-oidc verification error into a fixed message for the client.
func classify(err error) string {
	var expired *oidc.TokenExpiredError
	if errors.As(err, &expired) {
		return "token expired"
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "unexpected signature algorithm"):
		return "token signing algorithm not allowed"
	case strings.Contains(s, "malformed jwt"), strings.Contains(s, "failed to unmarshal claims"):
		return "malformed token"
	case strings.Contains(s, "failed to verify signature"):
		return "token signature invalid"
	case strings.Contains(s, "issued by a different provider"):
		return "token issuer mismatch"
	case strings.Contains(s, "expected audience"):
		return "token audience mismatch"
	case strings.Contains(s, "nbf"):
		return "token not yet valid"
	}
	return "invalid token"
}
