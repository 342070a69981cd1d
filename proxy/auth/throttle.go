package auth

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// throttled runs a fetch from the identity provider (discovery, the JWKS) for many requests:
// one run at a time, whose result every request waiting for it shares, and no new run until
// interval has passed since the last one ended — until then get returns that run's result.
// So however many requests arrive, the provider sees at most one request per interval.
type throttled[T any] struct {
	what     string // what is fetched, for errors
	interval time.Duration
	now      func() time.Time
	fetch    func() (T, error) // bounds its own time

	mu       sync.Mutex
	ended    time.Time // of the last run (zero: none yet)
	val      T
	err      error
	inflight chan struct{} // closed when the running fetch ends
}

// get returns the result of a run that started at most interval ago, running fetch if there
// is none. A caller waits no longer than its ctx (the run goes on for the others).
func (t *throttled[T]) get(ctx context.Context) (T, error) {
	t.mu.Lock()
	if t.inflight == nil {
		if !t.ended.IsZero() && t.now().Sub(t.ended) < t.interval {
			v, err := t.val, t.err
			t.mu.Unlock()
			return v, err
		}
		done := make(chan struct{})
		t.inflight = done
		go func() {
			v, err := t.fetch()
			t.mu.Lock()
			defer t.mu.Unlock()
			t.val, t.err, t.ended, t.inflight = v, err, t.now(), nil
			close(done)
		}()
	}
	done := t.inflight
	t.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("waiting for %s: %w", t.what, ctx.Err())
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.val, t.err
}
