package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// redisErr is a Redis error reply, as go-redis returns it.
type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

// TestClassify: which errors open the breaker, which do not, which do not count.
func TestClassify(t *testing.T) {
	cases := map[string]struct {
		reason string
		err    error
		want   outcome
	}{
		"Nil":               {reason: "A reply.", err: nil, want: success},
		"RedisNil":          {reason: "redis.Nil is a reply (no value).", err: redis.Nil, want: success},
		"NoScript":          {reason: "NOSCRIPT is answered with EVAL by Script.Run.", err: redis.ErrNoScript, want: success},
		"NoScriptRaw":       {reason: "Also as the server words it.", err: redisErr("NOSCRIPT No matching script. Please use EVAL."), want: success},
		"ScriptError":       {reason: "A script error is Redis answering.", err: redisErr("ERR user_script:1: Script attempted to access nonexistent global variable 'x'"), want: success},
		"CrossSlot":         {reason: "CROSSSLOT is a caller's mistake, not an outage.", err: redisErr("CROSSSLOT Keys in request don't hash to the same slot"), want: success},
		"WrongType":         {reason: "WRONGTYPE is a reply.", err: redisErr("WRONGTYPE Operation against a key holding the wrong kind of value"), want: success},
		"Loading":           {reason: "LOADING: Redis cannot serve yet.", err: redisErr("LOADING Redis is loading the dataset in memory"), want: failure},
		"ClusterDown":       {reason: "CLUSTERDOWN: the slot is not served.", err: redisErr("CLUSTERDOWN The cluster is down"), want: failure},
		"TryAgain":          {reason: "TRYAGAIN: resharding.", err: redisErr("TRYAGAIN Multiple keys request during rehashing of slot"), want: failure},
		"Busy":              {reason: "BUSY: a script blocks the server.", err: redisErr("BUSY Redis is busy running a script."), want: failure},
		"ReadOnly":          {reason: "READONLY: a failover left us on a replica.", err: redisErr("READONLY You can't write against a read only replica."), want: failure},
		"OOM":               {reason: "OOM under noeviction: writes fail.", err: redisErr("OOM command not allowed when used memory > 'maxmemory'."), want: failure},
		"WrongPass":         {reason: "WRONGPASS: the store is unusable.", err: redisErr("WRONGPASS invalid username-password pair or user is disabled."), want: failure},
		"MaxClients":        {reason: "Too many clients.", err: redisErr("ERR max number of clients reached"), want: failure},
		"Unauthenticated":   {reason: "Redis 7 to a long command without AUTH.", err: redisErr("ERR Protocol error: unauthenticated multibulk length"), want: failure},
		"BusyKeyIsNotBusy":  {reason: "Prefixes match whole words.", err: redisErr("BUSYKEY Target key name already exists."), want: success},
		"DeadlineExceeded":  {reason: "A deadline is a timeout.", err: context.DeadlineExceeded, want: failure},
		"WrappedDeadline":   {reason: "Wrapped too.", err: fmt.Errorf("rate limit script: %w", context.DeadlineExceeded), want: failure},
		"NetTimeout":        {reason: "A read timeout.", err: &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, want: failure},
		"ConnectionRefused": {reason: "Nobody listens.", err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, want: failure},
		"EOF":               {reason: "The connection was closed.", err: io.EOF, want: failure},
		"PoolTimeout":       {reason: "No connection came free in time.", err: redis.ErrPoolTimeout, want: failure},
		"Canceled":          {reason: "The caller gave up: not Redis's doing.", err: fmt.Errorf("x: %w", context.Canceled), want: excluded},
		"Closed":            {reason: "The store was closed: not Redis's doing.", err: redis.ErrClosed, want: excluded},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, classify(tc.err)); diff != "" {
				t.Errorf("%s\nclassify(%v): -want +got:\n%s", tc.reason, tc.err, diff)
			}
		})
	}
}

