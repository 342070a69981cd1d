package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// memory is the embedded store: the limiter's script run in process by a
// ratelimit.LocalStore (see the package documentation: "The memory store"). It answers, as a
// go-redis hook, every command the store's client processes, so the client never dials.
type memory struct {
	local  *ratelimit.LocalStore
	closed atomic.Bool

	stop      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once
}

// errNoNetwork would be a dial of the memory store's client: there is nothing to reach.
var errNoNetwork = errors.New("memory store: the embedded store has no network address")

func openMemory(ctx context.Context, opt Options) (Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory store: %w", err)
	}
	return newMemoryStore(opt, ratelimit.LocalOptions{}), nil
}

// newMemoryStore is openMemory with the local store's options (tests give it a clock).
func newMemoryStore(opt Options, lo ratelimit.LocalOptions) *redisStore {
	m := &memory{local: ratelimit.NewLocalStore(lo), stop: make(chan struct{}), stopped: make(chan struct{})}
	// A go-redis client whose every command the hook answers: the store's Scripter methods,
	// Ping and Close then work as for Redis (and the store is a redisStore like the others).
	// Nothing retries, and nothing is pipelined (Open gives only Redis stores a combiner).
	client := redis.NewClient(&redis.Options{Addr: "memory", MaxRetries: -1})
	client.AddHook(m)
	s := newStore(client, opt)
	s.mem = m
	go m.run(opt.MemorySweepInterval)
	return s
}

// call runs one call of the store's breaker guard. The local store makes each decision
// atomic by itself; there is nothing to add.
func (m *memory) call(_ []string, run func()) { run() }

// run removes expired keys every interval, so that the memory of idle users goes back even
// when no call comes (decisions remove a few expired keys each).
func (m *memory) run(interval time.Duration) {
	defer close(m.stopped)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
			m.local.RemoveExpired()
		}
	}
}

// close stops the sweeper; later commands fail with redis.ErrClosed.
func (m *memory) close() {
	m.closeOnce.Do(func() {
		m.closed.Store(true)
		close(m.stop)
		<-m.stopped
	})
}

// DialHook refuses every dial: the hook answers every command, so none should happen.
func (m *memory) DialHook(redis.DialHook) redis.DialHook {
	return func(context.Context, string, string) (net.Conn, error) { return nil, errNoNetwork }
}

// ProcessHook answers the command in process.
func (m *memory) ProcessHook(redis.ProcessHook) redis.ProcessHook { return m.process }

// ProcessPipelineHook answers each command of a pipeline (the store sends none, but a
// pipeline must not reach the network either).
func (m *memory) ProcessPipelineHook(redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var first error
		for _, cmd := range cmds {
			if err := m.process(ctx, cmd); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
}

// process answers the commands the store sends: EVAL, EVALSHA and their _RO forms, SCRIPT
// EXISTS, SCRIPT LOAD and PING. The caller's context does not stop a decision: it takes
// about a microsecond and never waits, and a caller's deadline is no failure of the store
// (which the breaker would count).
func (m *memory) process(ctx context.Context, cmd redis.Cmder) error {
	if m.closed.Load() {
		cmd.SetErr(redis.ErrClosed)
		return redis.ErrClosed
	}
	ctx = context.WithoutCancel(ctx)
	args := cmd.Args()
	switch c := cmd.(type) {
	case *redis.Cmd:
		r := m.eval(ctx, c.Name(), args)
		c.SetVal(r.Val())
		c.SetErr(r.Err())
		return c.Err()
	case *redis.StatusCmd:
		if c.Name() == "ping" {
			c.SetVal("PONG")
			return nil
		}
	case *redis.BoolSliceCmd:
		if len(args) >= 2 && args[1] == "exists" {
			r := m.local.ScriptExists(ctx, stringArgs(args[2:])...)
			c.SetVal(r.Val())
			c.SetErr(r.Err())
			return c.Err()
		}
	case *redis.StringCmd:
		if len(args) == 3 && args[1] == "load" {
			src, _ := args[2].(string)
			r := m.local.ScriptLoad(ctx, src)
			c.SetVal(r.Val())
			c.SetErr(r.Err())
			return c.Err()
		}
	}
	err := ratelimit.LocalError(fmt.Sprintf("ERR the memory store does not serve %q", cmd.Name()))
	cmd.SetErr(err)
	return err
}

// eval runs a script command: name, script or SHA1, the number of keys, the keys, the
// arguments (the order redisStore.script gives them).
func (m *memory) eval(ctx context.Context, name string, args []interface{}) *redis.Cmd {
	if len(args) < 3 {
		return errCmd(ctx, name, "ERR wrong number of arguments for '"+name+"' command")
	}
	script, _ := args[1].(string)
	n, ok := args[2].(int)
	if !ok || n < 0 || len(args) < 3+n {
		return errCmd(ctx, name, "ERR Number of keys can't be greater than number of args")
	}
	keys := stringArgs(args[3 : 3+n])
	rest := args[3+n:]
	switch name {
	case "eval":
		return m.local.Eval(ctx, script, keys, rest...)
	case "evalsha":
		return m.local.EvalSha(ctx, script, keys, rest...)
	case "eval_ro":
		return m.local.EvalRO(ctx, script, keys, rest...)
	case "evalsha_ro":
		return m.local.EvalShaRO(ctx, script, keys, rest...)
	}
	return errCmd(ctx, name, fmt.Sprintf("ERR the memory store does not serve %q", name))
}

func errCmd(ctx context.Context, name, msg string) *redis.Cmd {
	c := redis.NewCmd(ctx, name)
	c.SetErr(ratelimit.LocalError(msg))
	return c
}

func stringArgs(args []interface{}) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i], _ = a.(string)
	}
	return out
}
