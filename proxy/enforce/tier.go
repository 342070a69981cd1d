package enforce

import (
	"net/http"
	"slices"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/auth"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// tier resolves the caller's rate-limit tier under these limits: ratelimit.ResolveTier over
// what authentication vouched for (the token's claims, or the trusted gateway's headers). It
// runs once per request, with the same Limits that decide the request, so the tier always
// names a tier of the limiter that decides. An anonymous caller has none.
func (l *Limits) tier(id auth.Identity) string {
	if id.User == "" || l.Config == nil || len(l.Config.Tiers) == 0 {
		return ""
	}
	return ratelimit.ResolveTier(l.Config.Tiers, id.Attributes)
}

// tierHeaders are the request headers the tiers of one config match on. They choose how a
// caller is limited, so they meet the identity header's rules: the upstream must receive the
// headers that chose the tier (no Connection header may name one, no look-alike may stand
// beside one), and one sent twice is refused rather than guessed at — by one reading the
// first value, by another (ResolveTier) none, which could be a better tier than the gateway
// meant.
type tierHeaders struct {
	exact  []string // canonical names
	folded []string // the same, as foldHeader sees them
}

func newTierHeaders(cfg *v1alpha1.RateLimitConfig) tierHeaders {
	if cfg == nil {
		return tierHeaders{}
	}
	t := tierHeaders{exact: ratelimit.TierHeaders(cfg.Tiers)}
	for _, name := range t.exact {
		t.folded = append(t.folded, foldHeader(name))
	}
	return t
}

// has reports whether name is a tier header or a look-alike of one ('_' for '-', any case).
func (t tierHeaders) has(name string) bool {
	return len(t.folded) > 0 && slices.Contains(t.folded, foldHeader(name))
}

// check returns the refusal of the request header name with values vals, or nil: a look-alike
// of a tier header, or a tier header sent more than once.
func (t tierHeaders) check(name string, vals []string) *refusal {
	if !t.has(name) {
		return nil
	}
	if !slices.Contains(t.exact, http.CanonicalHeaderKey(name)) {
		// X_Plan beside X-Plan: servers that map both to one variable (CGI, WSGI) would
		// read a tier the proxy did not charge.
		return &refusal{status: http.StatusBadRequest, reason: "header_lookalike", message: "Invalid Request",
			detail: "header " + truncate(name, 64) + " looks like a tier header"}
	}
	if len(vals) > 1 {
		return &refusal{status: http.StatusBadRequest, reason: "header_repeated", message: "Invalid Request",
			detail: "the tier header " + http.CanonicalHeaderKey(name) + " was sent more than once: the gateway must send it once"}
	}
	return nil
}
