package main

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tollgate-dev/tollgate/hack/internal/loopback"
)

// benchAudience is the audience of the benchmark's tokens and of the OIDC proxies.
const benchAudience = "tollgate-bench"

// issuer is a minimal OIDC issuer on a loopback port: a discovery document, a JWKS with one
// RSA key, and RS256 tokens (what most issuers sign with, and internal/testoidc too).
type issuer struct {
	url string
	key *rsa.PrivateKey
}

func startIssuer() (*issuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	iss := &issuer{key: key}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{
			"issuer": iss.url, "jwks_uri": iss.url + "/jwks",
			"authorization_endpoint": iss.url + "/authorize", "token_endpoint": iss.url + "/token",
			"response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "bench-1", Algorithm: string(jose.RS256), Use: "sig"}}})
	})
	addr, err := loopback.Serve(mux)
	if err != nil {
		return nil, err
	}
	iss.url = "http://" + addr
	return iss, nil
}

// tokens returns a token for each of users user-0 … user-(n-1), valid for a day, with the
// claims of a typical access token (a plan and groups beside the standard ones).
func (iss *issuer) tokens(n int) (map[string]string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: iss.key, KeyID: "bench-1"}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make(map[string]string, n)
	for i := range n {
		user := "user-" + strconv.Itoa(i)
		payload, err := json.Marshal(map[string]any{
			"iss": iss.url, "aud": benchAudience, "sub": user, "iat": now.Unix(), "exp": now.Add(24 * time.Hour).Unix(),
			"email": user + "@example.com", "plan": "pro", "groups": []string{"engineering", "mcp-users"},
		})
		if err != nil {
			return nil, err
		}
		jws, err := signer.Sign(payload)
		if err != nil {
			return nil, fmt.Errorf("signing: %w", err)
		}
		if out[user], err = jws.CompactSerialize(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
