package ratelimit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"regexp"
	"slices"
	"strconv"
	"sync"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// Key scheme. Every key of one server shares the hash tag {<namespace>:<name>}, so a
// multi-key script runs on Redis Cluster, and has one of these shapes after it:
//
//	shared                               the server's shared bucket
//	shared:<kind>:<name>                 a tool's, prompt's or resource's shared bucket
//	user:<user>                          a user's server-level bucket
//	user-<kind>:<name>:<user>            a user's bucket for one tool, prompt or resource
//	tier:<tier>:user:<user>              a tier's replacement of the user's server-level bucket
//	tier:<tier>:user-<kind>:<name>:<user>  a tier's replacement of a user's entry bucket
//
// where <kind> is tool, prompt or resource, <name> is length-prefixed ("6:search") or, above
// maxRawName bytes, "#" and the SHA-256 of the name in hex, and <user> is a keyed hash of the
// user id (32 hex digits). Each variable part is self-delimiting, the prefix holds no ':', the
// namespace no ':' and the name no '}', so a key decodes to exactly one (prefix, server,
// scope, kind, name, user): no name or user id, whatever bytes it holds, can reach another
// bucket's key. User ids never reach Redis in clear, and every key is bounded in length.

const (
	// maxRawName is the longest name written into a key as it is; longer ones are hashed.
	maxRawName = 128
	// userHashBytes is the length of the keyed user hash (128 bits: collisions are
	// negligible for any realistic user population).
	userHashBytes = 16
)

// Kinds of named entries, as written in keys.
const (
	kindTool     = "tool"
	kindPrompt   = "prompt"
	kindResource = "resource"
)

// defaultUserHashKey keys the user hash when no secret is given: the simulator's key, so that
// scenarios and shipped traces replay the same anywhere. It is public, so pseudonyms under it
// are guessable (hash a list of emails and compare): the proxy never uses it — it reads its
// key file (the operator manages one per MCPServer) or makes a random key per process.
var defaultUserHashKey = []byte("tollgate.dev/v1alpha1 user hash")

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// keyspace builds the keys of one server.
type keyspace struct {
	base  string // "<prefix>:rl:{<ns>:<name>}:"
	users *UserHasher
}

func newKeyspace(prefix, namespace, name string, userKey []byte) (keyspace, error) {
	if !prefixRE.MatchString(prefix) {
		return keyspace{}, fmt.Errorf("key prefix %q: must be 1 to 64 letters, digits, '.', '_' or '-'", prefix)
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return keyspace{}, fmt.Errorf("namespace %q: %s", namespace, errs[0])
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return keyspace{}, fmt.Errorf("name %q: %s", name, errs[0])
	}
	return keyspace{base: prefix + ":rl:{" + namespace + ":" + name + "}:", users: NewUserHasher(userKey)}, nil
}

func (k keyspace) shared() string { return k.base + "shared" }

func (k keyspace) sharedEntry(kind, name string) string {
	return k.base + "shared:" + kind + ":" + encodeName(name)
}

// userPrefix is the per-user key without the user hash, which is appended per request.
func (k keyspace) userPrefix() string { return k.base + "user:" }

func (k keyspace) userEntryPrefix(kind, name string) string {
	return k.base + "user-" + kind + ":" + encodeName(name) + ":"
}

// tier is the keyspace of a tier's per-user buckets: the same shapes under "tier:<tier>:",
// so that a user who moves between tiers never meets a bucket kept at another size.
func (k keyspace) tier(name string) keyspace {
	return keyspace{base: k.base + "tier:" + encodeName(name) + ":", users: k.users}
}

// encodeName makes a name self-delimiting: a length prefix, or a hash for long names. The
// first byte tells the forms apart (a digit or '#'), so a hashed long name never equals a raw
// short one.
func encodeName(name string) string {
	if len(name) <= maxRawName {
		return strconv.Itoa(len(name)) + ":" + name
	}
	sum := sha256.Sum256([]byte(name))
	return "#" + hex.EncodeToString(sum[:])
}

// HashUser returns the keyed hash of a user id that the limiter writes into keys: 32 hex
// digits, the same on every replica that shares key. The proxy's decision log uses it too,
// so that a trace names users the way Redis does without holding their ids.
func HashUser(key []byte, userID string) string {
	return NewUserHasher(key).Hash(userID)
}

// UserHasher is HashUser for one key, for the request path: it reuses the HMAC state (keying
// an HMAC hashes the key twice and allocates) across calls. Safe for concurrent use.
type UserHasher struct{ pool sync.Pool }

type userHashState struct {
	mac hash.Hash
	buf []byte
}

// NewUserHasher returns a hasher for key (empty: the fixed, public default key).
func NewUserHasher(key []byte) *UserHasher {
	if len(key) == 0 {
		key = defaultUserHashKey
	}
	key = slices.Clone(key)
	return &UserHasher{pool: sync.Pool{New: func() any {
		return &userHashState{mac: hmac.New(sha256.New, key), buf: make([]byte, 0, 64)}
	}}}
}

// Hash returns HashUser(key, userID).
func (h *UserHasher) Hash(userID string) string {
	st := h.pool.Get().(*userHashState)
	st.mac.Reset()
	st.buf = append(st.buf[:0], userID...)
	st.mac.Write(st.buf)
	st.buf = st.mac.Sum(st.buf[:0])
	var out [2 * userHashBytes]byte
	hex.Encode(out[:], st.buf[:userHashBytes])
	if cap(st.buf) <= 1024 { // a huge id's buffer is not kept
		h.pool.Put(st)
	}
	return string(out[:])
}

// UserKeyPattern is the Redis glob (SCAN MATCH, redis-cli --scan --pattern) of every key
// that holds a bucket of the user whose pseudonym (HashUser) is given, on one server: every
// per-user key ends in ":<pseudonym>", and nothing else does (a shared key ends in a name,
// length-prefixed, or a 64-digit hash). Deleting those keys erases the user's state: their
// buckets then read as full, as for a user never seen. The prefix, namespace and name hold
// no glob character (see newKeyspace).
func UserKeyPattern(prefix, namespace, name, pseudonym string) string {
	if prefix == "" {
		prefix = v1alpha1.DefaultKeyPrefix
	}
	return prefix + ":rl:{" + namespace + ":" + name + "}:*:" + pseudonym
}
