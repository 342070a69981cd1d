package auth

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestThrottled: concurrent callers share one run; within the interval after a run the
// result is reused; after it a new run goes; a caller that stops waiting gets its context's
// error while the run goes on for the others.
func TestThrottled(t *testing.T) {
	start := time.Now()
	var offset atomic.Int64
	var runs atomic.Int64
	release := make(chan struct{})
	th := &throttled[int64]{
		what:     "the thing",
		interval: time.Second,
		now:      func() time.Time { return start.Add(time.Duration(offset.Load())) },
		fetch: func() (int64, error) {
			<-release
			return runs.Add(1), nil
		},
	}

	type result struct {
		Values []int64
		Errors []string
	}
	var mu sync.Mutex
	var got result
	var wg sync.WaitGroup
	for range 10 { // the first run, shared
		wg.Go(func() {
			v, err := th.get(context.Background())
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				got.Errors = append(got.Errors, err.Error())
				return
			}
			got.Values = append(got.Values, v)
		})
	}
	gaveUp, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := th.get(gaveUp); err != nil {
		got.Errors = append(got.Errors, err.Error())
		if !errors.Is(err, context.Canceled) {
			t.Errorf("a caller that stopped waiting: %v does not wrap context.Canceled", err)
		}
	}
	close(release)
	wg.Wait()

	v, _ := th.get(context.Background()) // within the interval: the same result, no run
	got.Values = append(got.Values, v)
	offset.Store(int64(time.Second))
	v, _ = th.get(context.Background()) // after it: a new run
	got.Values = append(got.Values, v)

	want := result{
		Values: []int64{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2},
		Errors: []string{"waiting for the thing: context canceled"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("-want +got:\n%s", diff)
	}
}
