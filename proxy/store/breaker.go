package store

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisStore is every Store: a go-redis client behind a circuit breaker.
type redisStore struct {
	client redis.UniversalClient
	// pipe, when set, sends the script calls of concurrent requests together: one write and
	// one read carry many calls, where one round trip each costs a write and a read
	// syscall apiece on both sides. Each call is still one EVALSHA.
	pipe *combiner
	cb   *breaker
	mem  *memory // the embedded store, or nil
}

var _ Store = (*redisStore)(nil)

func newStore(client redis.UniversalClient, opt Options) *redisStore {
	s := &redisStore{client: client}
	s.cb = &breaker{
		failures: int(opt.Breaker.Failures), probeEvery: opt.Breaker.ProbeEvery, timeout: opt.Timeout,
		probe: s.Ping, onChange: opt.OnStateChange, stop: make(chan struct{}),
	}
	return s
}

// breaker fails calls at once while Redis is known to be down, and learns by itself when it
// is back. After `failures` consecutive failed calls it opens: calls fail with
// ErrCircuitOpen without I/O. While it is open a background prober PINGs Redis every
// probeEvery (bypassing the breaker, bounded by the store's timeout), and the first answer
// closes it. No caller's call is ever the probe: once the breaker is open, no request waits
// for a Redis timeout (a half-open breaker that lets one call through makes that call wait,
// once per period; measured by hack/outagebench). A call that was sent before the breaker
// opened and succeeds closes it too: Redis answered.
type breaker struct {
	failures   int
	probeEvery time.Duration
	timeout    time.Duration
	probe      func(context.Context) error
	onChange   func(from, to string)
	stop       chan struct{}

	open        atomic.Bool // read on every call without the lock
	mu          sync.Mutex
	consecutive int
	probing     bool
	closed      bool // the store is closed: no prober starts
	stopOnce    sync.Once
	wg          sync.WaitGroup
}

// allow returns ErrCircuitOpen while the breaker is open.
func (b *breaker) allow() error {
	if b.open.Load() {
		return ErrCircuitOpen
	}
	return nil
}

// record counts one call's result (see classify).
func (b *breaker) record(err error) {
	switch classify(err) {
	case excluded:
		return
	case success:
		if b.open.Load() {
			b.setClosed()
			return
		}
		b.mu.Lock()
		b.consecutive = 0
		b.mu.Unlock()
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.consecutive++
	if b.consecutive < b.failures || b.open.Load() {
		return
	}
	b.open.Store(true)
	b.notify("closed", "open")
	if !b.probing && !b.closed {
		b.probing = true
		b.wg.Add(1)
		go b.runProber()
	}
}

// setClosed closes the breaker if it is open.
func (b *breaker) setClosed() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open.Swap(false) {
		b.consecutive = 0
		b.notify("open", "closed")
	}
}

// notify reports a transition; called under mu.
func (b *breaker) notify(from, to string) {
	if b.onChange != nil {
		b.onChange(from, to)
	}
}

// runProber pings Redis every probeEvery while the breaker is open. One runs at a time.
func (b *breaker) runProber() {
	defer b.wg.Done()
	t := time.NewTicker(b.probeEvery)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		b.mu.Lock()
		if !b.open.Load() {
			b.probing = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
		err := b.probe(ctx)
		cancel()
		if classify(err) == success {
			b.setClosed()
		}
	}
}

// shutdown stops the prober and waits for it.
func (b *breaker) shutdown() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.stopOnce.Do(func() { close(b.stop) })
	b.wg.Wait()
}

func (s *redisStore) Eval(ctx context.Context, script string, keys []string, args ...interface{}) *redis.Cmd {
	return s.script(ctx, "eval", script, keys, args)
}

func (s *redisStore) EvalSha(ctx context.Context, sha1 string, keys []string, args ...interface{}) *redis.Cmd {
	return s.script(ctx, "evalsha", sha1, keys, args)
}

func (s *redisStore) EvalRO(ctx context.Context, script string, keys []string, args ...interface{}) *redis.Cmd {
	return s.script(ctx, "eval_ro", script, keys, args)
}

func (s *redisStore) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...interface{}) *redis.Cmd {
	return s.script(ctx, "evalsha_ro", sha1, keys, args)
}

// script runs one script command (name is eval, evalsha, eval_ro or evalsha_ro) behind the
// breaker, on the pipeliner when there is one.
func (s *redisStore) script(ctx context.Context, name, script string, keys []string, args []interface{}) *redis.Cmd {
	return guard(s, keys, func() *redis.Cmd {
		a := make([]interface{}, 0, 3+len(keys)+len(args))
		a = append(a, name, script, len(keys))
		for _, k := range keys {
			a = append(a, k)
		}
		cmd := redis.NewCmd(ctx, append(a, args...)...)
		if s.pipe != nil {
			// Batches are pipelines, which the client's per-command noRetryHook does not
			// see: the command says NoRetry itself.
			s.pipe.process(ctx, noRetryCmd{cmd})
		} else {
			_ = s.client.Process(ctx, cmd)
		}
		return cmd
	}, refusedCmd(ctx, name))
}

