package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// JWKSRefetchInterval is the least time between two fetches of the issuer's keys that tokens
// can cause. go-oidc's RemoteKeySet fetches the keys again for every token that no cached key
// verifies, so a flood of forged tokens was a flood of requests to the issuer; here only a
// token whose key id the cache lacks (a rotated key) causes a fetch, and at most one per
// interval. A token signed with a new key in the first seconds after a fetch is refused (401)
// until the interval has passed; issuers publish a new key before they sign with it.
const JWKSRefetchInterval = 10 * time.Second

// maxJWKSBytes bounds a JWKS response.
const maxJWKSBytes = 1 << 20

// remoteKeys is the issuer's key set (go-oidc's KeySet), cached.
type remoteKeys struct {
	url     string
	client  *http.Client
	timeout time.Duration // of one fetch
	fetches throttled[[]jose.JSONWebKey]

	mu   sync.Mutex
	keys []jose.JSONWebKey // of the last successful fetch
}

func newRemoteKeys(url string, client *http.Client, timeout time.Duration, now func() time.Time) *remoteKeys {
	k := &remoteKeys{url: url, client: client, timeout: timeout}
	k.fetches = throttled[[]jose.JSONWebKey]{what: "the JWKS", interval: JWKSRefetchInterval, now: now, fetch: k.fetch}
	return k
}

// VerifySignature returns the payload of a compact JWS that a key of the set verifies. A
// failure to fetch the keys is returned wrapped as "fetching keys: ...", and recorded
// through the context (fetchErrKey), so that it becomes a 503, not a 401.
func (k *remoteKeys) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(jwt, joseAlgs)
	if err != nil {
		return nil, fmt.Errorf("oidc: malformed jwt: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("oidc: malformed jwt: want exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID

	k.mu.Lock()
	keys := k.keys
	k.mu.Unlock()
	payload, known := verifyWith(jws, kid, keys)
	if payload != nil {
		return payload, nil
	}
	if known {
		// A key with this id is cached and does not verify: a forgery or a corrupt token,
		// which fetching again cannot mend.
		return nil, errors.New("failed to verify id token signature")
	}
	keys, err = k.fetches.get(ctx)
	if err != nil {
		err = fmt.Errorf("fetching keys: %w", err)
		if p, ok := ctx.Value(fetchErrKey{}).(*error); ok {
			*p = err
		}
		return nil, err
	}
	if payload, _ := verifyWith(jws, kid, keys); payload != nil {
		return payload, nil
	}
	return nil, errors.New("failed to verify id token signature")
}

// verifyWith tries the keys with the token's key id (every key when it names none). known
// reports whether a key with that id was among them.
func verifyWith(jws *jose.JSONWebSignature, kid string, keys []jose.JSONWebKey) (payload []byte, known bool) {
	for i := range keys {
		if kid != "" && keys[i].KeyID != kid {
			continue
		}
		known = known || kid != ""
		if p, err := jws.Verify(&keys[i]); err == nil {
			return p, true
		}
	}
	return nil, known
}

// fetch gets the keys and keeps them for the cache; on failure the keys held stay in use.
func (k *remoteKeys) fetch() ([]jose.JSONWebKey, error) {
	keys, err := k.get()
	if err == nil {
		k.mu.Lock()
		k.keys = keys
		k.mu.Unlock()
	}
	return keys, err
}

func (k *remoteKeys) get() ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(context.Background(), k.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("reading %s: %w", k.url, err)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%s: %s", k.url, resp.Status)
	case len(body) > maxJWKSBytes:
		return nil, fmt.Errorf("%s: larger than %d bytes", k.url, maxJWKSBytes)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("%s: not a JWKS: %w", k.url, err)
	}
	return set.Keys, nil
}
