package ratelimit

import (
	"encoding/json"
	"net/http"
	"slices"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// Attributes are what tiers match on: the caller's authenticated identity beyond the user id.
// The proxy fills them from the verified OIDC token or the trusted gateway's request; the
// simulator from a scenario user's claims and headers. One resolution serves both.
type Attributes struct {
	// Claims are the verified token's claims (OIDC), raw. nil without OIDC.
	Claims map[string]json.RawMessage
	// Header holds the request's headers when a trusted gateway set them (header
	// authentication). nil otherwise.
	Header http.Header
}

// ResolveTier returns the name of the first tier whose match the attributes satisfy, or "".
// A claim matches when it is a string, or an array holding a string, that is one of the
// tier's values; other JSON types never match. A header matches when it is sent exactly once
// with one of the values (a repeated header never matches: the proxy refuses it first, see
// TierHeaders). Values compare exactly.
func ResolveTier(tiers []v1alpha1.RateLimitTier, a Attributes) string {
	for i := range tiers {
		t := &tiers[i]
		switch m := t.Match; {
		case m.Claim != "":
			if a.Claims != nil && claimMatches(a.Claims[m.Claim], m.Values) {
				return t.Name
			}
		case m.Header != "":
			if vs := a.Header.Values(m.Header); len(vs) == 1 && slices.Contains(m.Values, vs[0]) {
				return t.Name
			}
		}
	}
	return ""
}

// claimMatches reports whether a claim, a JSON string or array of strings, holds one of values.
func claimMatches(raw json.RawMessage, values []string) bool {
	if len(raw) == 0 {
		return false
	}
	switch raw[0] {
	case '"':
		var s string
		return json.Unmarshal(raw, &s) == nil && slices.Contains(values, s)
	case '[':
		var arr []json.RawMessage
		if json.Unmarshal(raw, &arr) != nil {
			return false
		}
		for _, e := range arr {
			var s string
			if len(e) > 0 && e[0] == '"' && json.Unmarshal(e, &s) == nil && slices.Contains(values, s) {
				return true
			}
		}
	}
	return false
}

// TierHeaders are the request headers tiers match on (canonical form). The proxy treats them
// as it treats the identity header: sent more than once is a 400, and a Connection header
// naming one is refused, so that the tier charged is the tier the upstream's gateway meant.
func TierHeaders(tiers []v1alpha1.RateLimitTier) []string {
	var hs []string
	for _, t := range tiers {
		if h := t.Match.Header; h != "" {
			if c := http.CanonicalHeaderKey(h); !slices.Contains(hs, c) {
				hs = append(hs, c)
			}
		}
	}
	return hs
}
