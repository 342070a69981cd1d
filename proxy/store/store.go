package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// Defaults of Options.
const (
	DefaultTimeout             = 100 * time.Millisecond
	DefaultBreakerFailures     = 5
	DefaultBreakerProbeEvery   = 500 * time.Millisecond
	DefaultMemorySweepInterval = 5 * time.Second
)

// Options tunes the store's client. The zero value takes every default.
type Options struct {
	// Timeout bounds each dial, read, write and wait for a pooled connection (default
	// 100ms). A context deadline that comes sooner wins.
	Timeout time.Duration
	// PoolSize is the connections per node (default: go-redis's, 10 per GOMAXPROCS; 5 per
	// GOMAXPROCS per Cluster node).
	PoolSize int
	// Breaker tunes the circuit breaker.
	Breaker BreakerOptions
	// OnStateChange is told of every breaker transition, with the states "closed" and
	// "open", for metrics and logs. It may be nil. It is called synchronously by the
	// call that changed the state, under the breaker's lock: it must be quick and must not
	// call the Store.
	OnStateChange func(from, to string)
	// MemorySweepInterval is how often the memory store removes expired keys (default 5s;
	// each decision also removes a few).
	MemorySweepInterval time.Duration
	// NoPipelining sends each script call in a round trip of its own. By default calls made
	// while several round trips are out share the next one (a pipeline; see combiner, and
	// docs/benchmarks.md for what it saves). The memory store never pipelines.
	NoPipelining bool
}

// BreakerOptions tunes the circuit breaker.
type BreakerOptions struct {
	// Failures is the number of consecutive failed calls that opens the breaker (default 5).
	Failures uint32
	// ProbeEvery is how often, while the breaker is open, a background PING checks whether
	// Redis answers again (default 500ms): the first answer closes it. No call of a caller is
	// ever the probe.
	ProbeEvery time.Duration
}

