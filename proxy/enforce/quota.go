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
	total int64            // held and counted against max
	all   int64            // held in all (total, and what acquireOwn took)
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
func (q *quota) acquire(caller string, n int64) quotaResult { return q.take(caller, n, n) }

// acquireOwn takes n from caller's share only: for what is bounded otherwise (the first chunk
// of a body, bounded by the connection cap), so that callers with shares left are never
// refused for a proxy-wide total that others filled.
func (q *quota) acquireOwn(caller string, n int64) quotaResult { return q.take(caller, n, 0) }

func (q *quota) take(caller string, n, total int64) quotaResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	h := q.held[caller]
	switch {
	case h+n > q.perCaller:
		return quotaCaller
	case q.total+total > q.max:
		return quotaTotal
	}
	q.held[caller] = h + n
	q.total += total
	q.all += n
	return quotaOK
}

// release gives back n that caller acquired, of which total counted in the proxy-wide total.
func (q *quota) release(caller string, n, total int64) {
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
	q.total -= total
	q.all -= n
}

// inUse is what is held in all.
func (q *quota) inUse() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.all
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
