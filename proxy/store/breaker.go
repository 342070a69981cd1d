package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// redisStore is every Store: a go-redis client behind a circuit breaker.
type redisStore struct {
	client redis.UniversalClient
	// pipe, when set, sends the script calls of concurrent requests together: one write and
	// one read carry many calls, where one round trip each costs a write and a read
	// syscall apiece on both sides. Each call is still one EVALSHA.
	pipe *combiner
	cb   *gobreaker.TwoStepCircuitBreaker[struct{}]
	mem  *memory // the embedded store, or nil
}

var _ Store = (*redisStore)(nil)

func newStore(client redis.UniversalClient, opt Options) *redisStore {
	st := gobreaker.Settings{
		Name:        "redis",
		MaxRequests: 1, // one probe when half-open
		Timeout:     opt.Breaker.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= opt.Breaker.Failures
		},
		IsSuccessful: func(err error) bool { return classify(err) == success },
		IsExcluded:   func(err error) bool { return classify(err) == excluded },
	}
	if f := opt.OnStateChange; f != nil {
		st.OnStateChange = func(_ string, from, to gobreaker.State) { f(from.String(), to.String()) }
	}
	return &redisStore{client: client, cb: gobreaker.NewTwoStepCircuitBreaker[struct{}](st)}
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

// errPanicked records a call that panicked, so that a half-open breaker is not left waiting
// for its probe forever.
var errPanicked = errors.New("redis call panicked")

// guard runs one call through the breaker (for the memory store, through its call wrapper:
// an in-process call that cannot fail but for a closed store). A refused call returns
// refused(err) with err matching ErrCircuitOpen.
func guard[C interface{ Err() error }](s *redisStore, keys []string, run func() C, refused func(error) C) C {
	done, err := s.cb.Allow()
	if err != nil {
		if errors.Is(err, gobreaker.ErrTooManyRequests) {
			return refused(fmt.Errorf("%w (half-open: a probe is in flight)", ErrCircuitOpen))
		}
		return refused(ErrCircuitOpen)
	}
	finished := false
	defer func() {
		if !finished {
			done(errPanicked)
		}
	}()
	var cmd C
	if s.mem != nil {
		s.mem.call(keys, func() { cmd = run() })
	} else {
		cmd = run()
	}
	finished = true
	done(cmd.Err())
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