func (o Options) withDefaults() (Options, error) {
	switch {
	case o.Timeout < 0:
		return o, fmt.Errorf("options: Timeout %s is negative", o.Timeout)
	case o.PoolSize < 0:
		return o, fmt.Errorf("options: PoolSize %d is negative", o.PoolSize)
	case o.Breaker.ProbeEvery < 0:
		return o, fmt.Errorf("options: Breaker.ProbeEvery %s is negative", o.Breaker.ProbeEvery)
	case o.MemorySweepInterval < 0:
		return o, fmt.Errorf("options: MemorySweepInterval %s is negative", o.MemorySweepInterval)
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Breaker.Failures == 0 {
		o.Breaker.Failures = DefaultBreakerFailures
	}
	if o.Breaker.ProbeEvery == 0 {
		o.Breaker.ProbeEvery = DefaultBreakerProbeEvery
	}
	if o.MemorySweepInterval == 0 {
		o.MemorySweepInterval = DefaultMemorySweepInterval
	}
	return o, nil
}

// Store is what the limiter and the proxy's readiness need.
type Store interface {
	redis.Scripter
	// Ping checks that Redis answers (every master, on Cluster). It bypasses the breaker.
	Ping(ctx context.Context) error
	// Close closes the connections (and stops the embedded store).
	Close() error
}

// ErrCircuitOpen is the error of every Scripter call the breaker refuses: Redis failed too
// often recently, and the call was not sent.
var ErrCircuitOpen = errors.New("redis circuit breaker is open: call not sent")

// Environment variables that give credentials when no file (or URL userinfo) does.
const (
	EnvUsername = "REDIS_USERNAME"
	EnvPassword = "REDIS_PASSWORD"
)

// Open builds the store from the config; redisURL, when not empty, replaces it (the proxy's
// --redis flag; see the package documentation for the URL forms and what of cfg still
// applies). It does not wait for Redis: an unreachable Redis makes calls fail (and the
// breaker open), not Open. The memory store starts here.
func Open(ctx context.Context, cfg *v1alpha1.ProxySessionStorage, redisURL string, opt Options) (Store, error) {
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	var t *target
	if redisURL != "" {
		t, err = parseURL(redisURL, cfg)
	} else {
		t, err = fromConfig(cfg)
	}
	if err != nil {
		return nil, err
	}
	if t.kind == kindMemory {
		return openMemory(ctx, opt)
	}
	s := newStore(t.newClient(opt), opt)
	if !opt.NoPipelining {
		s.pipe = newCombiner(s.client)
	}
	return s, nil
}

type kind int

const (
	kindStandalone kind = iota
	kindCluster
	kindSentinel
	kindMemory
)

// target is where to connect and how, from a URL or the config.
type target struct {
	kind       kind
	addrs      []string // standalone: one; Cluster: seed nodes; Sentinel: the Sentinels
	masterName string
	db         int
	tls        *tls.Config // nil: plain TCP
	creds      credentials
}

// fromConfig builds the target of a sessionStorage block: its structure is checked by
// v1alpha1.ProxySessionStorage.Validate (also what the proxy's config loading and the operator
// run); the files it names are read here. Errors name the field.
func fromConfig(cfg *v1alpha1.ProxySessionStorage) (*target, error) {
	if cfg == nil {
		return nil, errors.New("sessionStorage: unset, and no Redis URL was given")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := &target{db: int(cfg.DB)}
	switch {
	case cfg.Provider == v1alpha1.SessionStorageMemory:
		return &target{kind: kindMemory}, nil
	case cfg.Address != "":
		t.kind, t.addrs = kindStandalone, []string{cfg.Address}
	case cfg.MasterName != "":
		t.kind, t.addrs, t.masterName = kindSentinel, cfg.Addresses, cfg.MasterName
	default:
		t.kind, t.addrs = kindCluster, cfg.Addresses
	}
	if cfg.TLS != nil {
		c, err := tlsConfig(cfg.TLS)
		if err != nil {
			return nil, err
		}
		t.tls = c
	}
	t.creds = credentials{
		usernameFile: cfg.UsernameFile,
		passwordFile: cfg.PasswordFile,
		username:     os.Getenv(EnvUsername),
		password:     os.Getenv(EnvPassword),
	}
	if err := t.creds.check(); err != nil {
		return nil, err
	}
	return t, nil
}

// tlsConfig builds the client TLS config of a tls block (nil: defaults).
func tlsConfig(c *v1alpha1.ProxyRedisTLS) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c == nil {
		return cfg, nil
	}
	cfg.ServerName = c.ServerName
	cfg.InsecureSkipVerify = c.InsecureSkipVerify
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("sessionStorage.tls.caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("sessionStorage.tls.caFile: %s holds no PEM certificate", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// clientOptions are the settings every client of the limiter shares: never retry a command
// (the script is not idempotent), one dial attempt (the default five add back-off to the
// short timeout), short timeouts, and the context's deadline honoured. Redirects (MOVED,
// ASK) are still followed on Cluster: the node did not run the script; other errors are not
// re-sent for scripts (see noRetryHook).
func clientOptions(opt Options) *redis.UniversalOptions {
	return &redis.UniversalOptions{
		MaxRetries:            -1,
		MaxRedirects:          3,
		DialerRetries:         1,
		DialTimeout:           opt.Timeout,
		ReadTimeout:           opt.Timeout,
		WriteTimeout:          opt.Timeout,
		PoolTimeout:           opt.Timeout,
		ContextTimeoutEnabled: true,
		PoolSize:              opt.PoolSize,
		// One pool for calls and pipelines: with a pipeline pool of its own (go-redis 9.23's
		// default), a failed dial to a hung Redis was tried again on the main pool, so a
		// pipelined call took twice Timeout.
		PipelinePoolSize: -1,
	}
}

// newClient builds the go-redis client: no retries, one dial attempt, short timeouts. One set
// of options serves every shape, so the three cannot drift apart.
func (t *target) newClient(opt Options) redis.UniversalClient {
	username, password, provider := t.creds.options()
	o := clientOptions(opt)
	o.Addrs, o.DB, o.MasterName = t.addrs, t.db, t.masterName
	o.Username, o.Password, o.CredentialsProviderContext = username, password, provider
	o.TLSConfig = t.tls
	var c redis.UniversalClient
	switch t.kind {
	case kindCluster:
		c = redis.NewClusterClient(o.Cluster())
	case kindSentinel:
		c = redis.NewFailoverClient(o.Failover())
	default:
		c = redis.NewClient(o.Simple())
	}
	c.AddHook(noRetryHook{})
	return c
}
