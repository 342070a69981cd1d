package ratelimit

import "github.com/tollgate-dev/tollgate/internal/resourceuri"

// CanonicalResourceURI is the form resources[] entries and resources/read calls are matched
// in: WHATWG URL parsing and serialisation as the TypeScript SDK looks resources up by, plus a
// few merges (internal/resourceuri). Every spelling a server resolves to one resource shares
// its buckets. A URI with no canonical form (not a URL, or one that cannot be canonicalised
// exactly) is an error: the proxy refuses such a call (JSON-RPC -32602) rather than give it a
// bucket of its own, and New refuses such an entry.
func CanonicalResourceURI(uri string) (string, error) { return resourceuri.Canonical(uri) }
