// Package demo replays a small built-in traffic story through the real limiter on an
// embedded miniredis with virtual time: the main job of a fresh clone until scenario files
// replace it. Nothing to install, deterministic output.
package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// call is one MCP call of the story, at a virtual offset from its start.
type call struct {
	at   time.Duration
	user string
	tool string
}

// Config is the demo's rate limiting: 3 calls shared by everyone per 30 s, 1 per user per
// 30 s, and search at most twice a minute overall.
func Config() *v1alpha1.RateLimitConfig {
	b := func(n int32, d time.Duration) *v1alpha1.RateLimitBucket {
		return &v1alpha1.RateLimitBucket{MaxTokens: n, RefillPeriod: metav1.Duration{Duration: d}}
	}
	return &v1alpha1.RateLimitConfig{
		Shared:  b(3, 30*time.Second),
		PerUser: b(1, 30*time.Second),
		Tools:   []v1alpha1.ToolRateLimitConfig{{Name: "search", Shared: b(2, time.Minute)}},
	}
}

var story = []call{
	{0, "alice", "echo"},
	{0, "alice", "echo"}, // alice's own bucket is empty: rejected, shared untouched
	{0, "bob", "echo"},
	{0, "carol", "echo"},
	{0, "dave", "echo"}, // shared bucket empty
	{10 * time.Second, "dave", "echo"},
	{30 * time.Second, "alice", "search"},
	{30 * time.Second, "bob", "search"},
	{30 * time.Second, "carol", "search"}, // search's own bucket empty
	{60 * time.Second, "carol", "echo"},
}

// Run replays the story and writes a table of decisions to w.
func Run(ctx context.Context, w io.Writer) error {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		return fmt.Errorf("starting embedded Redis: %w", err)
	}
	defer mr.Close()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mr.SetTime(start)
	mr.ClockTTL(true)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer func() { _ = client.Close() }()

	l, err := ratelimit.New(client, "default", "demo", Config())
	if err != nil {
		return err
	}
	var out bytes.Buffer
	out.WriteString("Tollgate limiter demo: shared 3/30s, perUser 1/30s, tool search 2/min (embedded Redis, virtual time)\n")
	// Writes into out cannot fail; the one write to w is checked.
	tw := tabwriter.NewWriter(&out, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "TIME\tUSER\tTOOL\tDECISION\tLIMITED BY\tRETRY AFTER\tSHARED LEFT")
	admitted := 0
	for _, c := range story {
		mr.SetTime(start.Add(c.at))
		d, err := l.Allow(ctx, ratelimit.Request{Method: ratelimit.MethodToolsCall, Name: c.tool, UserID: c.user})
		if err != nil {
			return err
		}
		decision, by, retry := ratelimit.OutcomeAllowed, "-", "-"
		if d.Allowed {
			admitted++
		} else {
			decision, by, retry = ratelimit.OutcomeRejected, d.Rejected.String(), d.RetryAfter.String()
		}
		shared := "-"
		for _, b := range d.Buckets {
			if b.Kind == "" && b.Scope == ratelimit.ScopeShared {
				shared = fmt.Sprint(b.Remaining)
			}
		}
		_, _ = fmt.Fprintf(tw, "+%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.at, c.user, c.tool, decision, by, retry, shared)
	}
	_ = tw.Flush() // into a bytes.Buffer: cannot fail
	_, _ = fmt.Fprintf(&out, "%d of %d calls admitted. alice's per-user rejection left the shared bucket untouched, so bob and carol got in.\n", admitted, len(story))
	_, err = w.Write(out.Bytes())
	return err
}
