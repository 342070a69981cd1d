package store

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// TestCluster runs the limiter on a real 3-master Redis Cluster.
func TestCluster(t *testing.T) {
	cluster := testredis.StartCluster(t, 3, "--enable-debug-command", "local")
	t.Logf("3-master cluster ready in %s", cluster.Startup.Round(time.Millisecond))
	t.Setenv(EnvUsername, "")
	t.Setenv(EnvPassword, "")
	ctx := context.Background()
	a := cluster.Addrs

	t.Run("PipelinedDecisions", func(t *testing.T) {
		testPipelinedDecisions(t, "redis+cluster://"+strings.Join(a, ","), false)
	})

	t.Run("Forms", func(t *testing.T) {
		type args struct {
			cfg *v1alpha1.ProxySessionStorage
			url string
		}
		cases := map[string]struct {
			reason string
			args   args
		}{
			"URLCommaHosts": {
				reason: "redis+cluster:// with the seed nodes as a comma list.",
				args:   args{url: "redis+cluster://" + strings.Join(a, ",")},
			},
			"URLAddrParameters": {
				reason: "redis+cluster:// with go-redis's addr parameters.",
				args:   args{url: "redis+cluster://" + a[0] + "?addr=" + a[1] + "&addr=" + a[2]},
			},
			"URLOneSeed": {
				reason: "One seed node is enough: the client learns the others.",
				args:   args{url: "redis+cluster://" + a[2]},
			},
			"ConfigAddresses": {
				reason: "addresses without masterName are Cluster nodes.",
				args:   args{cfg: &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageRedis, Addresses: a}},
			},
		}
		for name, tc := range cases {
			t.Run(name, func(t *testing.T) {
				s := openT(t, tc.args.cfg, tc.args.url, Options{})
				if err := s.Ping(ctx); err != nil {
					t.Fatalf("%s\nPing: %v", tc.reason, err)
				}
				got, err := runDecisions(ctx, s, strings.ToLower(name))
				if err != nil {
					t.Fatalf("%s\nrunDecisions: %v", tc.reason, err)
				}
				if diff := cmp.Diff(decisionsWant, got); diff != "" {
					t.Errorf("%s\ndecisions: -want +got:\n%s", tc.reason, diff)
				}
			})
		}
	})

	t.Run("OneSlotPerServer", func(t *testing.T) {
		// Every key of one server is in one slot, so one master; another server's keys may be
		// on another master.
		var transitions []string
		s := openT(t, &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageRedis, Addresses: a}, "", Options{
			OnStateChange: func(from, to string) { transitions = append(transitions, from+" -> "+to) },
		})
		cc := cluster.Client(t)
		owner := cluster.SlotOwners(t)
		const first = "search-server"
		firstMaster := owner[tagSlot(ctx, t, cc, first)]
		second := ""
		for i := 0; second == ""; i++ {
			if name := fmt.Sprintf("other-server-%d", i); owner[tagSlot(ctx, t, cc, name)] != firstMaster {
				second = name
			}
		}
		const users = 10
		allowed := map[string]int{}
		for _, server := range []string{first, second} {
			l, err := ratelimit.New(s, "tools", server, limits)
			if err != nil {
				t.Fatal(err)
			}
			for u := range users {
				d, err := l.Allow(ctx, ratelimit.Request{Method: ratelimit.MethodToolsCall, Name: "search", UserID: fmt.Sprintf("user-%d", u)})
				if err != nil {
					t.Fatalf("%s: Allow: %v", server, err)
				}
				if d.Allowed {
					allowed[server]++
				}
			}
		}

		type placement struct {
			Keys    int
			Slots   []int64
			Masters []string
		}
		found := map[string]*placement{}
		for _, addr := range a {
			nc := cluster.NodeClient(t, addr)
			iter := nc.Scan(ctx, 0, "tollgate:rl:*", 1000).Iterator()
			for iter.Next(ctx) {
				key := iter.Val()
				slot, err := nc.ClusterKeySlot(ctx, key).Result()
				if err != nil {
					t.Fatalf("CLUSTER KEYSLOT %s: %v", key, err)
				}
				_, tag, _ := strings.Cut(key, "{")
				tag, _, _ = strings.Cut(tag, "}")
				p := found[tag]
				if p == nil {
					p = &placement{}
					found[tag] = p
				}
				p.Keys++
				if len(p.Slots) == 0 || p.Slots[len(p.Slots)-1] != slot {
					p.Slots = append(p.Slots, slot)
				}
				if len(p.Masters) == 0 || p.Masters[len(p.Masters)-1] != addr {
					p.Masters = append(p.Masters, addr)
				}
			}
			if err := iter.Err(); err != nil {
				t.Fatalf("SCAN %s: %v", addr, err)
			}
		}
		// Keys per server: shared, the tool's shared, and per user: perUser and the tool's.
		keys := 2 + 2*users
		got := map[string]any{
			"allowed":     allowed,
			"first":       *found["tools:"+first],
			"second":      *found["tools:"+second],
			"transitions": transitions,
		}
		want := map[string]any{
			"allowed":     map[string]int{first: users, second: users},
			"first":       placement{Keys: keys, Slots: []int64{tagSlot(ctx, t, cc, first)}, Masters: []string{firstMaster}},
			"second":      placement{Keys: keys, Slots: []int64{tagSlot(ctx, t, cc, second)}, Masters: []string{owner[tagSlot(ctx, t, cc, second)]}},
			"transitions": []string(nil),
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("keys of %s and %s: -want +got:\n%s", first, second, diff)
		}
		t.Logf("%s: slot %d on %s; %s: slot %d on %s", first, tagSlot(ctx, t, cc, first), firstMaster,
			second, tagSlot(ctx, t, cc, second), owner[tagSlot(ctx, t, cc, second)])

		// The control: one script over both servers' keys is refused, so the test above
		// would have seen a multi-slot key set. A CROSSSLOT reply is no breaker failure.
		err := s.Eval(ctx, "return 1", []string{"tollgate:rl:{tools:" + first + "}:shared", "tollgate:rl:{tools:" + second + "}:shared"}).Err()
		if diff := cmp.Diff("redis CROSSSLOT", errLabel(err)); diff != "" {
			t.Errorf("a script over two servers' keys: -want +got:\n%s", diff)
		}
	})

	t.Run("NoRetryAfterTimeout", func(t *testing.T) {
		testNoRetryAfterTimeout(ctx, t, cluster)
	})

	t.Run("RedirectsFollowed", func(t *testing.T) {
		testRedirectsFollowed(ctx, t, cluster)
	})
}

