package auth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/testoidc"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// claimTiers match on a string claim (plan) and an array claim (groups); the first match wins.
var claimTiers = []v1alpha1.RateLimitTier{
	{Name: "sre", Match: v1alpha1.TierMatch{Claim: "groups", Values: []string{"sre"}}, Unlimited: true},
	{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan", Values: []string{"pro", "team"}}},
}

// TestOIDCTierAttributes: the claims of a verified token are the identity's attributes, and
// ratelimit.ResolveTier reads the tier from them: strings and arrays of strings match, other
// JSON types, a missing claim and null never do.
func TestOIDCTierAttributes(t *testing.T) {
	iss := testoidc.Start(t)
	a, err := New(context.Background(), oidcConfig(iss, ""), WithHTTPClient(iss.Client()))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	type want struct {
		user string
		tier string
	}
	cases := map[string]struct {
		reason string
		claims map[string]any
		want   want
	}{
		"String": {
			reason: "A string claim equal to one of the values selects the tier.",
			claims: map[string]any{"sub": "alice", "plan": "pro"},
			want:   want{user: "alice", tier: "pro"},
		},
		"StringOtherValue": {
			reason: "Any of the tier's values matches.",
			claims: map[string]any{"sub": "alice", "plan": "team"},
			want:   want{user: "alice", tier: "pro"},
		},
		"StringNoMatch": {
			reason: "A value no tier lists is no tier: the default buckets.",
			claims: map[string]any{"sub": "alice", "plan": "free"},
			want:   want{user: "alice"},
		},
		"CaseSensitive": {
			reason: "Values compare exactly.",
			claims: map[string]any{"sub": "alice", "plan": "Pro"},
			want:   want{user: "alice"},
		},
		"Array": {
			reason: "An array claim matches when one of its strings is a value.",
			claims: map[string]any{"sub": "bob", "groups": []any{"x", "sre"}},
			want:   want{user: "bob", tier: "sre"},
		},
		"ArrayFirstMatchWins": {
			reason: "Matching two tiers, the first listed wins.",
			claims: map[string]any{"sub": "bob", "groups": []any{"sre"}, "plan": "pro"},
			want:   want{user: "bob", tier: "sre"},
		},
		"ArrayOfOthers": {
			reason: "Non-string members of an array never match.",
			claims: map[string]any{"sub": "bob", "groups": []any{1, true, nil, map[string]any{"sre": true}, []any{"sre"}}},
			want:   want{user: "bob"},
		},
		"Number": {
			reason: "A number never matches, not even its digits.",
			claims: map[string]any{"sub": "carol", "plan": 7, "groups": 7},
			want:   want{user: "carol"},
		},
		"Object": {
			reason: "An object never matches.",
			claims: map[string]any{"sub": "carol", "plan": map[string]any{"pro": "pro"}},
			want:   want{user: "carol"},
		},
		"Missing": {
			reason: "A token without the claim is in no tier.",
			claims: map[string]any{"sub": "dave"},
			want:   want{user: "dave"},
		},
		"Null": {
			reason: "A null claim is in no tier.",
			claims: map[string]any{"sub": "erin", "plan": jsonNull{}},
			want:   want{user: "erin"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			id, err := a.Authenticate(request("Bearer " + iss.Token(t, tc.claims)))
			if err != nil {
				t.Fatalf("%s\nAuthenticate: %v", tc.reason, err)
			}
			got := want{user: id.User, tier: ratelimit.ResolveTier(claimTiers, id.Attributes)}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// jsonNull marshals as null: testoidc removes a claim whose value is nil.
type jsonNull struct{}

func (jsonNull) MarshalJSON() ([]byte, error) { return []byte("null"), nil }

// TestHeaderTierAttributes: with header authentication a tier header is believed exactly when
// the identity header beside it is: from a trusted peer, with an identity.
func TestHeaderTierAttributes(t *testing.T) {
	tiers := []v1alpha1.RateLimitTier{{Name: "gold", Match: v1alpha1.TierMatch{Header: "X-Plan", Values: []string{"gold"}}}}
	a, err := New(context.Background(), v1alpha1.ProxyAuth{Header: &v1alpha1.HeaderAuth{Name: "X-User", TrustedProxies: []string{"10.0.0.0/8"}}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	type want struct {
		user   string
		tier   string
		status int // of the *Error; 0 for none
	}
	cases := map[string]struct {
		reason string
		peer   string
		header http.Header
		want   want
	}{
		"Once": {
			reason: "A tier header sent once by the trusted gateway selects the tier.",
			peer:   "10.0.0.1:1", header: http.Header{"X-User": {"alice"}, "X-Plan": {"gold"}},
			want: want{user: "alice", tier: "gold"},
		},
		"Twice": {
			reason: "A repeated tier header never matches (the proxy refuses it with 400 before authentication).",
			peer:   "10.0.0.1:1", header: http.Header{"X-User": {"alice"}, "X-Plan": {"gold", "gold"}},
			want: want{user: "alice"},
		},
		"Absent": {
			reason: "Without the tier header the caller is in no tier.",
			peer:   "10.0.0.1:1", header: http.Header{"X-User": {"alice"}},
			want: want{user: "alice"},
		},
		"OtherValue": {
			reason: "A value the tier does not list is no tier.",
			peer:   "10.0.0.1:1", header: http.Header{"X-User": {"alice"}, "X-Plan": {"platinum"}},
			want: want{user: "alice"},
		},
		"WithoutIdentity": {
			reason: "A tier header without an identity is anonymous, in no tier (the proxy refuses a limited call then).",
			peer:   "10.0.0.1:1", header: http.Header{"X-Plan": {"gold"}},
			want: want{},
		},
		"UntrustedPeer": {
			reason: "From an untrusted peer the identity header is refused, and with it the tier header.",
			peer:   "192.0.2.1:1", header: http.Header{"X-User": {"alice"}, "X-Plan": {"gold"}},
			want: want{status: http.StatusUnauthorized},
		},
		"UntrustedPeerWithoutIdentity": {
			reason: "From an untrusted peer without an identity header the caller is anonymous: the tier header counts for nothing.",
			peer:   "192.0.2.1:1", header: http.Header{"X-Plan": {"gold"}},
			want: want{},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, mcpURL, nil)
			r.RemoteAddr = tc.peer
			r.Header = tc.header
			id, err := a.Authenticate(r)
			got := want{user: id.User, tier: ratelimit.ResolveTier(tiers, id.Attributes)}
			var e *Error
			if errors.As(err, &e) {
				got.status = e.Status
			} else if err != nil {
				t.Fatalf("%s\nAuthenticate: %v, want nil or an *Error", tc.reason, err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
}
