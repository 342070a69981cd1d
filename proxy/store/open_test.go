package store

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/testredis"
)

// TestOpen opens each URL and config form (Cluster: TestCluster; TLS: TestTLS; credentials:
// TestAuth) and runs the limiter through it: every bucket kind, a rejection, exact counts.
// The standalone server is also the master of the Sentinel, so the test checks which of its
// databases holds each case's keys.
func TestOpen(t *testing.T) {
	srv := testredis.Start(t)
	sentinel := testredis.StartSentinel(t, srv.Addr, "mymaster")
	t.Setenv(EnvUsername, "")
	t.Setenv(EnvPassword, "")

	type args struct {
		cfg *v1alpha1.ProxySessionStorage
		url string
	}
	type want struct {
		decisions []string
		db        int // the database of srv that holds the keys; -1: not on srv
	}
	cases := map[string]struct {
		reason string
		args   args
		want   want
	}{
		"URLStandalone": {
			reason: "redis://host:port is a standalone Redis, database 0.",
			args:   args{url: "redis://" + srv.Addr},
			want:   want{decisions: decisionsWant, db: 0},
		},
		"URLStandaloneDB": {
			reason: "redis://host:port/3 selects database 3.",
			args:   args{url: "redis://" + srv.Addr + "/3"},
			want:   want{decisions: decisionsWant, db: 3},
		},
		"URLOverridesConfig": {
			reason: "A URL replaces the config block (here a memory provider).",
			args:   args{cfg: &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageMemory}, url: "redis://" + srv.Addr + "/1"},
			want:   want{decisions: decisionsWant, db: 1},
		},
		"URLSentinel": {
			reason: "redis+sentinel://sentinel/master/db asks the Sentinel for the master.",
			args:   args{url: "redis+sentinel://" + sentinel.Addr + "/mymaster/2"},
			want:   want{decisions: decisionsWant, db: 2},
		},
		"URLMemory": {
			reason: "memory:// is the embedded store.",
			args:   args{url: "memory://"},
			want:   want{decisions: decisionsWant, db: -1},
		},
		"ConfigStandalone": {
			reason: "address is a standalone Redis.",
			args:   args{cfg: &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageRedis, Address: srv.Addr}},
			want:   want{decisions: decisionsWant, db: 0},
		},
		"ConfigStandaloneDB": {
			reason: "db selects the database.",
			args:   args{cfg: &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageRedis, Address: srv.Addr, DB: 5}},
			want:   want{decisions: decisionsWant, db: 5},
		},
		"ConfigSentinel": {
			reason: "addresses with masterName are Sentinels.",
			args: args{cfg: &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageRedis,
				Addresses: []string{sentinel.Addr}, MasterName: "mymaster", DB: 4}},
			want: want{decisions: decisionsWant, db: 4},
		},
		"ConfigMemory": {
			reason: "provider memory is the embedded store.",
			args:   args{cfg: &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageMemory, KeyPrefix: "tollgate"}},
			want:   want{decisions: decisionsWant, db: -1},
		},
	}
	ctx := context.Background()
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := openT(t, tc.args.cfg, tc.args.url, Options{})
			if err := s.Ping(ctx); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			server := strings.ToLower(name)
			got, err := runDecisions(ctx, s, server)
			if err != nil {
				t.Fatalf("%s\nrunDecisions: %v", tc.reason, err)
			}
			if diff := cmp.Diff(tc.want.decisions, got); diff != "" {
				t.Errorf("%s\ndecisions: -want +got:\n%s", tc.reason, diff)
			}
			gotDB := -1
			for db := range 6 {
				if countKeys(ctx, t, srv.Addr, db, "", server) > 0 {
					gotDB = db
				}
			}
			if diff := cmp.Diff(tc.want.db, gotDB); diff != "" {
				t.Errorf("%s\ndatabase holding the keys: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// TestOpenErrors: every invalid input fails Open with an error that names the field or the
// URL part, and never repeats a password.
func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	redisCfg := func(f func(*v1alpha1.ProxySessionStorage)) *v1alpha1.ProxySessionStorage {
		c := &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageRedis, Address: "127.0.0.1:6379"}
		f(c)
		return c
	}
	type args struct {
		cfg *v1alpha1.ProxySessionStorage
		url string
		opt Options
	}
	cases := map[string]struct {
		reason string
		args   args
		want   string
	}{
		"Nothing": {
			reason: "No config and no URL: nothing to open.",
			want:   "sessionStorage: unset, and no Redis URL was given",
		},
		"NoProvider": {
			reason: "provider is required.",
			args:   args{cfg: &v1alpha1.ProxySessionStorage{Address: "127.0.0.1:6379"}},
			want:   "sessionStorage.provider: required: redis or memory",
		},
		"UnknownProvider": {
			reason: "Only redis and memory exist.",
			args:   args{cfg: &v1alpha1.ProxySessionStorage{Provider: "etcd"}},
			want:   `sessionStorage.provider: "etcd" is not supported: want redis or memory`,
		},
		"MemoryWithAddress": {
			reason: "A memory provider with Redis fields is a mistake, not a choice.",
			args:   args{cfg: &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageMemory, Address: "127.0.0.1:6379"}},
			want:   "sessionStorage.address: must be unset with provider memory",
		},
		"MemoryWithPasswordFile": {
			reason: "Every Redis field is checked, not only the address.",
			args:   args{cfg: &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageMemory, PasswordFile: "/x"}},
			want:   "sessionStorage.passwordFile: must be unset with provider memory",
		},
		"RedisWithoutAddress": {
			reason: "provider redis needs somewhere to connect.",
			args:   args{cfg: &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageRedis}},
			want:   "sessionStorage.address: provider redis needs address (standalone) or addresses (Cluster, or Sentinels with masterName)",
		},
		"AddressAndAddresses": {
			reason: "A standalone address and Cluster/Sentinel addresses contradict each other.",
			args:   args{cfg: redisCfg(func(c *v1alpha1.ProxySessionStorage) { c.Addresses = []string{"127.0.0.1:7000"} })},
			want: "sessionStorage.address and sessionStorage.addresses: set only one " +
				"(address: a standalone Redis; addresses: Cluster nodes, or Sentinels with masterName)",
		},
		"MasterNameWithAddress": {
			reason: "Sentinel needs the Sentinels in addresses.",
			args:   args{cfg: redisCfg(func(c *v1alpha1.ProxySessionStorage) { c.MasterName = "mymaster" })},
			want:   "sessionStorage.masterName: needs addresses (the Sentinels), not address",
		},
		"AddressWithoutPort": {
			reason: "Addresses are host:port.",
			args:   args{cfg: redisCfg(func(c *v1alpha1.ProxySessionStorage) { c.Address = "redis" })},
			want:   `sessionStorage.address: "redis": missing port in address`,
		},
		"AddressesBadPort": {
			reason: "The index of the bad address is named.",
			args: args{cfg: &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageRedis,
				Addresses: []string{"127.0.0.1:7000", "127.0.0.1:70000"}}},
			want: `sessionStorage.addresses[1]: "127.0.0.1:70000": port "70000" is not a number from 1 to 65535`,
		},
		"NegativeDB": {
			reason: "Databases are numbered from 0.",
			args:   args{cfg: redisCfg(func(c *v1alpha1.ProxySessionStorage) { c.DB = -1 })},
			want:   "sessionStorage.db: -1 is negative",
		},
		"ClusterDB": {
			reason: "Redis Cluster has database 0 only.",
			args: args{cfg: &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageRedis,
				Addresses: []string{"127.0.0.1:7000"}, DB: 2}},
			want: "sessionStorage.db: 2, but Redis Cluster has only database 0",
		},
		"MissingPasswordFile": {
			reason: "A missing secret file fails at startup, not on every connection.",
			args:   args{cfg: redisCfg(func(c *v1alpha1.ProxySessionStorage) { c.PasswordFile = missing })},
			want:   "sessionStorage.passwordFile: open " + missing + ": no such file or directory",
		},
		"MissingUsernameFile": {
			reason: "Likewise the username file.",
			args:   args{cfg: redisCfg(func(c *v1alpha1.ProxySessionStorage) { c.UsernameFile = missing })},
			want:   "sessionStorage.usernameFile: open " + missing + ": no such file or directory",
		},
		"MissingCAFile": {
			reason: "The CA bundle is read at Open.",
			args:   args{cfg: redisCfg(func(c *v1alpha1.ProxySessionStorage) { c.TLS = &v1alpha1.ProxyRedisTLS{CAFile: missing} })},
			want:   "sessionStorage.tls.caFile: open " + missing + ": no such file or directory",
		},
		"CAFileNotPEM": {
			reason: "A CA file without a certificate is refused.",
			args:   args{cfg: redisCfg(func(c *v1alpha1.ProxySessionStorage) { c.TLS = &v1alpha1.ProxyRedisTLS{CAFile: notPEM} })},
			want:   "sessionStorage.tls.caFile: " + notPEM + " holds no PEM certificate",
		},
		"URLNoScheme": {
			reason: "host:port alone is not a URL.",
			args:   args{url: "127.0.0.1:6379"},
			want:   "redis URL: no scheme: want " + urlForms,
		},
		"URLBadScheme": {
			reason: "Only the documented schemes.",
			args:   args{url: "http://127.0.0.1:6379"},
			want:   `redis URL scheme "http": want ` + urlForms,
		},
		"URLBadVariant": {
			reason: "Only +cluster and +sentinel.",
			args:   args{url: "redis+ring://127.0.0.1:6379"},
			want:   `redis URL scheme "redis+ring": want ` + urlForms,
		},
		"URLParseErrorHidesPassword": {
			reason: "A URL that does not parse is not repeated: it may hold a password.",
			args:   args{url: "redis://user:s3cret@127.0.0.1:port"},
			want:   `redis URL: invalid port ":port" after host`,
		},
		"URLStandaloneTwoHosts": {
			reason: "Several hosts need a Cluster or Sentinel scheme.",
			args:   args{url: "redis://127.0.0.1:7000,127.0.0.1:7001"},
			want:   `redis URL host "127.0.0.1:7000,127.0.0.1:7001": several addresses need redis+cluster:// or redis+sentinel://`,
		},
		"URLBadDB": {
			reason: "The path of a standalone URL is the database number.",
			args:   args{url: "redis://127.0.0.1:6379/zero"},
			want:   `redis URL path "/zero": the database must be a number >= 0`,
		},
		"URLDeepPath": {
			reason: "One path segment only.",
			args:   args{url: "redis://127.0.0.1:6379/1/2"},
			want:   `redis URL path "/1/2": the database must be a number >= 0`,
		},
		"URLRetriesParameter": {
			reason: "go-redis query parameters are refused: retries must stay off.",
			args:   args{url: "redis://127.0.0.1:6379?max_retries=3"},
			want: `redis URL query parameter "max_retries": not supported (timeouts, pool size and the breaker are the proxy's options, ` +
				"and retries are always off; only redis+cluster and redis+sentinel take addr)",
		},
		"URLStandaloneAddr": {
			reason: "addr is for Cluster and Sentinel URLs.",
			args:   args{url: "redis://127.0.0.1:6379?addr=127.0.0.1:6380"},
			want: `redis URL query parameter "addr": not supported (timeouts, pool size and the breaker are the proxy's options, ` +
				"and retries are always off; only redis+cluster and redis+sentinel take addr)",
		},
		"URLClusterPath": {
			reason: "A Cluster URL has no database.",
			args:   args{url: "redis+cluster://127.0.0.1:7000/1"},
			want:   `redis URL path "/1": Redis Cluster has only database 0: drop the path`,
		},
		"URLClusterBadAddr": {
			reason: "addr parameters are host:port.",
			args:   args{url: "redis+cluster://127.0.0.1:7000?addr=node2"},
			want:   `redis URL addr parameter: "node2": missing port in address`,
		},
		"URLClusterHostWithoutPort": {
			reason: "Cluster hosts need a port.",
			args:   args{url: "redis+cluster://node2,127.0.0.1:7000"},
			want:   `redis URL host: "node2": missing port in address`,
		},
		"URLClusterNoHost": {
			reason: "A Cluster URL needs a node.",
			args:   args{url: "redis+cluster://"},
			want:   "redis URL host: redis+cluster:// needs at least one host:port",
		},
		"URLSentinelWithoutMasterName": {
			reason: "Sentinel without masterName: the path must name the master set.",
			args:   args{url: "redis+sentinel://127.0.0.1:26379"},
			want:   "redis URL path: the Sentinel master name is missing: want redis+sentinel://host:port[,host:port…]/masterName[/db]",
		},
		"URLSentinelBadDB": {
			reason: "The second path segment is the database.",
			args:   args{url: "rediss+sentinel://127.0.0.1:26379/mymaster/x"},
			want:   `redis URL path "/mymaster/x": the database must be a number >= 0`,
		},
		"URLSentinelDeepPath": {
			reason: "At most master and database.",
			args:   args{url: "redis+sentinel://127.0.0.1:26379/mymaster/1/2"},
			want:   `redis URL path "/mymaster/1/2": want /masterName or /masterName/db`,
		},
		"URLMemoryWithHost": {
			reason: "memory:// is the whole URL.",
			args:   args{url: "memory://localhost"},
			want:   "redis URL: memory:// takes no user, host, path or query",
		},
		"URLRedissMissingCA": {
			reason: "A rediss URL takes the config's tls block, and its CA file must exist.",
			args: args{url: "rediss://127.0.0.1:6379", cfg: &v1alpha1.ProxySessionStorage{
				Provider: v1alpha1.SessionStorageMemory, TLS: &v1alpha1.ProxyRedisTLS{CAFile: missing}}},
			want: "sessionStorage.tls.caFile: open " + missing + ": no such file or directory",
		},
		"NegativeTimeout": {
			reason: "Options are checked too.",
			args:   args{url: "memory://", opt: Options{Timeout: -time.Second}},
			want:   "options: Timeout -1s is negative",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s, err := Open(context.Background(), tc.args.cfg, tc.args.url, tc.args.opt)
			if err == nil {
				_ = s.Close()
				t.Fatalf("%s\nOpen: no error, want %q", tc.reason, tc.want)
			}
			if diff := cmp.Diff(tc.want, err.Error()); diff != "" {
				t.Errorf("%s\nOpen error: -want +got:\n%s", tc.reason, diff)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("%s\nthe error repeats the password: %v", tc.reason, err)
			}
		})
	}
}

