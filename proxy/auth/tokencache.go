package auth

import (
	"crypto/sha256"
	"encoding/json"
	"sync"
	"time"
	"unsafe"

	"github.com/coreos/go-oidc/v3/oidc"
)

// The verified-token cache.
//
// Verifying a bearer token (an RS256 signature, go-oidc's JSON decoding of the claims, ours)
// costs about 60 µs and 200 allocations: four times the rest of a request. Clients send the
// same token on every call until it expires, so the OIDC authenticator keeps the identities
// of the tokens it verified, keyed by the SHA-256 of the whole token (the cache holds no
// token: a heap dump shows no credential), and answers a later request with the same token
// from the cache — but only while the verifier itself would accept the token at that moment.
//
// Exactness. go-oidc's verdict on a token depends on the token's bytes, the authenticator's
// config, the clock, and the key set. The config never changes under an authenticator (a
// config reload that touches auth is a restart: config.RestartNeeded; a new authenticator
// starts with an empty cache). The token's bytes are the key (SHA-256: no two tokens share
// an entry). For the clock, an entry keeps the token's exp and nbf as go-oidc read them and
// applies go-oidc's own comparisons to the same clock (Config.Now), with its leeway: none for
// exp (expired when exp is before now), five minutes for nbf (refused when now + 5 min is
// before nbf). For the keys, an entry keeps the key that verified the token (its kid and
// RFC 7638 thumbprint) and the version of the key set it came from; when the set has changed
// since, the entry is used only if the current set still holds that very key, in which case
// the verifier would find it (it tries every key with the token's kid) and it would verify
// the same signature again. When the key set refreshes, entries whose key is gone are
// dropped at once. Anything else — an entry past exp, before nbf, with its key gone, or no
// entry — is a miss, and the verifier decides. Only a token that passed every check of
// Authenticate is added. So a hit is exactly a token the verifier would accept now with the
// same identity; TestTokenCacheExact and FuzzTokenCache check it against the uncached path.
//
// Bounds. At most DefaultTokenCacheEntries identities and about DefaultTokenCacheBytes of
// memory (each entry is charged its claims' bytes and a fixed overhead), least recently used
// first out; a token longer than MaxCachedTokenBytes is never cached (nor hashed).

// Defaults and bounds of the verified-token cache.
const (
	// DefaultTokenCacheEntries bounds the identities held: a proxy's active users, with room.
	DefaultTokenCacheEntries = 10_000
	// DefaultTokenCacheBytes bounds the memory the entries are charged: 10 000 tokens of
	// 3 KiB fit.
	DefaultTokenCacheBytes = 32 << 20
	// MaxCachedTokenBytes is the longest token cached. Tokens are usually 1–2 KB; a huge one
	// (thousands of group claims) is verified on every request rather than let crowd out the
	// others.
	MaxCachedTokenBytes = 8 << 10
)

// nbfLeeway is go-oidc's leeway for nbf (IDTokenVerifier.Verify: a constant five minutes, not
// configurable). exp has none. TestTokenCacheExact pins both at the second.
const nbfLeeway = 5 * time.Minute

// entryOverhead is what an entry costs beside its claims' bytes: the entry, its map slot,
// the claims map's header and buckets (per claim, claimOverhead).
const (
	entryOverhead = 256
	claimOverhead = 64
)

// TokenCacheStats are a token cache's counters since the authenticator was made.
type TokenCacheStats struct {
	Hits, Misses uint64 // lookups of a cacheable token
	Entries      int    // identities held now
	Bytes        int    // memory charged to them
}

// TokenCacheStatser is implemented by an authenticator with a token cache (OIDC, unless
// turned off).
type TokenCacheStatser interface {
	TokenCacheStats() TokenCacheStats
}

// TokenCacheStats implements TokenCacheStatser: zero when the cache is off.
func (a *oidcAuth) TokenCacheStats() TokenCacheStats {
	if a.cache == nil {
		return TokenCacheStats{}
	}
	return a.cache.stats()
}

// cachedIdentity is one verified token's identity and what bounds its validity.
type cachedIdentity struct {
	sum    [sha256.Size]byte
	id     Identity
	exp    time.Time // go-oidc's IDToken.Expiry
	nbf    time.Time // as go-oidc reads it; valid only when hasNBF
	hasNBF bool
	key    keyRef // the key that verified the token
	keysV  uint64 // the version of a key set known to hold key
	size   int

	prev, next *cachedIdentity // the LRU list, most recent first
}

type tokenCache struct {
	maxEntries, maxBytes int

	mu           sync.Mutex
	entries      map[[sha256.Size]byte]*cachedIdentity
	lru          cachedIdentity // sentinel: lru.next is the most recent, lru.prev the least
	bytes        int
	hits, misses uint64
}

func newTokenCache(maxEntries, maxBytes int) *tokenCache {
	c := &tokenCache{maxEntries: maxEntries, maxBytes: maxBytes, entries: make(map[[sha256.Size]byte]*cachedIdentity)}
	c.lru.next, c.lru.prev = &c.lru, &c.lru
	return c
}