// testRedirectsFollowed: marking scripts NoRetry keeps MOVED and ASK redirects. The store
// learns the slot map, then a slot moves (MOVED) and another starts migrating (ASK); a
// script on a key of each still runs, once, on the new owner.
func testRedirectsFollowed(ctx context.Context, t *testing.T, cluster *testredis.Cluster) {
	s := openT(t, nil, "redis+cluster://"+strings.Join(cluster.Addrs, ","), Options{})
	cc := cluster.Client(t)
	if _, err := runDecisions(ctx, s, "redirect-warm-up"); err != nil { // loads the slot map
		t.Fatalf("warm-up: %v", err)
	}
	owner := cluster.SlotOwners(t)
	nodes := map[string]*redis.Client{}
	ids := map[string]string{}
	for _, addr := range cluster.Addrs {
		nodes[addr] = cluster.NodeClient(t, addr)
		id, err := nodes[addr].Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			t.Fatalf("CLUSTER MYID: %v", err)
		}
		ids[addr] = id
	}
	slotOf := func(key string) int64 {
		slot, err := cc.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT: %v", err)
		}
		return slot
	}
	other := func(addr string) string {
		for _, a := range cluster.Addrs {
			if a != addr {
				return a
			}
		}
		return ""
	}
	do := func(addr string, args ...any) {
		if err := nodes[addr].Do(ctx, args...).Err(); err != nil {
			t.Fatalf("%s %v: %v", addr, args, err)
		}
	}
	errorstat := func(addr, code string) int {
		info, err := nodes[addr].Info(ctx, "errorstats").Result()
		if err != nil {
			t.Fatalf("INFO errorstats: %v", err)
		}
		n := 0
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "errorstat_"+code+":count="); ok {
				_, _ = fmt.Sscan(v, &n)
			}
		}
		return n
	}
	// Loaded on every master first (ScriptLoad goes to each shard), so that no NOSCRIPT
	// fallback adds a second redirect.
	script := redis.NewScript("return redis.call('INCR', KEYS[1])")
	if err := script.Load(ctx, s).Err(); err != nil {
		t.Fatalf("SCRIPT LOAD: %v", err)
	}

	type result struct {
		Result    int64  // the script's reply: 1 if it ran once
		Redirects int    // MOVED or ASK replies of the old owner
		Value     string // the key on the new owner, once the slot is there
	}
	run := func(key, from, code string) result {
		before := errorstat(from, code)
		n, err := script.Run(ctx, s, []string{key}).Int64()
		if err != nil {
			t.Fatalf("script on %s after %s: %v", key, code, err)
		}
		return result{Result: n, Redirects: errorstat(from, code) - before}
	}
	moveSlot := func(slot int64, to string) {
		for _, addr := range append([]string{to}, cluster.Addrs...) {
			do(addr, "CLUSTER", "SETSLOT", slot, "NODE", ids[to])
		}
	}

	// MOVED: the slot now belongs to another master; the store's map is stale.
	moved := "{redirect-moved}n"
	slot := slotOf(moved)
	from, movedTo := owner[slot], other(owner[slot])
	moveSlot(slot, movedTo)
	gotMoved := run(moved, from, "MOVED")

	// ASK: the slot is migrating and the key is not on the old owner: ASKING, then the
	// script, on the importing node.
	asked := "{redirect-ask}n"
	slot = slotOf(asked)
	from, askTo := owner[slot], other(owner[slot])
	do(askTo, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[from])
	do(from, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[askTo])
	gotAsk := run(asked, from, "ASK")
	moveSlot(slot, askTo)

	gotMoved.Value, _ = nodes[movedTo].Get(ctx, moved).Result()
	gotAsk.Value, _ = nodes[askTo].Get(ctx, asked).Result()
	want := result{Result: 1, Redirects: 1, Value: "1"}
	if diff := cmp.Diff(map[string]result{"MOVED": want, "ASK": want}, map[string]result{"MOVED": gotMoved, "ASK": gotAsk}); diff != "" {
		t.Errorf("a script after a redirect: -want +got:\n%s", diff)
	}
}

