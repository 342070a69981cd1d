package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
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

// JWKSRefreshInterval is how old the keys in use may grow before a request has them fetched
// again — in the background: that request, and those meanwhile, are verified with the keys
// held. Without it a key the issuer withdrew (rotated out, or revoked after a leak) would go
// on verifying tokens for as long as no token named a key id the cache lacks. A failed
// refresh keeps the keys held and is tried again after JWKSRefetchInterval.
const JWKSRefreshInterval = 5 * time.Minute

// maxJWKSBytes bounds a JWKS response.
const maxJWKSBytes = 1 << 20

// remoteKeys is the issuer's key set (go-oidc's KeySet), cached.
type remoteKeys struct {
	url     string
	client  *http.Client
	timeout time.Duration // of one fetch
	fetches throttled[*keySet]
	// onRefresh, when set, is called with each newly fetched key set, after it is in use
	// (the token cache drops the identities whose key it no longer holds). Set before use.
	onRefresh func(*keySet)

	mu  sync.Mutex // serialises fetch's version numbering
	cur atomic.Pointer[keySet]

	now func() time.Time
	// refreshAfter is the age of a key set at which a request has it fetched again
	// (JWKSRefreshInterval; negative: never).
	refreshAfter time.Duration
	// nextRefresh is when a stale key set may next have a refresh started (Unix ns; 0: any
	// time), so that while the issuer is down a request does not ask on every call.
	nextRefresh atomic.Int64
}

// keySet is one fetch of the issuer's keys. It is never modified once in use.
type keySet struct {
	// version numbers the fetches of one remoteKeys: 0 is none yet, each successful fetch
	// one more.
	version uint64
	fetched time.Time // when the keys were fetched; zero for version 0
	keys    []jose.JSONWebKey
	refs    []keyRef // refs[i] is keys[i]'s; the zero keyRef for a key that cannot verify
	has     map[keyRef]bool
}

// keyRef names a key by what decides whether it verifies a token: its key id (verifyWith
// tries only the keys with the token's kid) and its public key (the RFC 7638 thumbprint:
// equal thumbprints, equal keys). Two keyRefs are equal exactly when the two keys verify
// the same tokens under the same kid.
type keyRef struct {
	kid   string
	thumb [sha256.Size]byte
}

func newKeySet(version uint64, keys []jose.JSONWebKey) *keySet {
	s := &keySet{version: version, keys: keys, refs: make([]keyRef, len(keys)), has: make(map[keyRef]bool, len(keys))}
	for i := range keys {
		switch keys[i].Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey: // what go-jose verifies with
		default:
			continue // a private or symmetric key never verifies an allowed algorithm
		}
		t, err := keys[i].Thumbprint(crypto.SHA256)
		if err != nil || len(t) != sha256.Size {
			continue
		}
		s.refs[i].kid = keys[i].KeyID
		copy(s.refs[i].thumb[:], t)
		s.has[s.refs[i]] = true
	}
	return s
}

// holds reports whether the set holds the key ref names (never the zero keyRef).
func (s *keySet) holds(ref keyRef) bool { return ref != (keyRef{}) && s.has[ref] }

// current returns the key set in use (version 0 and no keys before the first fetch).
func (k *remoteKeys) current() *keySet { return k.cur.Load() }

func newRemoteKeys(url string, client *http.Client, timeout time.Duration, now func() time.Time) *remoteKeys {
	k := &remoteKeys{url: url, client: client, timeout: timeout, now: now, refreshAfter: JWKSRefreshInterval}
	k.cur.Store(newKeySet(0, nil))
	k.fetches = throttled[*keySet]{what: "the JWKS", interval: JWKSRefetchInterval, now: now, fetch: k.fetch}
	return k
}

// refreshIfStale starts a fetch of the keys in the background when the set in use is older
// than JWKSRefreshInterval, and returns at once: the caller goes on with the keys held. It
// costs an atomic load and a clock read when the set is fresh, as on every request.
func (k *remoteKeys) refreshIfStale() {
	set := k.cur.Load()
	if set.version == 0 || k.refreshAfter < 0 {
		return // never fetched (the first token fetches them), or refreshing is off
	}
	now := k.now()
	if now.Sub(set.fetched) < k.refreshAfter || now.UnixNano() < k.nextRefresh.Load() {
		return
	}
	k.nextRefresh.Store(now.Add(JWKSRefetchInterval).UnixNano())
	started, cancel := context.WithCancel(context.Background())
	cancel() // get starts the fetch and, its context done, does not wait for it
	_, _ = k.fetches.get(started)
}

// verifyTrace carries, through go-oidc's Verify (as a context value under traceKey), what
// remoteKeys learnt: a failure to fetch the JWKS (go-oidc would flatten it into "failed to
// verify signature": it must be a 503, not a 401), and the key that verified the token and
// the key set it came from (the token cache remembers them).
type verifyTrace struct {
	fetchErr error
	set      *keySet
	key      keyRef // the zero keyRef: none, or one that cannot be named
}

type traceKey struct{}

// VerifySignature returns the payload of a compact JWS that a key of the set verifies. A
// failure to fetch the keys is returned wrapped as "fetching keys: ...", and recorded
// through the context (traceKey), so that it becomes a 503, not a 401.
func (k *remoteKeys) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(jwt, joseAlgs)
	if err != nil {
		return nil, fmt.Errorf("oidc: malformed jwt: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("oidc: malformed jwt: want exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	trace, _ := ctx.Value(traceKey{}).(*verifyTrace)

	set := k.cur.Load()
	payload, i, known := verifyWith(jws, kid, set.keys)
	if payload != nil {
		trace.verified(set, i)
		return payload, nil
	}
	if known {
		// A key with this id is cached and does not verify: a forgery or a corrupt token,
		// which fetching again cannot mend.
		return nil, errors.New("failed to verify id token signature")
	}
	set, err = k.fetches.get(ctx)
	if err != nil {
		err = fmt.Errorf("fetching keys: %w", err)
		if trace != nil {
			trace.fetchErr = err
		}
		return nil, err
	}
	if payload, i, _ := verifyWith(jws, kid, set.keys); payload != nil {
		trace.verified(set, i)
		return payload, nil
	}
	return nil, errors.New("failed to verify id token signature")
}

func (t *verifyTrace) verified(set *keySet, i int) {
	if t != nil {
		t.set, t.key = set, set.refs[i]
	}
}

// verifyWith tries the keys with the token's key id (every key when it names none), in
// order, and returns the payload and the index of the first key that verifies it. known
// reports whether a key with that id was among them.
func verifyWith(jws *jose.JSONWebSignature, kid string, keys []jose.JSONWebKey) (payload []byte, index int, known bool) {
	for i := range keys {
		if kid != "" && keys[i].KeyID != kid {
			continue
		}
		known = known || kid != ""
		if p, err := jws.Verify(&keys[i]); err == nil {
			return p, i, true
		}
	}
	return nil, -1, known
}

// fetch gets the keys and puts them in use; on failure the keys held stay in use.
func (k *remoteKeys) fetch() (*keySet, error) {
	keys, err := k.get()
	if err != nil {
		return nil, err
	}
	return k.setKeys(keys), nil
}

// setKeys puts keys in use as the next version of the set, and tells onRefresh.
func (k *remoteKeys) setKeys(keys []jose.JSONWebKey) *keySet {
	k.mu.Lock()
	set := newKeySet(k.cur.Load().version+1, keys)
	set.fetched = k.now()
	k.cur.Store(set)
	k.mu.Unlock()
	if k.onRefresh != nil {
		k.onRefresh(set)
	}
	return set
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
