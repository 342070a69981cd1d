package enforce

import (
	"net/http"
	"strconv"
	"time"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// appendSFString appends s as a structured-field string (RFC 9651): printable ASCII only,
// with '"' and '\' escaped. Other bytes become '?': policy names must be ASCII.
func appendSFString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c > 0x7e:
			b = append(b, '?')
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// ceilSeconds rounds a duration up to whole seconds.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// ceilMillis rounds a duration up to whole milliseconds.
func ceilMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// setRateLimitHeaders writes the two structured fields of draft-ietf-httpapi-ratelimit-headers:
//
//	RateLimit-Policy: "shared";q=100;w=60, "user";q=10;w=60
//	RateLimit: "user";r=7;t=18
//
// q is maxTokens, w the refill period in whole seconds (rounded up), r the whole tokens left
// and t the seconds until one more token is there (rounded up): the draft's "additional quota"
// (its issue #149), not the time until the bucket is full, which for a bucket of 2 per 90 s
// would tell a client to wait 90 s where 45 s do. Shared buckets' r and t are
// shown only when exposeShared is set (they reveal other users' traffic) or when the bucket is
// the one that rejected.
func setRateLimitHeaders(h http.Header, d ratelimit.Decision, exposeShared bool, names policyNames) {
	if len(d.Buckets) == 0 {
		return
	}
	// Both fields are built in one buffer and become one string: this runs on every
	// limited call.
	var scratch [512]byte
	b := scratch[:0]
	for i, bs := range d.Buckets {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendSFString(b, names.get(bs.BucketID))
		b = append(b, ";q="...)
		b = strconv.AppendInt(b, int64(bs.MaxTokens), 10)
		b = append(b, ";w="...)
		b = strconv.AppendInt(b, ceilSeconds(bs.RefillPeriod), 10)
	}
	policyLen := len(b)
	for _, bs := range d.Buckets {
		rejecting := d.Rejected != nil && d.Rejected.BucketID == bs.BucketID
		if bs.Scope == ratelimit.ScopeShared && !exposeShared && !rejecting {
			continue
		}
		if len(b) > policyLen {
			b = append(b, ", "...)
		}
		b = appendSFString(b, names.get(bs.BucketID))
		b = append(b, ";r="...)
		b = strconv.AppendInt(b, bs.Remaining, 10)
		b = append(b, ";t="...)
		b = strconv.AppendInt(b, ceilSeconds(bs.NextToken), 10)
	}
	all := string(b)
	values := [2]string{all[:policyLen], all[policyLen:]}
	h["Ratelimit-Policy"] = values[0:1:1] // canonical keys: set as http.Header.Set would
	if len(all) > policyLen {
		h["Ratelimit"] = values[1:2:2]
	}
}

// policyNames are the names (BucketID.String) of every bucket of one config, computed when
// the config is applied: the names are concatenations, wanted on every limited call.
type policyNames map[ratelimit.BucketID]string

func newPolicyNames(l ratelimit.Decider) policyNames {
	if l == nil {
		return nil
	}
	ids := l.Buckets()
	p := make(policyNames, len(ids))
	for _, id := range ids {
		p[id] = id.String()
	}
	return p
}

func (p policyNames) get(id ratelimit.BucketID) string {
	if n, ok := p[id]; ok {
		return n
	}
	return id.String()
}
