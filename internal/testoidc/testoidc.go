// Package testoidc runs a minimal OIDC issuer on a loopback port for tests: a discovery
// document, a JWKS with one RSA key, and tokens signed with it (or with a key it does not
// publish, or with none).
package testoidc

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Defaults of the claims Token signs.
const (
	Audience = "tollgate-test"
	Subject  = "user-1"
	KeyID    = "testoidc-1"
)

// Paths the issuer serves.
const (
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/jwks"
)

// Issuer is an OIDC issuer started for a test; it stops when the test ends.
type Issuer struct {
	srv                 *httptest.Server
	mu                  sync.Mutex
	key                 *rsa.PrivateKey // signs Token
	keyID               string
	published           []jose.JSONWebKey // the JWKS
	rotations           int
	unknownOnce         sync.Once
	unknown             *rsa.PrivateKey
	discoveryHits, jwks atomic.Int64
	down                atomic.Bool
}

// Hits counts the requests the issuer received, including those refused while down.
type Hits struct {
	Discovery int64
	JWKS      int64
}

// Start starts an issuer on 127.0.0.1 whose issuer identifier is its URL.
func Start(t testing.TB) *Issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generating RSA key: %v", err)
	}
	i := &Issuer{key: key, keyID: KeyID, published: []jose.JSONWebKey{publicKey(key, KeyID)}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+DiscoveryPath, func(w http.ResponseWriter, r *http.Request) {
		i.discoveryHits.Add(1)
		i.abortIfDown()
		writeJSON(w, map[string]any{
			"issuer":                                i.URL(),
			"jwks_uri":                              i.URL() + JWKSPath,
			"authorization_endpoint":                i.URL() + "/authorize",
			"token_endpoint":                        i.URL() + "/token",
			"response_types_supported":              []string{"code"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("GET "+JWKSPath, func(w http.ResponseWriter, r *http.Request) {
		i.jwks.Add(1)
		i.abortIfDown()
		i.mu.Lock()
		keys := slices.Clone(i.published)
		i.mu.Unlock()
		writeJSON(w, jose.JSONWebKeySet{Keys: keys})
	})
	i.srv = httptest.NewServer(mux)
	t.Cleanup(i.srv.Close)
	return i
}

func publicKey(k *rsa.PrivateKey, kid string) jose.JSONWebKey {
	return jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: string(jose.RS256), Use: "sig"}
}

// Rotate makes a new signing key under a new key id, published beside the old one: Token
// signs with it from now on. It returns the new key id.
func (i *Issuer) Rotate(t testing.TB) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generating RSA key: %v", err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.rotations++
	i.keyID = fmt.Sprintf("testoidc-%d", i.rotations+1) // KeyID is testoidc-1
	i.key = k
	i.published = append(i.published, publicKey(k, i.keyID))
	return i.keyID
}

// Withdraw stops publishing the key with id kid (a key rotated out, or revoked): tokens it
// signed no longer verify once a verifier fetches the JWKS again.
func (i *Issuer) Withdraw(kid string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.published = slices.DeleteFunc(i.published, func(k jose.JSONWebKey) bool { return k.KeyID == kid })
}

// URL is the issuer identifier and base URL, http://127.0.0.1:port.
func (i *Issuer) URL() string { return i.srv.URL }

// JWKSURL is where the issuer serves its keys.
func (i *Issuer) JWKSURL() string { return i.srv.URL + JWKSPath }

// Client returns an HTTP client for the issuer.
func (i *Issuer) Client() *http.Client { return i.srv.Client() }

// Hits returns how many discovery and JWKS requests the issuer received.
func (i *Issuer) Hits() Hits {
	return Hits{Discovery: i.discoveryHits.Load(), JWKS: i.jwks.Load()}
}

// SetDown makes the issuer drop every connection without a response (down) or serve again.
// Going down also closes Client's idle connections, so that Client's transport does not retry
// a request on a fresh connection after the reused one is dropped (which Hits would count
// twice).
func (i *Issuer) SetDown(down bool) {
	i.down.Store(down)
	if down {
		i.srv.Client().CloseIdleConnections()
	}
}

func (i *Issuer) abortIfDown() {
	if i.down.Load() {
		panic(http.ErrAbortHandler) // closes the connection; the server logs nothing
	}
}

// Claims returns the default claims with claims applied over them: iss the issuer URL, aud
// Audience, sub Subject, iat now and exp an hour from now. A nil value removes the claim.
func (i *Issuer) Claims(claims map[string]any) map[string]any {
	now := time.Now()
	c := map[string]any{
		"iss": i.URL(),
		"aud": Audience,
		"sub": Subject,
		"iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// Token returns a JWT signed RS256 with the issuer's signing key (kid KeyID until Rotate),
// carrying Claims(claims).
func (i *Issuer) Token(t testing.TB, claims map[string]any) string {
	t.Helper()
	i.mu.Lock()
	key, kid := i.key, i.keyID
	i.mu.Unlock()
	return sign(t, key, kid, i.Claims(claims))
}

// UnknownKeyToken is Token signed with another RSA key that the JWKS does not hold, under
// kid KeyID: only the signature tells it apart.
func (i *Issuer) UnknownKeyToken(t testing.TB, claims map[string]any) string {
	t.Helper()
	i.unknownOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatalf("generating RSA key: %v", err)
		}
		i.unknown = k
	})
	return sign(t, i.unknown, KeyID, i.Claims(claims))
}

// UnsignedToken is a JWT of Claims(claims) with alg none and an empty signature.
func (i *Issuer) UnsignedToken(t testing.TB, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(i.Claims(claims))
	if err != nil {
		t.Fatalf("encoding claims: %v", err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(payload) + "."
}

func sign(t testing.TB, key *rsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatalf("encoding claims: %v", err)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		t.Fatalf("creating signer: %v", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatalf("signing: %v", err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatalf("serializing: %v", err)
	}
	return tok
}

func writeJSON(w http.ResponseWriter, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}
