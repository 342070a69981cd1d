package ratelimit

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

func TestResolveTier(t *testing.T) {
	tiers := []v1alpha1.RateLimitTier{
		{Name: "pro", Match: v1alpha1.TierMatch{Claim: "plan", Values: []string{"pro", "enterprise"}}},
		{Name: "gold", Match: v1alpha1.TierMatch{Header: "x-plan", Values: []string{"gold"}}},
		{Name: "staff", Match: v1alpha1.TierMatch{Claim: "groups", Values: []string{"sre"}}},
	}
	claims := func(kv ...string) map[string]json.RawMessage {
		m := map[string]json.RawMessage{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = json.RawMessage(kv[i+1])
		}
		return m
	}
	cases := map[string]struct {
		reason string
		a      Attributes
		want   string
	}{
		"StringClaim":      {"A string claim equal to a value matches.", Attributes{Claims: claims("plan", `"enterprise"`)}, "pro"},
		"ArrayClaim":       {"An array claim matches when one element is a value.", Attributes{Claims: claims("groups", `["dev","sre"]`)}, "staff"},
		"FirstMatchWins":   {"pro is listed before staff.", Attributes{Claims: claims("groups", `["sre"]`, "plan", `"pro"`)}, "pro"},
		"OtherValue":       {"A value not listed does not match.", Attributes{Claims: claims("plan", `"free"`)}, ""},
		"CaseSensitive":    {"Values compare exactly.", Attributes{Claims: claims("plan", `"PRO"`)}, ""},
		"NumberClaim":      {"A number never matches, even one that prints as a value.", Attributes{Claims: claims("plan", `1`)}, ""},
		"NullClaim":        {"null is no claim.", Attributes{Claims: claims("plan", `null`)}, ""},
		"ObjectClaim":      {"An object never matches.", Attributes{Claims: claims("plan", `{"pro":true}`)}, ""},
		"NestedArray":      {"Only strings in the array count.", Attributes{Claims: claims("groups", `[["sre"],1,null]`)}, ""},
		"MissingClaim":     {"No claim, no tier.", Attributes{Claims: claims("sub", `"x"`)}, ""},
		"Header":           {"A header sent once with a value matches, whatever the case of its name.", Attributes{Header: http.Header{"X-Plan": {"gold"}}}, "gold"},
		"HeaderTwice":      {"A repeated header never matches (the proxy refuses it first).", Attributes{Header: http.Header{"X-Plan": {"gold", "gold"}}}, ""},
		"HeaderOtherValue": {"Exact values only.", Attributes{Header: http.Header{"X-Plan": {"gold, silver"}}}, ""},
		"ClaimsNotHeaders": {"A claim tier is not chosen by a header of the same name.", Attributes{Header: http.Header{"Plan": {"pro"}}}, ""},
		"HeadersNotClaims": {"A header tier is not chosen by a claim of the same name.", Attributes{Claims: claims("x-plan", `"gold"`)}, ""},
		"NoAttributes":     {"An anonymous caller has no tier.", Attributes{}, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, ResolveTier(tiers, tc.a)); diff != "" {
				t.Errorf("%s\nResolveTier: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
	if diff := cmp.Diff([]string{"X-Plan"}, TierHeaders(tiers)); diff != "" {
		t.Errorf("TierHeaders: -want +got:\n%s", diff)
	}
}

// TestTierKeysApart: a tier's buckets live under keys of their own, never a default key nor
// another tier's, whatever the names.
func TestTierKeysApart(t *testing.T) {
	ks, err := newKeyspace("tollgate", "ns", "srv", nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{}
	add := func(what, k string) {
		if other, ok := keys[k]; ok {
			t.Errorf("%s and %s share key %q", what, other, k)
		}
		keys[k] = what
	}
	add("user", ks.userPrefix())
	add("user-tool", ks.userEntryPrefix(kindTool, "user"))
	for _, tier := range []string{"pro", "user", "tier", "p"} {
		tk := ks.tier(tier)
		add("tier "+tier+" user", tk.userPrefix())
		add("tier "+tier+" user-tool", tk.userEntryPrefix(kindTool, "user"))
		add("tier "+tier+" user-tool pro", tk.userEntryPrefix(kindTool, "pro"))
	}
}
