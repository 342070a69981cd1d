package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tollgate-dev/tollgate/internal/testredis"
	"github.com/tollgate-dev/tollgate/internal/testupstream"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// logBuffer collects a proxy's log lines (written from many goroutines).
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func writeKey(t *testing.T, path, key string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // as a Secret volume swaps its files
		t.Fatal(err)
	}
}

const privacyConfig = `
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: privacy, name: %s}
upstream: {url: %q}
auth: {header: {name: X-User}}
sessionStorage: {provider: redis, address: %q, userHashKeyFile: %q, timeout: 2s}
rateLimiting:
  failurePolicy: Deny
  perUser: {maxTokens: 5, refillPeriod: 1h}
  tools: [{name: search, perUser: {maxTokens: 1, refillPeriod: 1h}}]
`

// TestUserIDsStayPrivate is the audit of docs/privacy.md: a user with a recognisable id calls
// through a Redis-backed proxy (admitted, limited, a batch that can never be admitted), and
// the id appears in none of what the proxy keeps or shows: Redis keys and values, the
// decision log, the log lines (debug level), /metrics, the 429 and its headers. Her keyed
// pseudonym appears instead, the same one `proxy pseudonym` prints.
func TestUserIDsStayPrivate(t *testing.T) {
	const id = "alice.private@example.com"
	up := testupstream.StartGo(t, testupstream.GoOptions{})
	redisSrv := testredis.Start(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	writeKey(t, keyFile, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
	logPath := filepath.Join(dir, "decisions.jsonl")
	var logs logBuffer
	base, ops := startProxy(t, fmt.Sprintf(privacyConfig, "audit", up.Endpoint(), redisSrv.Addr, keyFile), func(s *Settings) {
		s.DecisionLog = logPath
		s.Log = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	alice := newMCPClient(t, base, map[string]string{"X-User": id})
	alice.initialize("/mcp")
	var shown []string // what the client was shown
	for i, want := range []int{http.StatusOK, http.StatusTooManyRequests} {
		r := alice.callTool("/mcp", "search")
		if r.Status != want {
			t.Fatalf("call %d: %d, want %d", i, r.Status, want)
		}
		shown = append(shown, r.Body, fmt.Sprint(r.Header))
	}
	// Never admissible: 3 calls in one batch against a bucket of 1 ("request can never be
	// admitted" is logged with the user).
	call := `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"search","arguments":{"text":"x"}}}`
	r := alice.post("/mcp", "["+fmt.Sprintf(call, 101)+","+fmt.Sprintf(call, 102)+","+fmt.Sprintf(call, 103)+"]")
	shown = append(shown, r.Body, fmt.Sprint(r.Header))

	pseudonym := ratelimit.HashUser([]byte("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"), id)
	var out, errOut bytes.Buffer
	if code := Pseudonym([]string{"--key-file", keyFile, id}, nil, &out, &errOut); code != 0 || strings.TrimSpace(out.String()) != pseudonym {
		t.Errorf("proxy pseudonym: %d %q %s, want %s", code, out.String(), errOut.String(), pseudonym)
	}

	rc := redisSrv.Client(t)
	keys, err := rc.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var redisDump strings.Builder
	for _, k := range keys {
		v, _ := rc.Get(context.Background(), k).Result()
		fmt.Fprintf(&redisDump, "%s = %s\n", k, v)
	}
	decisions, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	places := map[string]string{
		"Redis keys and values": redisDump.String(),
		"the decision log":      string(decisions),
		"the log lines":         logs.String(),
		"/metrics":              get(t, ops+"/metrics"),
		"the responses":         strings.Join(shown, "\n"),
	}
	// The local part alone is an id too (a gateway may send it); matched case-insensitively.
	for where, text := range places {
		for _, needle := range []string{id, "alice.private"} {
			if strings.Contains(strings.ToLower(text), needle) {
				t.Errorf("%s carry the user id %q:\n%.2000s", where, needle, text)
			}
		}
	}
	// Not vacuous: the pseudonym is where the id would otherwise be.
	for _, where := range []string{"Redis keys and values", "the decision log", "the log lines"} {
		if !strings.Contains(places[where], pseudonym) {
			t.Errorf("%s do not name the user by her pseudonym %s:\n%.2000s", where, pseudonym, places[where])
		}
	}
	if n := up.Executed(t, testupstream.KeySearch); n != 1 {
		t.Errorf("the upstream executed search %d times, want 1", n)
	}
}

// TestUserHashKeyRotation: the key names every per-user bucket, so a changed key file is
// refused like any reload that would rename buckets (logged, counted; the exhausted user
// stays exhausted), a second replica reading the same key agrees on her pseudonym (her
// bucket is spent there too), and a rotation is a restart on the new key: her buckets start
// full once, which is the documented cost.
func TestUserHashKeyRotation(t *testing.T) {
	up := testupstream.StartGo(t, testupstream.GoOptions{})
	redisSrv := testredis.Start(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	const k1, k2 = "first key, at least 16 bytes", "second key, at least 16 bytes"
	writeKey(t, keyFile, k1)
	cfg := fmt.Sprintf(privacyConfig, "rotation", up.Endpoint(), redisSrv.Addr, keyFile)
	var logs logBuffer
	base, ops := startProxy(t, cfg, func(s *Settings) {
		s.ReloadInterval = 20 * time.Millisecond
		s.Log = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	call := func(base string) int {
		c := newMCPClient(t, base, map[string]string{"X-User": "alice"})
		c.initialize("/mcp")
		return c.callTool("/mcp", "search").Status
	}
	if st := []int{call(base), call(base)}; !cmp.Equal(st, []int{200, 429}) {
		t.Fatalf("perUser 1: %v, want [200 429]", st)
	}

	type result struct {
		Refused         float64 // tollgate_config_reloads_total{result="refused"}
		Logged          bool    // the refusal is in the log
		SameProcess     int     // alice on the running proxy after the key file changed
		ReplicaSameKey  int     // alice on a second replica started with the old key
		RolledToNewKey  int     // alice on a proxy started with the new key (the roll)
		RolledAgain     int     // and once more there: the new key's bucket is hers now
		BackToRunning   bool    // the file holding the running key again is logged
		RefusedAfterAll float64 // no further refusal for the return
	}
	writeKey(t, keyFile, k2)
	waitUntil(t, "the changed key file to be refused", func() bool {
		return metricValue(t, ops, `tollgate_config_reloads_total{result="refused"}`) == 1
	})
	var got result
	got.Refused = metricValue(t, ops, `tollgate_config_reloads_total{result="refused"}`)
	got.Logged = strings.Contains(logs.String(), "user-hash key file changed: refused")
	got.SameProcess = call(base)

	oldKey := filepath.Join(dir, "old-key")
	writeKey(t, oldKey, k1)
	replica, _ := startProxy(t, fmt.Sprintf(privacyConfig, "rotation", up.Endpoint(), redisSrv.Addr, oldKey))
	got.ReplicaSameKey = call(replica)
	rolled, _ := startProxy(t, cfg) // keyFile holds k2 now
	got.RolledToNewKey = call(rolled)
	got.RolledAgain = call(rolled)

	writeKey(t, keyFile, k1)
	waitUntil(t, "the return to the running key to be logged", func() bool {
		return strings.Contains(logs.String(), "holds the running key again")
	})
	got.BackToRunning = true
	got.RefusedAfterAll = metricValue(t, ops, `tollgate_config_reloads_total{result="refused"}`)

	want := result{Refused: 1, Logged: true, SameProcess: 429, ReplicaSameKey: 429, RolledToNewKey: 200, RolledAgain: 429, BackToRunning: true, RefusedAfterAll: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("-want +got:\n%s", diff)
	}
}

// TestUserHashKeyWithoutFile: outside a cluster, with no key file, the proxy makes a random
// key per process and says so (not the key); pseudonyms then differ between processes and
// are never the library's fixed, public one. A key file too short to be secret is refused.
func TestUserHashKeyWithoutFile(t *testing.T) {
	up := testupstream.StartGo(t, testupstream.GoOptions{})
	cfg := fmt.Sprintf(`
apiVersion: tollgate.dev/v1alpha1
kind: ProxyConfig
server: {namespace: privacy, name: laptop}
upstream: {url: %q}
auth: {header: {name: X-User}}
sessionStorage: {provider: memory}
rateLimiting:
  perUser: {maxTokens: 5, refillPeriod: 1h}
`, up.Endpoint())
	pseudonyms := map[string]bool{}
	for i := range 2 {
		var logs logBuffer
		logPath := filepath.Join(t.TempDir(), "decisions.jsonl")
		base, _ := startProxy(t, cfg, func(s *Settings) {
			s.DecisionLog = logPath
			s.Log = slog.New(slog.NewJSONHandler(&logs, nil))
		})
		c := newMCPClient(t, base, map[string]string{"X-User": "alice"})
		c.initialize("/mcp")
		if st := c.callTool("/mcp", "search").Status; st != http.StatusOK {
			t.Fatalf("process %d: %d", i, st)
		}
		if n := strings.Count(logs.String(), "user ids pseudonymised with a random per-process key"); n != 1 {
			t.Errorf("process %d logged the random key %d times, want once:\n%s", i, n, logs.String())
		}
		b, err := os.ReadFile(logPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{ratelimit.HashUser(nil, "alice")} {
			if strings.Contains(string(b), p) {
				t.Errorf("process %d pseudonymised alice with the fixed public key", i)
			}
		}
		_, rest, _ := strings.Cut(string(b), `"tools/call","name":"search","user":"`)
		p, _, _ := strings.Cut(rest, `"`)
		pseudonyms[p] = true
	}
	if len(pseudonyms) != 2 {
		t.Errorf("two processes without a key file gave alice %d pseudonyms, want 2 (a random key each): %v", len(pseudonyms), pseudonyms)
	}

	short := filepath.Join(t.TempDir(), "key")
	writeKey(t, short, "k1")
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(cfg, "{provider: memory}", fmt.Sprintf("{provider: memory, userHashKeyFile: %q}", short), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Run(context.Background(), Settings{ConfigPath: path, Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "want at least 16") {
		t.Errorf("a 2-byte key file: %v, want a refusal", err)
	}
}

// TestPseudonym checks `proxy pseudonym`: the proxy's pseudonym of each id (arguments or
// standard input), or the SCAN pattern of the user's keys on a server; usage and key errors.
func TestPseudonym(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	writeKey(t, keyFile, "0123456789abcdef0123456789abcdef")
	key := []byte("0123456789abcdef0123456789abcdef")
	short := filepath.Join(dir, "short")
	writeKey(t, short, "short")
	type want struct {
		Code   int
		Stdout string
	}
	cases := map[string]struct {
		reason string
		args   []string
		stdin  string
		want   want
	}{
		"Args": {
			reason: "one pseudonym per id, as the proxy computes it",
			args:   []string{"--key-file", keyFile, "alice", "bob"},
			want:   want{Stdout: ratelimit.HashUser(key, "alice") + "\n" + ratelimit.HashUser(key, "bob") + "\n"},
		},
		"Stdin": {
			reason: "without arguments, ids are read one per line (out of the shell history)",
			args:   []string{"--key-file", keyFile},
			stdin:  "alice\r\n\nbob\n",
			want:   want{Stdout: ratelimit.HashUser(key, "alice") + "\n" + ratelimit.HashUser(key, "bob") + "\n"},
		},
		"Server": {
			reason: "with --server, the pattern of the user's keys",
			args:   []string{"--key-file", keyFile, "--server", "tools/search", "--key-prefix", "tg", "alice"},
			want:   want{Stdout: "tg:rl:{tools:search}:*:" + ratelimit.HashUser(key, "alice") + "\n"},
		},
		"DefaultPrefix": {
			reason: "the default key prefix",
			args:   []string{"--key-file", keyFile, "--server", "tools/search", "alice"},
			want:   want{Stdout: "tollgate:rl:{tools:search}:*:" + ratelimit.HashUser(key, "alice") + "\n"},
		},
		"NoKeyFile": {
			reason: "the key file is required",
			args:   []string{"alice"},
			want:   want{Code: 2},
		},
		"BadServer": {
			reason: "--server is NAMESPACE/NAME",
			args:   []string{"--key-file", keyFile, "--server", "search", "alice"},
			want:   want{Code: 2},
		},
		"ShortKey": {
			reason: "a key the proxy would refuse is refused here too",
			args:   []string{"--key-file", short, "alice"},
			want:   want{Code: 1},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			got := want{Code: Pseudonym(tc.args, strings.NewReader(tc.stdin), &out, &errOut), Stdout: out.String()}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s: -want +got:\n%s\nstderr: %s", tc.reason, diff, errOut.String())
			}
		})
	}
}