// testNoRetryAfterTimeout: a script whose reply times out (the server sleeps in DEBUG SLEEP
// and runs the queued commands afterwards) runs once through the store, on a standalone
// server and on Cluster. The controls show what the store prevents: go-redis's standalone
// defaults (MaxRetries 3) and a Cluster client with MaxRetries -1 but go-redis's redirect
// loop both send it again, and Redis runs every copy.
func testNoRetryAfterTimeout(ctx context.Context, t *testing.T, cluster *testredis.Cluster) {
	std := testredis.Start(t, "--enable-debug-command", "local")
	const timeout = 50 * time.Millisecond
	script := redis.NewScript("return redis.call('INCR', KEYS[1])")
	const key = "{noretry}executions"
	clusterURL := "redis+cluster://" + strings.Join(cluster.Addrs, ",")

	cases := map[string]struct {
		reason   string
		client   func(t *testing.T) (redis.Scripter, redis.UniversalClient)
		wantOnce bool
	}{
		"StoreStandalone": {
			reason: "MaxRetries -1: one attempt.",
			client: func(t *testing.T) (redis.Scripter, redis.UniversalClient) {
				s := openT(t, nil, "redis://"+std.Addr, Options{Timeout: timeout})
				return s, s.client
			},
			wantOnce: true,
		},
		"StoreCluster": {
			reason: "Scripts are marked NoRetry: the redirect loop does not re-send them after a timeout.",
			client: func(t *testing.T) (redis.Scripter, redis.UniversalClient) {
				s := openT(t, nil, clusterURL, Options{Timeout: timeout})
				return s, s.client
			},
			wantOnce: true,
		},
		"GoRedisStandaloneDefaults": {
			reason: "The control: go-redis retries a timed-out command by default.",
			client: func(t *testing.T) (redis.Scripter, redis.UniversalClient) {
				c := redis.NewClient(&redis.Options{Addr: std.Addr, ReadTimeout: timeout})
				t.Cleanup(func() { _ = c.Close() })
				return c, c
			},
			wantOnce: false,
		},
		"GoRedisClusterMaxRetriesOff": {
			reason: "The control: MaxRetries -1 is not enough on Cluster; the redirect loop re-sends.",
			client: func(t *testing.T) (redis.Scripter, redis.UniversalClient) {
				c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs, MaxRetries: -1, ReadTimeout: timeout})
				t.Cleanup(func() { _ = c.Close() })
				return c, c
			},
			wantOnce: false,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			sc, uc := tc.client(t)
			node := nodeFor(ctx, t, uc, key)
			admin := redis.NewClient(&redis.Options{Addr: node.Options().Addr, MaxRetries: -1})
			defer func() { _ = admin.Close() }()

			// Warm up: the script is loaded, and the key's node has idle connections, so that
			// a re-send would not wait for a new connection's handshake.
			if err := script.Run(ctx, sc, []string{key}).Err(); err != nil {
				t.Fatalf("warm-up: %v", err)
			}
			var conns []*redis.Conn
			for range 4 {
				c := node.Conn()
				if err := c.Ping(ctx).Err(); err != nil {
					t.Fatalf("warm-up: %v", err)
				}
				conns = append(conns, c)
			}
			for _, c := range conns {
				_ = c.Close()
			}
			if err := admin.Del(ctx, key).Err(); err != nil {
				t.Fatal(err)
			}

			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := admin.Do(ctx, "DEBUG", "SLEEP", "0.6").Err(); err != nil {
					t.Errorf("DEBUG SLEEP: %v", err)
				}
			}()
			time.Sleep(50 * time.Millisecond)
			err := script.Run(ctx, sc, []string{key}).Err()
			wg.Wait()
			time.Sleep(50 * time.Millisecond)
			n, gerr := admin.Get(ctx, key).Int()
			if gerr != nil {
				t.Fatalf("GET: %v", gerr)
			}
			t.Logf("the script ran %d time(s); the caller saw %v", n, err)
			type result struct {
				Err  string
				Once bool
			}
			if diff := cmp.Diff(result{Err: "timeout", Once: tc.wantOnce}, result{Err: label(err), Once: n == 1}); diff != "" {
				t.Errorf("%s\nafter a timed-out script (ran %d times): -want +got:\n%s", tc.reason, n, diff)
			}
		})
	}
}

// nodeFor is the client of the node that serves key.
func nodeFor(ctx context.Context, t *testing.T, c redis.UniversalClient, key string) *redis.Client {
	t.Helper()
	switch c := c.(type) {
	case *redis.ClusterClient:
		n, err := c.MasterForKey(ctx, key)
		if err != nil {
			t.Fatalf("MasterForKey: %v", err)
		}
		return n
	case *redis.Client:
		return c
	}
	t.Fatalf("unexpected client %T", c)
	return nil
}

// tagSlot is the slot of server tools/<name>'s keys.
func tagSlot(ctx context.Context, t *testing.T, cc *redis.ClusterClient, name string) int64 {
	t.Helper()
	slot, err := cc.ClusterKeySlot(ctx, keyTag(name)).Result()
	if err != nil {
		t.Fatalf("CLUSTER KEYSLOT: %v", err)
	}
	return slot
}
