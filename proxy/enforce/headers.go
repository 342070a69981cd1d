package enforce

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// policyName names a bucket in the RateLimit-Policy and RateLimit headers and in metrics:
// "shared" and "user" at server level, "tool:<name>" and "tool:<name>:user" (likewise prompt
// and resource) for entries. Names come from the config, never from a request.
func policyName(id ratelimit.BucketID) string {
	scope := ""
	if id.Scope == ratelimit.ScopePerUser {
		scope = "user"
	}
	if id.Kind == "" {
		if scope == "" {
			return "shared"
		}
		return scope
	}
	n := id.Kind + ":" + id.Name
	if scope != "" {
		n += ":" + scope
	}
	return n
}

// sfString writes s as a structured-field string (RFC 9651): printable ASCII only, with '"'
// and '\' escaped. Other bytes become '?': policy names must be ASCII.
func sfString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// ceilSeconds rounds a duration up to whole seconds.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// setRateLimitHeaders writes the two structured fields of draft-ietf-httpapi-ratelimit-headers:
//
//	RateLimit-Policy: "shared";q=100;w=60, "user";q=10;w=60
//	RateLimit: "user";r=7;t=18
//
// q is maxTokens, w the refill period in whole seconds (rounded up), r the whole tokens left
// and t the seconds until the bucket is full again (rounded up). Shared buckets' r and t are
// shown only when exposeShared is set (they reveal other users' traffic) or when the bucket is
// the one that rejected.
func setRateLimitHeaders(h http.Header, d ratelimit.Decision, exposeShared bool) {
	if len(d.Buckets) == 0 {
		return
	}
	var policy, state strings.Builder
	for i, b := range d.Buckets {
		if i > 0 {
			policy.WriteString(", ")
		}
		name := policyName(b.BucketID)
		sfString(&policy, name)
		policy.WriteString(";q=" + strconv.FormatInt(int64(b.MaxTokens), 10))
		policy.WriteString(";w=" + strconv.FormatInt(ceilSeconds(b.RefillPeriod), 10))
		rejecting := d.Rejected != nil && d.Rejected.BucketID == b.BucketID
		if b.Scope == ratelimit.ScopeShared && !exposeShared && !rejecting {
			continue
		}
		if state.Len() > 0 {
			state.WriteString(", ")
		}
		sfString(&state, name)
		state.WriteString(";r=" + strconv.FormatInt(b.Remaining, 10))
		state.WriteString(";t=" + strconv.FormatInt(ceilSeconds(b.Reset), 10))
	}
	h.Set("RateLimit-Policy", policy.String())
	if state.Len() > 0 {
		h.Set("RateLimit", state.String())
	}
}