func (s *redisStore) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	return guard(s, nil, func() *redis.BoolSliceCmd { return s.client.ScriptExists(ctx, hashes...) },
		func(err error) *redis.BoolSliceCmd {
			c := redis.NewBoolSliceCmd(ctx, "script", "exists")
			c.SetErr(err)
			return c
		})
}

func (s *redisStore) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	return guard(s, nil, func() *redis.StringCmd { return s.client.ScriptLoad(ctx, script) },
		func(err error) *redis.StringCmd {
			c := redis.NewStringCmd(ctx, "script", "load")
			c.SetErr(err)
			return c
		})
}

// Ping checks every master on Cluster, the master on Sentinel, the server otherwise. It does
// not go through the breaker.
func (s *redisStore) Ping(ctx context.Context) error {
	if cc, ok := s.client.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.Ping(ctx).Err()
		})
	}
	return s.client.Ping(ctx).Err()
}

func (s *redisStore) Close() error {
	s.cb.shutdown()
	err := s.client.Close()
	if s.mem != nil {
		s.mem.close()
	}
	return err
}

func refusedCmd(ctx context.Context, name string) func(error) *redis.Cmd {
	return func(err error) *redis.Cmd {
		c := redis.NewCmd(ctx, name)
		c.SetErr(err)
		return c
	}
}

// errPanicked records a call that panicked: it counts as a failure.
var errPanicked = errors.New("redis call panicked")

// guard runs one call through the breaker (for the memory store, through its call wrapper:
// an in-process call that cannot fail but for a closed store). A refused call returns
// refused(err) with err matching ErrCircuitOpen.
func guard[C interface{ Err() error }](s *redisStore, keys []string, run func() C, refused func(error) C) C {
	if err := s.cb.allow(); err != nil {
		return refused(err)
	}
	finished := false
	defer func() {
		if !finished {
			s.cb.record(errPanicked)
		}
	}()
	var cmd C
	if s.mem != nil {
		s.mem.call(keys, func() { cmd = run() })
	} else {
		cmd = run()
	}
	finished = true
	s.cb.record(cmd.Err())
	return cmd
}

type outcome int

const (
	success  outcome = iota // Redis answered
	failure                 // Redis did not answer, or said it cannot serve now
	excluded                // not Redis's doing: the caller gave up, or the store was closed
)

// unavailable are the error replies that mean Redis cannot serve now (matched as the first
// word, after an "ERR " prefix).
var unavailable = []string{
	"LOADING", "CLUSTERDOWN", "MASTERDOWN", "TRYAGAIN", "BUSY", "READONLY", "NOREPLICAS",
	"OOM", "MISCONF", "NOAUTH", "WRONGPASS", "max number of clients",
	"Protocol error: unauthenticated", // Redis 7 to a long command without AUTH
}

// classify decides what a call's error means to the breaker.
func classify(err error) outcome {
	switch {
	case err == nil, errors.Is(err, redis.Nil):
		return success
	case errors.Is(err, context.Canceled), errors.Is(err, redis.ErrClosed):
		return excluded
	}
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return failure // network, timeout, context deadline, pool, TLS, credentials file
	}
	msg := strings.TrimPrefix(rerr.Error(), "ERR ")
	for _, p := range unavailable {
		if msg == p || strings.HasPrefix(msg, p+" ") {
			return failure
		}
	}
	return success // NOSCRIPT, a script error, CROSSSLOT, WRONGTYPE…: Redis answered
}

// noRetryHook marks script calls as not retryable. go-redis's Cluster client re-sends a
// command after a network error, a timeout, LOADING, CLUSTERDOWN… up to MaxRedirects times
// (its redirect loop serves both), unless the command says NoRetry; a MOVED or ASK reply is
// followed either way. A script may have run before its reply was lost, and the limiter's
// script is not idempotent, so only redirects (which mean it did not run) may re-send it.
// On the other clients MaxRetries -1 already means one attempt; the mark does no harm.
type noRetryHook struct{}

func (noRetryHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (noRetryHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (noRetryHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if c, ok := cmd.(*redis.Cmd); ok {
			switch c.Name() {
			case "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro":
				return next(ctx, noRetryCmd{c})
			}
		}
		return next(ctx, cmd)
	}
}

// noRetryCmd is a command that go-redis must not re-send.
type noRetryCmd struct{ *redis.Cmd }

func (noRetryCmd) NoRetry() bool { return true }
