package ratelimit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// crc16 is Redis Cluster's key hash (CRC16-CCITT, XMODEM).
func crc16(b string) uint16 {
	var crc uint16
	for i := 0; i < len(b); i++ {
		crc ^= uint16(b[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// clusterSlot is the slot Redis Cluster stores key in: the hash tag between the first '{' and
// the first '}' after it, when not empty, else the whole key.
func clusterSlot(key string) uint16 {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	return crc16(key) % 16384
}

// maxKeyLen bounds every key: prefix 64, hash tag 63+253+3, "user-resource:", a hashed name
// (65), ':' and the user hash (32), with room to spare.
const maxKeyLen = 600

var kinds = []string{MethodToolsCall, MethodPromptsGet, MethodResourcesRead}

// bucketKeys returns every key one request touches, each with the identity of its bucket.
func bucketKeys(t *testing.T, l *Limiter, r Request) map[string]string {
	t.Helper()
	uses, err := l.collect([]Request{r})
	if err != nil {
		t.Fatalf("collect(%+v): %v", r, err)
	}
	out := make(map[string]string, len(uses))
	for _, u := range uses {
		id := u.b.id.String()
		if u.b.id.Scope == ScopePerUser {
			id += fmt.Sprintf(" user %q", r.UserID)
		}
		out[u.key] = id
	}
	return out
}

// FuzzKeys states the key scheme's guarantees for any two (kind, name, user) tuples: distinct
// buckets never share a key, every key of the server is in one Cluster slot, and keys stay
// bounded in length whatever the names and user ids hold.
func FuzzKeys(f *testing.F) {
	seeds := []struct {
		k1        uint8
		name1, u1 string
		k2        uint8
		name2, u2 string
	}{
		{0, "a:b", "c", 0, "a", "b:c"},
		{0, "a", "user-tool:1:a:x", 0, "a", "user-tool"},
		{1, "x", "}", 1, "x", "{"},
		{2, "file:///a", "\x00", 2, "file:///a", "\n"},
		{0, "t", strings.Repeat("u", 10240), 0, "t", strings.Repeat("u", 10239)},
		{2, strings.Repeat("r", 129), "u", 2, strings.Repeat("r", 128), "u"},
		{2, "#" + strings.Repeat("0", 64), "u", 2, strings.Repeat("x", 200), "u"},
		{0, "5:hello", "u", 0, "hello", "u"},
		{0, "shared", "", 1, "shared", ""},
		{0, "x", "", 0, "x", "u"},
	}
	for _, s := range seeds {
		f.Add(s.k1, s.name1, s.u1, s.k2, s.name2, s.u2)
	}
	f.Fuzz(func(t *testing.T, k1 uint8, name1, user1 string, k2 uint8, name2, user2 string) {
		reqs := []Request{
			{Method: kinds[int(k1)%3], Name: name1, UserID: user1},
			{Method: kinds[int(k2)%3], Name: name2, UserID: user2},
		}
		b := bucketOf(10, time.Minute)
		cfg := &v1alpha1.RateLimitConfig{Shared: b, PerUser: b}
		for i := range reqs {
			r := &reqs[i]
			if r.Name == "" || len(r.Name) > v1alpha1.MaxURILength {
				return // not a name a valid config can hold
			}
			if len(r.Name) > v1alpha1.MaxNameLength {
				r.Method = MethodResourcesRead // only resource URIs may be that long
			}
			switch {
			case r.Method == MethodToolsCall && !hasTool(cfg, r.Name):
				cfg.Tools = append(cfg.Tools, v1alpha1.ToolRateLimitConfig{Name: r.Name, Shared: b, PerUser: b})
			case r.Method == MethodPromptsGet && !hasPrompt(cfg, r.Name):
				cfg.Prompts = append(cfg.Prompts, v1alpha1.PromptRateLimitConfig{Name: r.Name, Shared: b, PerUser: b})
			case r.Method == MethodResourcesRead:
				c, err := CanonicalResourceURI(r.Name)
				if err != nil {
					return // no canonical form: refused, never a bucket
				}
				if hasResource(cfg, c) {
					continue
				}
				cfg.Resources = append(cfg.Resources, v1alpha1.ResourceRateLimitConfig{URI: r.Name, Shared: b, PerUser: b})
			}
		}
		l, err := New(noScripter{}, "ns", "server", cfg)
		if errors.Is(err, v1alpha1.ErrSameResource) {
			return // two spellings of one resource: one bucket by design
		}
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		var all []keyed
		for _, r := range reqs {
			for key, id := range bucketKeys(t, l, r) {
				all = append(all, keyed{key, id})
				// A user id reaches a key only as its keyed hash, at the end.
				if strings.Contains(id, " user ") && !strings.HasSuffix(key, ":"+HashUser(nil, r.UserID)) {
					t.Fatalf("per-user key %q does not end with the hash of user %q", key, r.UserID)
				}
			}
		}
		if err := checkKeySet(all); err != nil {
			t.Fatal(err)
		}
	})
}

// keyed is a key and the identity of the bucket it belongs to.
type keyed struct{ key, id string }

// checkKeySet returns an error when two bucket identities share a key, one identity has two
// keys, the keys span several Cluster slots, or a key is longer than maxKeyLen.
func checkKeySet(all []keyed) error {
	idOf, keyOf := map[string]string{}, map[string]string{}
	slots := map[uint16]bool{}
	for _, k := range all {
		if other, ok := idOf[k.key]; ok && other != k.id {
			return fmt.Errorf("buckets %s and %s share key %q", other, k.id, k.key)
		}
		if other, ok := keyOf[k.id]; ok && other != k.key {
			return fmt.Errorf("bucket %s has two keys, %q and %q", k.id, other, k.key)
		}
		idOf[k.key], keyOf[k.id] = k.id, k.key
		slots[clusterSlot(k.key)] = true
		if len(k.key) > maxKeyLen {
			return fmt.Errorf("key of %d bytes > %d: %q", len(k.key), maxKeyLen, k.key)
		}
	}
	if len(slots) > 1 {
		return fmt.Errorf("the server's keys span %d Cluster slots", len(slots))
	}
	return nil
}

// TestCheckKeySetCatchesCollisions shows the fuzz test's checker failing on the schemes it
// guards against: keys written literally, a hash tag after a user id, unbounded keys.
func TestCheckKeySetCatchesCollisions(t *testing.T) {
	literal := func(tool, user string) string { return "tollgate:rl:{ns:server}:user-tool:" + tool + ":" + user }
	cases := map[string]struct {
		reason string
		keys   []keyed
	}{
		"LiteralUserTool": {
			reason: "Tool a:b with user c and tool a with user b:c collide when written literally.",
			keys: []keyed{
				{literal("a:b", "c"), `tool:a:b:user user "c"`},
				{literal("a", "b:c"), `tool:a:user user "b:c"`},
			},
		},
		"SlotSplit": {
			reason: "A brace in a literal user id before the server's tag moves the key to another slot.",
			keys: []keyed{
				{"tollgate:rl:{ns:server}:shared", "shared"},
				{"tollgate:rl:user:{x}:{ns:server}", `perUser user "{x}"`},
			},
		},
		"Unbounded": {
			reason: "A 10 KB user id written literally makes a 10 KB key.",
			keys:   []keyed{{"tollgate:rl:{ns:server}:user:" + strings.Repeat("u", 10240), `perUser user "u..."`}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if err := checkKeySet(tc.keys); err == nil {
				t.Errorf("%s\ncheckKeySet found nothing wrong", tc.reason)
			}
		})
	}
}

// noScripter is a client for limiters whose script is never run.
type noScripter struct{ redis.Scripter }

func hasTool(c *v1alpha1.RateLimitConfig, n string) bool {
	for _, t := range c.Tools {
		if t.Name == n {
			return true
		}
	}
	return false
}

func hasPrompt(c *v1alpha1.RateLimitConfig, n string) bool {
	for _, p := range c.Prompts {
		if p.Name == n {
			return true
		}
	}
	return false
}

func hasResource(c *v1alpha1.RateLimitConfig, canonical string) bool {
	for _, r := range c.Resources {
		if got, _ := CanonicalResourceURI(r.URI); got == canonical {
			return true
		}
	}
	return false
}

// TestUserHasher: the pooled hasher gives HMAC-SHA256 of the id under its key, cut to 16
// bytes in hex, whatever ids went through the same pooled state before (short, long, empty,
// concurrently).
func TestUserHasher(t *testing.T) {
	reference := func(key []byte, id string) string {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(id))
		return hex.EncodeToString(m.Sum(nil)[:16])
	}
	ids := []string{"alice", "", strings.Repeat("long-id-", 300), "bob", "ünïcode", "alice"}
	cases := map[string]struct {
		reason string
		key    []byte
		refKey []byte
	}{
		"DefaultKey": {reason: "an empty key means the default key", key: nil, refKey: defaultUserHashKey},
		"OwnKey":     {reason: "a secret keys the hash", key: []byte("s3cret"), refKey: []byte("s3cret")},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := NewUserHasher(tc.key)
			var wg sync.WaitGroup
			got := make([][]string, 4)
			for g := range got {
				wg.Go(func() {
					for range 50 {
						for _, id := range ids {
							got[g] = append(got[g], h.Hash(id))
						}
					}
				})
			}
			wg.Wait()
			var want []string
			for range 50 {
				for _, id := range ids {
					want = append(want, reference(tc.refKey, id))
				}
			}
			for g := range got {
				if diff := cmp.Diff(want, got[g]); diff != "" {
					t.Fatalf("%s\nHash, goroutine %d: -want +got:\n%s", tc.reason, g, diff)
				}
			}
			if diff := cmp.Diff(reference(tc.refKey, "alice"), HashUser(tc.key, "alice")); diff != "" {
				t.Errorf("%s\nHashUser: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}
