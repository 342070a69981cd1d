package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

func bucket(maxTokens int32, period time.Duration) *v1alpha1.RateLimitBucket {
	return &v1alpha1.RateLimitBucket{MaxTokens: maxTokens, RefillPeriod: metav1.Duration{Duration: period}}
}

// limits has every kind of bucket a tool call meets: shared, perUser, and the tool's own
// shared and perUser. Refill is slow (a token per 86s at most), so counts are exact.
var limits = &v1alpha1.RateLimitConfig{
	Shared:  bucket(1000, 24*time.Hour),
	PerUser: bucket(100, 24*time.Hour),
	Tools:   []v1alpha1.ToolRateLimitConfig{{Name: "search", Shared: bucket(500, 24*time.Hour), PerUser: bucket(2, 24*time.Hour)}},
}

// decisionsWant is what runDecisions describes on fresh keys: alice exhausts her two
// "search" tokens and is refused by that bucket alone, which then touches no bucket.
var decisionsWant = []string{
	"alice: allowed [999 99 499 1]",
	"bob: allowed [998 99 498 1]",
	"alice: allowed [997 98 497 0]",
	`alice: rejected by tool:search:user [997 98 497 0]`,
	"carol: allowed [996 99 496 1]",
}

// runDecisions runs the limiter over s for server tools/<name>: five tools/call decisions
// of three users, each described as "<user>: allowed|rejected by <bucket> [remaining…]".
func runDecisions(ctx context.Context, s redis.Scripter, name string) ([]string, error) {
	l, err := ratelimit.New(s, "tools", name, limits)
	if err != nil {
		return nil, err
	}
	var got []string
	for _, user := range []string{"alice", "bob", "alice", "alice", "carol"} {
		d, err := l.Allow(ctx, ratelimit.Request{Method: ratelimit.MethodToolsCall, Name: "search", UserID: user})
		if err != nil {
			return got, fmt.Errorf("%s: %w", user, err)
		}
		got = append(got, describe(user, d))
	}
	return got, nil
}

func describe(user string, d ratelimit.Decision) string {
	remaining := make([]int64, len(d.Buckets))
	for i, b := range d.Buckets {
		remaining[i] = b.Remaining
	}
	if d.Allowed {
		return fmt.Sprintf("%s: allowed %v", user, remaining)
	}
	return fmt.Sprintf("%s: rejected by %s %v", user, d.Rejected.BucketID, remaining)
}

// allowOnce is one decision, described as "allowed", or the error's label.
func allowOnce(ctx context.Context, s redis.Scripter, name string) string {
	l, err := ratelimit.New(s, "tools", name, limits)
	if err != nil {
		return "New: " + err.Error()
	}
	d, err := l.Allow(ctx, ratelimit.Request{Method: ratelimit.MethodToolsCall, Name: "search", UserID: "alice"})
	switch {
	case err != nil:
		return errLabel(err)
	case d.Allowed:
		return "allowed"
	default:
		return "rejected"
	}
}

// errLabel names the kind of an error in a few stable words.
func errLabel(err error) string {
	var ne net.Error
	var rerr redis.Error
	msg := err.Error()
	switch {
	case errors.Is(err, ErrCircuitOpen):
		return "circuit open"
	case strings.Contains(msg, "x509: certificate is valid for"), strings.Contains(msg, "x509: cannot validate certificate for"):
		return "x509: wrong name"
	case strings.Contains(msg, "x509: certificate signed by unknown authority"):
		return "x509: unknown authority"
	case errors.As(err, &rerr):
		label, _, _ := strings.Cut(rerr.Error(), " ")
		if label == "ERR" { // the code is generic: keep the message's head
			label, _, _ = strings.Cut(rerr.Error(), ":")
		}
		return "redis " + label
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	default:
		return "error: " + msg
	}
}

// keyTag is the hash tag of server tools/<name>'s keys.
func keyTag(name string) string { return "{tools:" + name + "}" }

// countKeys counts the keys of server tools/<name> in one database of a standalone server.
func countKeys(ctx context.Context, t *testing.T, addr string, db int, password, name string) int {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DB: db, Password: password, MaxRetries: -1})
	defer func() { _ = c.Close() }()
	keys, err := c.Keys(ctx, "*"+keyTag(name)+"*").Result()
	if err != nil {
		t.Fatalf("KEYS in db %d: %v", db, err)
	}
	return len(keys)
}

// commandCounter counts the script commands a client sends (a process hook: commands that
// reach the connection layer).
type commandCounter struct{ n atomic.Int64 }

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if strings.HasPrefix(cmd.Name(), "eval") || cmd.Name() == "script" {
				c.n.Add(1)
			}
		}
		return next(ctx, cmds)
	}
}

func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.HasPrefix(cmd.Name(), "eval") || cmd.Name() == "script" {
			c.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

// openT opens a store or fails the test, and closes it when the test ends.
func openT(t *testing.T, cfg *v1alpha1.ProxySessionStorage, url string, opt Options) *redisStore {
	t.Helper()
	s, err := Open(context.Background(), cfg, url, opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s.(*redisStore)
}
