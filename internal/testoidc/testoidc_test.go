package testoidc

import (
	"context"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/google/go-cmp/cmp"
)

// TestIssuer verifies the issuer's tokens with go-oidc through discovery, and the ways tokens
// can be made wrong.
func TestIssuer(t *testing.T) {
	iss := Start(t)
	ctx := oidc.ClientContext(context.Background(), iss.Client())
	p, err := oidc.NewProvider(ctx, iss.URL())
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	v := p.VerifierContext(ctx, &oidc.Config{ClientID: Audience})

	tok, err := v.Verify(ctx, iss.Token(t, map[string]any{"email": "a@example.com", "iat": nil}))
	if err != nil {
		t.Fatalf("Verify(Token): %v", err)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]any{"iss": iss.URL(), "aud": Audience, "sub": Subject, "email": "a@example.com"}, claims,
		cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == `["exp"]` }, cmp.Ignore())); diff != "" {
		t.Errorf("claims: overrides apply and nil removes: -want, +got:\n%s", diff)
	}
	if until := time.Until(tok.Expiry); until < 59*time.Minute || until > time.Hour {
		t.Errorf("exp: want an hour from now, got %v", until)
	}
	if _, err := v.Verify(ctx, iss.UnknownKeyToken(t, nil)); err == nil {
		t.Errorf("Verify(UnknownKeyToken): want an error")
	}
	if _, err := v.Verify(ctx, iss.UnsignedToken(t, nil)); err == nil {
		t.Errorf("Verify(UnsignedToken): want an error")
	}
	if diff := cmp.Diff(Hits{Discovery: 1, JWKS: 2}, iss.Hits()); diff != "" {
		t.Errorf("hits (discovery once; keys, then again for the unknown key): -want, +got:\n%s", diff)
	}

	iss.SetDown(true)
	if _, err := oidc.NewProvider(ctx, iss.URL()); err == nil {
		t.Errorf("discovery while down: want an error")
	}
	iss.SetDown(false)
	if _, err := oidc.NewProvider(ctx, iss.URL()); err != nil {
		t.Errorf("discovery when back: %v", err)
	}
}