// TestBreaker: a hung Redis (SIGSTOP) opens the breaker after Failures timeouts; then
// decisions fail at once with ErrCircuitOpen and send nothing; a probe while Redis is down
// opens it again; once a new redis-server listens on the same port, the next probe closes
// it. NOSCRIPT replies never count as failures. The same with and without pipelining.
func TestBreaker(t *testing.T) {
	for name, noPipelining := range map[string]bool{"pipelined": false, "one round trip per call": true} {
		t.Run(name, func(t *testing.T) { testBreaker(t, noPipelining) })
	}
}

func testBreaker(t *testing.T, noPipelining bool) {
	srv := testredis.StartRestartable(t)
	const (
		timeout  = 100 * time.Millisecond
		failures = 5
		every    = 300 * time.Millisecond // probe period
		fast     = 1000                   // decisions made while open
	)
	var mu sync.Mutex
	var transitions []string
	s := openT(t, nil, "redis://"+srv.Addr, Options{
		Timeout:      timeout,
		NoPipelining: noPipelining,
		Breaker:      BreakerOptions{Failures: failures, ProbeEvery: every},
		OnStateChange: func(from, to string) {
			mu.Lock()
			transitions = append(transitions, from+" -> "+to)
			mu.Unlock()
		},
	})
	sent := &commandCounter{}
	s.client.AddHook(sent)
	ctx := context.Background()
	l, err := ratelimit.New(s, "tools", "breaker", limits)
	if err != nil {
		t.Fatal(err)
	}
	allow := func() error {
		_, err := l.Allow(ctx, ratelimit.Request{Method: ratelimit.MethodToolsCall, Name: "search", UserID: "alice"})
		return err
	}

	type result struct {
		FirstDecision         string
		Counted               bool // the counter sees the calls it counts while open
		NoScriptReplies       int
		FailedBeforeOpen      int
		OpenErrors            int
		SentWhileOpen         int64
		ProbeWhileDown        string
		NoCallWaitedWhileDown bool
		AfterRestart          string
		Transitions           []string
		FastUnderTimeout      bool
		OpenedWithinBound     bool
	}
	var got result
	got.FirstDecision = label(allow())
	got.Counted = sent.n.Load() > 0
	for range 10 { // an unknown script: NOSCRIPT, a reply
		if err := s.EvalSha(ctx, "0000000000000000000000000000000000000000", nil).Err(); redis.HasErrorPrefix(err, "NOSCRIPT") {
			got.NoScriptReplies++
		}
	}

	// Outage: the process is stopped; connections are accepted, nothing answers.
	srv.Pause()
	start := time.Now()
	for got.FailedBeforeOpen < 2*failures {
		if err := allow(); errors.Is(err, ErrCircuitOpen) {
			break
		}
		got.FailedBeforeOpen++
	}
	toOpen := time.Since(start)
	got.OpenedWithinBound = toOpen < time.Duration(failures+1)*(timeout+timeout/2)

	before := sent.n.Load()
	start = time.Now()
	for range fast {
		if err := allow(); errors.Is(err, ErrCircuitOpen) {
			got.OpenErrors++
		}
	}
	whileOpen := time.Since(start)
	got.SentWhileOpen = sent.n.Load() - before
	got.FastUnderTimeout = whileOpen < fast*timeout/100
	t.Logf("breaker opened after %d failed decisions in %s (Timeout %s); then %d decisions took %s (%s each; %d × Timeout = %s)",
		got.FailedBeforeOpen, toOpen.Round(time.Millisecond), timeout, fast, whileOpen, whileOpen/fast, fast, fast*timeout)

	// Still down (killed: connections refused), across several probe periods: the prober's
	// PINGs fail, and every call still fails at once, none of them sent.
	srv.Stop()
	before = sent.n.Load()
	slowest := time.Duration(0)
	for end := time.Now().Add(3 * every); time.Now().Before(end); time.Sleep(time.Millisecond) {
		t0 := time.Now()
		got.ProbeWhileDown = label(allow())
		slowest = max(slowest, time.Since(t0))
	}
	got.NoCallWaitedWhileDown = slowest < timeout/2
	got.SentWhileOpen += sent.n.Load() - before

	// A new redis-server on the same port: the prober's next PING closes the breaker, with no
	// call of a caller as the probe.
	srv.Restart()
	restarted := time.Now()
	for got.AfterRestart = label(allow()); got.AfterRestart != "allowed" && time.Since(restarted) < 2*every+2*timeout; got.AfterRestart = label(allow()) {
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("decisions allowed again %s after the restart (probe every %s); slowest call while down %s",
		time.Since(restarted).Round(time.Millisecond), every, slowest)

	mu.Lock()
	got.Transitions = transitions
	mu.Unlock()
	want := result{
		FirstDecision:         "allowed",
		Counted:               true,
		NoScriptReplies:       10,
		FailedBeforeOpen:      failures,
		OpenErrors:            fast,
		SentWhileOpen:         0,
		ProbeWhileDown:        "circuit open",
		NoCallWaitedWhileDown: true,
		AfterRestart:          "allowed",
		Transitions:           []string{"closed -> open", "open -> closed"},
		FastUnderTimeout:      true,
		OpenedWithinBound:     true,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("breaker through an outage: -want +got:\n%s", diff)
	}
}

// TestBreakerProbesInBackground: while Redis hangs (SIGSTOP) the breaker stays open across
// probe periods — every call fails at once and none is sent, since the probe is the
// breaker's own PING, not a caller's call — and when Redis resumes the breaker closes by
// itself. (A half-open breaker, gobreaker's kind, used before, sends a caller's call as the
// probe each period, which then waits for the timeout: Sent and Waited would catch it.)
func TestBreakerProbesInBackground(t *testing.T) {
	srv := testredis.StartRestartable(t)
	const timeout, every = 200 * time.Millisecond, 100 * time.Millisecond
	s := openT(t, nil, "redis://"+srv.Addr, Options{Timeout: timeout, Breaker: BreakerOptions{Failures: 1, ProbeEvery: every}})
	sent := &commandCounter{}
	s.client.AddHook(sent)
	ctx := context.Background()
	srv.Pause()
	_ = s.Eval(ctx, "return 1", nil).Err() // times out: open
	type result struct {
		Labels  map[string]int
		Sent    int64
		Waited  bool // some call took the timeout
		Resumed string
	}
	got := result{Labels: map[string]int{}}
	before := sent.n.Load()
	for end := time.Now().Add(5 * every); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		t0 := time.Now()
		for _, err := range []error{
			s.EvalSha(ctx, "0000000000000000000000000000000000000000", nil).Err(),
			s.ScriptExists(ctx, "0000000000000000000000000000000000000000").Err(),
			s.ScriptLoad(ctx, "return 1").Err(),
			s.EvalRO(ctx, "return 1", nil).Err(),
			s.EvalShaRO(ctx, "0000000000000000000000000000000000000000", nil).Err(),
		} {
			got.Labels[label(err)]++
		}
		got.Waited = got.Waited || time.Since(t0) >= timeout/2
	}
	got.Sent = sent.n.Load() - before
	n := got.Labels["circuit open"]
	srv.Resume()
	resumed := time.Now()
	for got.Resumed = label(s.Eval(ctx, "return 1", nil).Err()); got.Resumed != "allowed" && time.Since(resumed) < 2*every+2*timeout; got.Resumed = label(s.Eval(ctx, "return 1", nil).Err()) {
		time.Sleep(5 * time.Millisecond)
	}
	want := result{Labels: map[string]int{"circuit open": n}, Sent: 0, Waited: false, Resumed: "allowed"}
	if diff := cmp.Diff(want, got); diff != "" || n == 0 {
		t.Errorf("calls while Redis hangs, then after it resumes (%d calls): -want +got:\n%s", n, diff)
	}
}

// label is "allowed" for no error, "circuit open", "timeout", or "error".
func label(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return "allowed"
	case errors.Is(err, ErrCircuitOpen):
		return "circuit open"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	default:
		return "error"
	}
}