// TestAuth: credentials from files, from the environment and from the URL, and which wins.
func TestAuth(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	admin := requirePass(ctx, t, srv.Addr, "default-pw")
	if err := admin.Do(ctx, "ACL", "SETUSER", "limiter", "on", ">limiter-pw", "~*", "+@all").Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	defaultPW := file("default-pw", "default-pw\n")
	crlfPW := file("crlf-pw", "default-pw\r\n")
	user := file("user", "limiter\n")
	userPW := file("user-pw", "limiter-pw")
	wrongPW := file("wrong-pw", "nope\n")
	cfg := func(usernameFile, passwordFile string) *v1alpha1.ProxySessionStorage {
		return &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageRedis, Address: srv.Addr,
			UsernameFile: usernameFile, PasswordFile: passwordFile}
	}
	type args struct {
		cfg     *v1alpha1.ProxySessionStorage
		url     string
		envUser string
		envPW   string
	}
	cases := map[string]struct {
		reason string
		args   args
		want   string
	}{
		"PasswordFile":         {reason: "passwordFile authenticates the default user; its trailing newline is not part of it.", args: args{cfg: cfg("", defaultPW)}, want: "allowed"},
		"PasswordFileCRLF":     {reason: "A trailing \\r\\n is removed too.", args: args{cfg: cfg("", crlfPW)}, want: "allowed"},
		"UsernameAndPassword":  {reason: "usernameFile and passwordFile authenticate an ACL user.", args: args{cfg: cfg(user, userPW)}, want: "allowed"},
		"WrongPasswordFile":    {reason: "A wrong password fails the decision.", args: args{cfg: cfg("", wrongPW)}, want: "redis WRONGPASS"},
		"NoCredentials":        {reason: "Without credentials Redis refuses: NOAUTH.", args: args{cfg: cfg("", "")}, want: "redis NOAUTH"},
		"EnvPassword":          {reason: "REDIS_PASSWORD is the fallback when no file is given.", args: args{cfg: cfg("", ""), envPW: "default-pw"}, want: "allowed"},
		"EnvUserAndPassword":   {reason: "REDIS_USERNAME too.", args: args{cfg: cfg("", ""), envUser: "limiter", envPW: "limiter-pw"}, want: "allowed"},
		"FileWinsOverEnv":      {reason: "A file wins over the environment.", args: args{cfg: cfg("", defaultPW), envPW: "nope"}, want: "allowed"},
		"EnvUserWithFilePW":    {reason: "Each of username and password falls back on its own.", args: args{cfg: cfg("", userPW), envUser: "limiter"}, want: "allowed"},
		"URLPassword":          {reason: "A password in the URL (local use).", args: args{url: "redis://:default-pw@" + srv.Addr}, want: "allowed"},
		"URLUserAndPassword":   {reason: "User and password in the URL.", args: args{url: "redis://limiter:limiter-pw@" + srv.Addr}, want: "allowed"},
		"URLWinsOverEnv":       {reason: "The URL's userinfo wins over the environment.", args: args{url: "redis://:default-pw@" + srv.Addr, envPW: "nope"}, want: "allowed"},
		"URLEnvFallback":       {reason: "A URL without userinfo takes the environment.", args: args{url: "redis://" + srv.Addr, envUser: "limiter", envPW: "limiter-pw"}, want: "allowed"},
		"URLIgnoresConfigFile": {reason: "A URL replaces the config's credentials files.", args: args{url: "redis://" + srv.Addr, cfg: cfg("", defaultPW)}, want: "redis NOAUTH"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Setenv(EnvUsername, tc.args.envUser)
			t.Setenv(EnvPassword, tc.args.envPW)
			s := openT(t, tc.args.cfg, tc.args.url, Options{})
			if diff := cmp.Diff(tc.want, allowOnce(ctx, s, strings.ToLower(name))); diff != "" {
				t.Errorf("%s\ndecision: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// TestPasswordFileRotation: a rotated password file is used by the next new connection,
// without reopening the store.
func TestPasswordFileRotation(t *testing.T) {
	t.Setenv(EnvUsername, "")
	t.Setenv(EnvPassword, "")
	srv := testredis.Start(t)
	ctx := context.Background()
	admin := requirePass(ctx, t, srv.Addr, "first")
	pwFile := filepath.Join(t.TempDir(), "password")
	write := func(pw string) { // as the kubelet does: a new file swapped in
		tmp := pwFile + ".new"
		if err := os.WriteFile(tmp, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, pwFile); err != nil {
			t.Fatal(err)
		}
	}
	write("first")
	s := openT(t, &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageRedis, Address: srv.Addr, PasswordFile: pwFile}, "", Options{})

	var got []string
	got = append(got, "first password: "+allowOnce(ctx, s, "rotation"))
	// Rotate on the server, and drop the store's connections so that the next call needs a
	// new one (Redis keeps already authenticated connections).
	if err := admin.ConfigSet(ctx, "requirepass", "second").Err(); err != nil {
		t.Fatalf("CONFIG SET requirepass: %v", err)
	}
	if err := admin.ClientKillByFilter(ctx, "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		t.Fatalf("CLIENT KILL: %v", err)
	}
	_ = s.Ping(ctx) // may meet the killed connection (no retries): that is not under test
	got = append(got, "server rotated, file not yet: "+allowOnce(ctx, s, "rotation"))
	write("second")
	got = append(got, "file rotated: "+allowOnce(ctx, s, "rotation"))
	want := []string{
		"first password: allowed",
		"server rotated, file not yet: redis WRONGPASS",
		"file rotated: allowed",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decisions around a password rotation: -want +got:\n%s", diff)
	}
}

// TestTLS: rediss URLs and the tls block, with the CA file, the server name and
// insecureSkipVerify; and that verification is on.
func TestTLS(t *testing.T) {
	srv := testredis.StartTLS(t)
	t.Setenv(EnvUsername, "")
	t.Setenv(EnvPassword, "")
	ctx := context.Background()
	withTLS := func(tls *v1alpha1.ProxyRedisTLS) *v1alpha1.ProxySessionStorage {
		return &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageRedis, Address: srv.Addr, TLS: tls}
	}
	type args struct {
		cfg *v1alpha1.ProxySessionStorage
		url string
	}
	cases := map[string]struct {
		reason string
		args   args
		want   string
	}{
		"CAFileAndServerName": {
			reason: "The test CA and the certificate's name verify the server.",
			args:   args{cfg: withTLS(&v1alpha1.ProxyRedisTLS{CAFile: srv.CAFile, ServerName: testredis.TLSServerName})},
			want:   "allowed",
		},
		"InsecureSkipVerify": {
			reason: "insecureSkipVerify accepts any certificate (tests only).",
			args:   args{cfg: withTLS(&v1alpha1.ProxyRedisTLS{InsecureSkipVerify: true})},
			want:   "allowed",
		},
		"RedissURLWithConfigTLS": {
			reason: "A rediss URL uses the config's tls block for the CA and the server name.",
			args: args{url: "rediss://" + srv.Addr, cfg: &v1alpha1.ProxySessionStorage{Provider: v1alpha1.SessionStorageMemory,
				TLS: &v1alpha1.ProxyRedisTLS{CAFile: srv.CAFile, ServerName: testredis.TLSServerName}}},
			want: "allowed",
		},
		"WrongServerName": {
			reason: "Without serverName the dialled host (127.0.0.1) is checked, and the certificate does not name it.",
			args:   args{cfg: withTLS(&v1alpha1.ProxyRedisTLS{CAFile: srv.CAFile})},
			want:   "x509: wrong name",
		},
		"SystemRoots": {
			reason: "Without caFile the system roots apply, and they do not hold the test CA.",
			args:   args{cfg: withTLS(&v1alpha1.ProxyRedisTLS{ServerName: testredis.TLSServerName})},
			want:   "x509: unknown authority",
		},
		"RedissURLVerifies": {
			reason: "A rediss URL without a tls block verifies the dialled host, which the certificate does not name.",
			args:   args{url: "rediss://" + srv.Addr},
			want:   "x509: wrong name",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := openT(t, tc.args.cfg, tc.args.url, Options{Timeout: time.Second})
			if diff := cmp.Diff(tc.want, allowOnce(ctx, s, strings.ToLower(name))); diff != "" {
				t.Errorf("%s\ndecision: -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// requirePass sets the server's password (testredis.Start waits for a PONG, so the server
// starts without one) and returns an admin client that uses it.
func requirePass(ctx context.Context, t *testing.T, addr, password string) *redis.Client {
	t.Helper()
	plain := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer func() { _ = plain.Close() }()
	if err := plain.ConfigSet(ctx, "requirepass", password).Err(); err != nil {
		t.Fatalf("CONFIG SET requirepass: %v", err)
	}
	admin := redis.NewClient(&redis.Options{Addr: addr, Password: password, MaxRetries: -1})
	t.Cleanup(func() { _ = admin.Close() })
	return admin
}
