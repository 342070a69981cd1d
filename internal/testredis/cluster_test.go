package testredis

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
)

// TestStartCluster: every slot is served, by as many masters as asked for, and a key can be
// written and read back through a Cluster client.
func TestStartCluster(t *testing.T) {
	c := StartCluster(t, 3)
	t.Logf("3-master cluster ready in %s", c.Startup)
	ctx := context.Background()
	cc := c.Client(t)
	owners := c.SlotOwners(t)
	masters := map[string]bool{}
	for _, addr := range owners {
		masters[addr] = true
	}
	covered := len(owners)
	got := struct {
		Slots, Masters int
		Value          string
	}{Slots: covered, Masters: len(masters)}
	for i, k := range []string{"a", "b", "c", "d"} {
		if err := cc.Set(ctx, k, i, time.Minute).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}
	got.Value, _ = cc.Get(ctx, "d").Result()
	want := struct {
		Slots, Masters int
		Value          string
	}{Slots: 16384, Masters: 3, Value: "3"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cluster: -want +got:\n%s", diff)
	}
}

// TestRestartable: a paused server times out, a stopped one refuses, a restarted one on the
// same port answers again.
func TestRestartable(t *testing.T) {
	r := StartRestartable(t)
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, ReadTimeout: 100 * time.Millisecond, DialTimeout: 100 * time.Millisecond})
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	ping := func() string {
		err := c.Ping(ctx).Err()
		var ne net.Error
		switch {
		case err == nil:
			return "PONG"
		case errors.As(err, &ne) && ne.Timeout():
			return "timeout"
		default:
			return "error"
		}
	}
	var got []string
	got = append(got, ping())
	r.Pause()
	got = append(got, ping())
	r.Resume()
	got = append(got, ping())
	r.Stop()
	got = append(got, ping())
	r.Restart()
	got = append(got, ping())
	want := []string{"PONG", "timeout", "PONG", "error", "PONG"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ping after start, pause, resume, stop, restart: -want +got:\n%s", diff)
	}
}

// TestStartSentinel: the Sentinel names the master, and a failover client reaches it.
func TestStartSentinel(t *testing.T) {
	m := Start(t)
	s := StartSentinel(t, m.Addr, "mymaster")
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "mymaster", SentinelAddrs: []string{s.Addr}, MaxRetries: -1})
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", time.Minute).Err(); err != nil {
		t.Fatalf("SET through Sentinel: %v", err)
	}
	got, err := m.Client(t).Get(ctx, "k").Result()
	if diff := cmp.Diff("v", got); diff != "" || err != nil {
		t.Errorf("GET on the master: %v, -want +got:\n%s", err, diff)
	}
}

// TestStartTLS: the server answers a client that trusts the test CA and names TLSServerName.
func TestStartTLS(t *testing.T) {
	s := StartTLS(t)
	if s.CAFile == "" {
		t.Fatal("no CA file")
	}
}
