package enforce

import (
	"net"
	"sync"
)

// quota caps a resource held by requests (buffered body bytes, open streams) in all and per
// caller. A caller is the identity the proxy established, or the peer's IP address when it
// has none, so that one client cannot take what the others need. Safe for concurrent use.
type quota struct {
	max, perCaller int64

	mu    sync.Mutex
	total int64
	held  map[string]int64 // caller → amount held; absent at zero, so the map is bounded by the holders
}

func newQuota(max, perCaller int64) *quota {
	return &quota{max: max, perCaller: perCaller, held: map[string]int64{}}
}

// quotaResult says whether an acquire succeeded, and which cap refused it.
type quotaResult int

const (
	quotaOK quotaResult = iota
	quotaCaller
	quotaTotal
)

// acquire takes n for caller, or nothing when that would pass a cap. The caller's own cap is
// checked first: a client over its share is told so (429), not that the proxy is full (503).
func (q *quota) acquire(caller string, n int64) quotaResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	h := q.held[caller]
	switch {
	case h+n > q.perCaller:
		return quotaCaller
	case q.total+n > q.max:
		return quotaTotal
	}
	q.held[caller] = h + n
	q.total += n
	return quotaOK
}

// release gives back n that caller acquired.
func (q *quota) release(caller string, n int64) {
	if n == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if h := q.held[caller] - n; h > 0 {
		q.held[caller] = h
	} else {
		delete(q.held, caller)
	}
	q.total -= n
}

// inUse is the total held.
func (q *quota) inUse() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.total
}

// callerKey is who holds quota for a request: its identity, or its peer's IP address (never
// X-Forwarded-For, which the peer writes).
func callerKey(user, remoteAddr string) string {
	if user != "" {
		return "user:" + user
	}
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	return "ip:" + host
}
