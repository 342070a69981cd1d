package auth

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"github.com/tollgate-dev/tollgate/internal/testoidc"
)

// BenchmarkAuthenticate verifies a valid RS256 token from internal/testoidc (warm JWKS)
// without the token cache and with it, in the same run:
//
//	go test ./proxy/auth -run '^$' -bench Authenticate -benchmem -count 3
//
// "cached, 10000 users" cycles through 10 000 tokens, as many as the cache holds: every
// lookup a hit, in a map that size.
func BenchmarkAuthenticate(b *testing.B) {
	iss := testoidc.Start(b)
	tok := iss.Token(b, map[string]any{"plan": "pro", "groups": []string{"a", "b"}})
	var many []string // signed once, for the sub-benchmark that needs them
	manyTokens := func() []string {
		if many == nil {
			for i := range DefaultTokenCacheEntries {
				many = append(many, iss.Token(b, map[string]any{"sub": "user-" + strconv.Itoa(i)}))
			}
		}
		return many
	}
	for _, bc := range []struct {
		name    string
		entries int
		tokens  func() []string
	}{
		{"uncached", 0, func() []string { return []string{tok} }},
		{"cached", DefaultTokenCacheEntries, func() []string { return []string{tok} }},
		{"cached, 10000 users", DefaultTokenCacheEntries, manyTokens},
	} {
		b.Run(bc.name, func(b *testing.B) {
			a, err := New(context.Background(), oidcConfig(iss, ""), WithHTTPClient(iss.Client()),
				WithTokenCache(bc.entries, DefaultTokenCacheBytes))
			if err != nil {
				b.Fatal(err)
			}
			toks := bc.tokens()
			reqs := make([]*http.Request, len(toks))
			for i, t := range toks {
				reqs[i] = request("Bearer " + t)
				if _, err := a.Authenticate(reqs[i]); err != nil { // warm: keys fetched, cache filled
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, err := a.Authenticate(reqs[i%len(reqs)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