// get returns the identity cached for the token whose SHA-256 is sum, if the verifier would
// accept the token at now with keys in use. An entry that fails either test is dropped.
// The identity's claims are shared by every hit: read-only (ratelimit.ResolveTier only reads).
func (c *tokenCache) get(sum [sha256.Size]byte, now time.Time, keys *keySet) (Identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[sum]
	if e == nil {
		c.misses++
		return Identity{}, false
	}
	// The verifier's own tests, on the values it read: exp with no leeway, nbf with five
	// minutes (go-oidc verify.go).
	if e.exp.Before(now) || (e.hasNBF && now.Add(nbfLeeway).Before(e.nbf)) {
		c.remove(e)
		c.misses++
		return Identity{}, false
	}
	if e.keysV != keys.version {
		if !keys.holds(e.key) {
			c.remove(e)
			c.misses++
			return Identity{}, false
		}
		e.keysV = keys.version
	}
	c.toFront(e)
	c.hits++
	return e.id, true
}

// tokenSum is the SHA-256 of a token. sha256.Sum256 only reads its input, so it hashes the
// string's own bytes: sha256.Sum256([]byte(tok)) copied a kilobyte-sized token to the heap
// on every request (the one allocation of a cache hit).
func tokenSum(tok string) [sha256.Size]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(tok), len(tok)))
}

// validity returns the token's exp and nbf as go-oidc read them when it verified idt: exp is
// its Expiry; nbf is decoded again from the claims with go-oidc's field, tag and decoding
// (so an "NBF" key counts, as encoding/json matches keys case-insensitively). ok is false
// when nbf cannot be read so: such a token is not cached.
func validity(idt *oidc.IDToken) (v window, ok bool) {
	var claims struct {
		NotBefore *jsonTime `json:"nbf"`
	}
	if err := idt.Claims(&claims); err != nil {
		return window{}, false
	}
	v.exp = idt.Expiry
	if claims.NotBefore != nil {
		v.nbf, v.hasNBF = time.Time(*claims.NotBefore), true
	}
	return v, true
}

// window is when the verifier accepts a token, as far as the clock goes.
type window struct {
	exp    time.Time
	nbf    time.Time // valid only when hasNBF
	hasNBF bool
}

// add caches id, the identity of a token of tokenLen bytes whose SHA-256 is sum, valid in
// w, verified with key of set. A token whose key cannot be named is not cached (it is
// verified every time). set may be older than the key set in use (a verification that ran
// across a refresh): get checks the key again before it answers.
func (c *tokenCache) add(sum [sha256.Size]byte, id Identity, w window, set *keySet, key keyRef, tokenLen int) {
	if set == nil || !set.holds(key) || tokenLen > MaxCachedTokenBytes {
		return
	}
	e := &cachedIdentity{sum: sum, id: id, exp: w.exp, nbf: w.nbf, hasNBF: w.hasNBF, key: key, keysV: set.version}
	e.size = entryOverhead + len(id.User)
	for k, v := range id.Attributes.Claims {
		e.size += claimOverhead + len(k) + len(v)
	}
	if e.size > c.maxBytes {
		return
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.entries[sum]; old != nil {
		c.remove(old) // verified again (concurrent first requests): keep the newest
	}
	c.entries[sum] = e
	c.bytes += e.size
	c.pushFront(e)
	for len(c.entries) > c.maxEntries || c.bytes > c.maxBytes {
		c.remove(c.lru.prev)
	}
}

// keysRefreshed drops the entries whose key the new key set no longer holds (the issuer
// rotated it out), and marks the others as checked against it.
func (c *tokenCache) keysRefreshed(set *keySet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries {
		if e.keysV >= set.version {
			continue
		}
		if !set.holds(e.key) {
			c.remove(e)
			continue
		}
		e.keysV = set.version
	}
}

func (c *tokenCache) stats() TokenCacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return TokenCacheStats{Hits: c.hits, Misses: c.misses, Entries: len(c.entries), Bytes: c.bytes}
}

// contains reports whether the token whose SHA-256 is sum has an entry (tests).
func (c *tokenCache) contains(sum [sha256.Size]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.entries[sum] != nil
}

func (c *tokenCache) remove(e *cachedIdentity) {
	delete(c.entries, e.sum)
	c.bytes -= e.size
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (c *tokenCache) pushFront(e *cachedIdentity) {
	e.prev, e.next = &c.lru, c.lru.next
	c.lru.next.prev = e
	c.lru.next = e
}

func (c *tokenCache) toFront(e *cachedIdentity) {
	if c.lru.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	c.pushFront(e)
}

// jsonTime decodes a NumericDate exactly as go-oidc's (unexported) jsonTime does, so that the
// nbf an entry keeps is the nbf the verifier compared.
type jsonTime time.Time

func (j *jsonTime) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	var unix int64
	if t, err := n.Int64(); err == nil {
		unix = t
	} else {
		f, err := n.Float64()
		if err != nil {
			return err
		}
		unix = int64(f)
	}
	*j = jsonTime(time.Unix(unix, 0))
	return nil
}
