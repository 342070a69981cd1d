// Package app assembles the proxy from its config: store, limiter, identity, request path,
// metrics and health endpoints, and the config watcher. main only parses flags.
package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/auth"
	"github.com/tollgate-dev/tollgate/proxy/config"
	"github.com/tollgate-dev/tollgate/proxy/enforce"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/proxy/route"
	"github.com/tollgate-dev/tollgate/proxy/store"
)

// Settings are the proxy's flags.
type Settings struct {
	ConfigPath    string // --config
	Listen        string // --listen, default :8080
	MetricsListen string // --metrics-listen, default :9090 (metrics, /healthz, /readyz)
	RedisURL      string // --redis: overrides sessionStorage (redis://, rediss://, memory://)
	DecisionLog   string // --decision-log: a JSON-lines file, appended to
	EnablePprof   bool   // --enable-pprof: /debug/pprof on the metrics listener
	NoPipelining  bool   // --redis-pipelining=false: one Redis round trip per decision
	// DenyCacheEntries bounds the deny cache (--deny-cache: DefaultDenyCacheEntries); 0: off.
	DenyCacheEntries int
	// NoTokenCache turns off the OIDC verified-token cache (--token-cache=false): every
	// request's token is verified again.
	NoTokenCache   bool
	ReloadInterval time.Duration // how often the config file is checked; default 2s
	ShutdownGrace  time.Duration // how long in-flight requests may finish; default 30s
	Log            *slog.Logger
	// Ready, when set, is called with the bound addresses once both listeners accept.
	Ready func(listen, metrics net.Addr)
}

// DefaultDenyCacheEntries bounds the deny cache of --deny-cache: bucket bounds of about 150
// bytes each, so at most about 15 MB however many hostile users flood the proxy.
const DefaultDenyCacheEntries = ratelimit.DefaultDenyCacheEntries

// Run serves until ctx ends, then shuts down gracefully.
func Run(ctx context.Context, s Settings) error {
	if s.Listen == "" {
		s.Listen = ":8080"
	}
	if s.MetricsListen == "" {
		s.MetricsListen = ":9090"
	}
	if s.ReloadInterval <= 0 {
		s.ReloadInterval = 2 * time.Second
	}
	if s.ShutdownGrace <= 0 {
		s.ShutdownGrace = 30 * time.Second
	}
	log := s.Log
	if log == nil {
		log = slog.Default()
	}
	cfg, err := config.Load(s.ConfigPath)
	if err != nil {
		return err
	}
	upstream, _ := url.Parse(cfg.Upstream.URL) // validated by Load

	userKey, err := userHashKey(cfg, s.RedisURL, log)
	if err != nil {
		return err
	}
	breaker := &breakerState{log: log}
	st, err := openStore(ctx, cfg, s.RedisURL, store.Options{NoPipelining: s.NoPipelining, OnStateChange: breaker.change})
	if err != nil {
		return err
	}
	if st != nil {
		defer func() { _ = st.Close() }()
	}
	buckets := stores{st: st, local: ratelimit.NewLocalStore(ratelimit.LocalOptions{}), userKey: userKey, denyCache: s.DenyCacheEntries}
	limits, err := buildLimits(cfg, buckets)
	if err != nil {
		return err
	}
	authOpts := []auth.Option{auth.WithPublicURL(cfg.PublicURL)}
	if s.NoTokenCache {
		authOpts = append(authOpts, auth.WithTokenCache(0, 0))
	}
	authn, err := auth.New(ctx, cfg.Auth, authOpts...)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	var metadata http.Handler
	if cfg.Auth.OIDC != nil {
		resource := "" // derived from each request
		if cfg.PublicURL != "" {
			resource = strings.TrimSuffix(cfg.PublicURL, "/") + upstream.EscapedPath()
		}
		metadata = auth.MetadataHandler(*cfg.Auth.OIDC, resource)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := enforce.NewMetrics(reg)
	breaker.register(reg)
	if c, ok := authn.(auth.TokenCacheStatser); ok && cfg.Auth.OIDC != nil && !s.NoTokenCache {
		registerTokenCacheMetrics(reg, c)
	}

	var dlog *enforce.DecisionLog
	if s.DecisionLog != "" {
		f, err := os.OpenFile(s.DecisionLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("decision log: %w", err)
		}
		defer func() { _ = f.Close() }()
		dlog = enforce.NewDecisionLog(f)
	}

	routes, err := route.New(upstream.EscapedPath(), cfg.Upstream.LegacySSEPaths, cfg.Upstream.PassthroughPaths)
	if err != nil {
		return err
	}
	hc := cfg.HTTP // defaulted by config.Load
	handler := enforce.New(enforce.Options{
		Upstream:                  upstream,
		Routes:                    routes,
		Auth:                      authn,
		Metadata:                  metadata,
		Transport:                 enforce.NewTransport(cfg.Upstream.ResponseHeaderTimeout.Duration),
		BodyReadTimeout:           hc.BodyReadTimeout.Duration,
		MaxBufferedBytes:          hc.MaxBufferedBytes,
		MaxBufferedBytesPerCaller: hc.MaxBufferedBytesPerCaller,
		MaxStreams:                int(hc.MaxStreams),
		MaxStreamsPerCaller:       int(hc.MaxStreamsPerCaller),
		UserHashKey:               userKey,
		Metrics:                   metrics,
		DecisionLog:               dlog,
		Log:                       log,
	}, limits)

	var current atomic.Pointer[v1alpha1.ProxyConfig]
	current.Store(cfg)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_config_generation",
		Help: "The generation of the MCPServer whose config this proxy enforces (the rendered ProxyConfig's generation; 0 for a config written by hand). Every replica at the MCPServer's metadata.generation: its limits are live everywhere.",
	}, func() float64 { return float64(current.Load().Generation) }))
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go config.Watch(watchCtx, s.ConfigPath, s.ReloadInterval, func(next *v1alpha1.ProxyConfig) {
		old := current.Load()
		if fields := config.RestartNeeded(old, next); len(fields) > 0 {
			// Never half-applied: some of these name every bucket (server, key prefix,
			// user-hash key, store), and moving to new keys would hand everyone full buckets.
			metrics.ConfigReload(enforce.ReloadRefused)
			log.Error("config reload refused: these fields apply only on a restart; the running config stays", "fields", strings.Join(fields, ","))
			return
		}
		l, err := buildLimits(next, buckets)
		if err != nil {
			metrics.ConfigReload(enforce.ReloadRejected)
			log.Error("config reload rejected; the running config stays", "err", err)
			return
		}
		handler.Update(l)
		current.Store(next)
		metrics.ConfigReload(enforce.ReloadApplied)
		log.Info("config reloaded", "generation", next.Generation)
	}, func(err error) {
		metrics.ConfigReload(enforce.ReloadRejected)
		log.Error("config reload rejected", "err", err)
	})

	if cfg.SessionStorage != nil && cfg.SessionStorage.UserHashKeyFile != "" {
		go watchUserHashKey(watchCtx, cfg.SessionStorage.UserHashKeyFile, userKey, s.ReloadInterval, func(changed bool) {
			if changed {
				metrics.ConfigReload(enforce.ReloadRefused)
				log.Error("user-hash key file changed: refused, the running key stays until a restart (applied live, every user's pseudonym and per-user buckets would move to new, full keys; roll every replica to rotate)",
					"file", cfg.SessionStorage.UserHashKeyFile)
				return
			}
			log.Info("user-hash key file holds the running key again", "file", cfg.SessionStorage.UserHashKeyFile)
		})
	}

	ops := http.NewServeMux()
	ops.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if s.EnablePprof {
		ops.HandleFunc("/debug/pprof/", pprof.Index)
		ops.HandleFunc("/debug/pprof/profile", pprof.Profile)
		ops.HandleFunc("/debug/pprof/trace", pprof.Trace)
		ops.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	}
	ops.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	ops.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(r.Context(), current.Load(), st); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if on, since := handler.Degraded(); on {
			// Still ready: serving with local limits is the point of failurePolicy Local.
			_, _ = fmt.Fprintf(w, "ok (degraded: the rate limiter store fails; deciding with local buckets since %s)\n", since.UTC().Format(time.RFC3339))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})

	return serve(ctx, s, hc, log, handler, ops)
}

// registerTokenCacheMetrics exports the OIDC token cache's counters, read when scraped (the
// cache counts under its own lock; nothing is added to a request's path). The one label has
// two values.
func registerTokenCacheMetrics(reg prometheus.Registerer, c auth.TokenCacheStatser) {
	for _, result := range []string{"hit", "miss"} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "tollgate_token_cache_lookups_total",
			Help:        "Lookups of bearer tokens in the verified-token cache by result: hit (answered without verifying the token again) or miss (verified; an expired entry, one whose key left the JWKS, or none).",
			ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 {
			st := c.TokenCacheStats()
			if result == "hit" {
				return float64(st.Hits)
			}
			return float64(st.Misses)
		}))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_token_cache_entries",
		Help: "Identities held by the verified-token cache (at most 10 000).",
	}, func() float64 { return float64(c.TokenCacheStats().Entries) }))
}

// breakerState follows the store's circuit breaker for a gauge and a log line per transition:
// without it an open breaker shows only as calls it failed at once, so an idle proxy with an
// open breaker looks healthy.
type breakerState struct {
	log  *slog.Logger
	open atomic.Bool
}

// change is the store's OnStateChange: called under the breaker's lock, so it only logs and
// stores.
func (b *breakerState) change(_, to string) {
	b.open.Store(to == "open")
	if to == "open" {
		b.log.Warn("rate limiter store: circuit breaker open; calls fail at once (the failure policy decides) until a background PING answers")
		return
	}
	b.log.Info("rate limiter store: circuit breaker closed; Redis answers again")
}

func (b *breakerState) register(reg prometheus.Registerer) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_store_circuit_open",
		Help: "1 while the rate-limit store's circuit breaker is open (calls fail at once and the failure policy decides them; a background PING closes it), else 0.",
	}, func() float64 {
		if b.open.Load() {
			return 1
		}
		return 0
	}))
}

// ready: with failurePolicy Deny the proxy can serve only while the store answers; with
// Allow (the default) it serves regardless — an outage of Redis must not remove every
// endpoint of the MCP server.
func ready(ctx context.Context, cfg *v1alpha1.ProxyConfig, st store.Store) error {
	if st == nil || cfg.RateLimiting == nil || cfg.RateLimiting.FailurePolicy != v1alpha1.FailurePolicyDeny {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := st.Ping(ctx); err != nil {
		return fmt.Errorf("rate limiter store unavailable and failurePolicy is Deny: %w", err)
	}
	return nil
}

// userHashKey is the key of user pseudonyms: sessionStorage.userHashKeyFile (the operator
// always renders one), else a random key for this process alone. Never a fixed key: a
// pseudonym under a key everyone knows can be confirmed by hashing guessed ids.
func userHashKey(cfg *v1alpha1.ProxyConfig, redisURL string, log *slog.Logger) ([]byte, error) {
	if ss := cfg.SessionStorage; ss != nil && ss.UserHashKeyFile != "" {
		key, err := config.ReadUserHashKey(ss.UserHashKeyFile)
		if err != nil {
			return nil, err
		}
		log.Info("user ids pseudonymised with the key in sessionStorage.userHashKeyFile", "file", ss.UserHashKeyFile)
		return key, nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating a user-hash key: %w", err)
	}
	shared := redisURL != "" && !strings.HasPrefix(redisURL, "memory:") ||
		redisURL == "" && cfg.SessionStorage != nil && cfg.SessionStorage.Provider == v1alpha1.SessionStorageRedis
	if shared && cfg.RateLimiting.HasPerUser() {
		// Other replicas, and this one after a restart, name a user's buckets differently.
		log.Warn("user ids pseudonymised with a random per-process key: per-user buckets in Redis are this process's own (other replicas, and this one after a restart, do not share them); set sessionStorage.userHashKeyFile to share them")
	} else {
		log.Info("user ids pseudonymised with a random per-process key (pseudonyms in logs differ per process; set sessionStorage.userHashKeyFile for stable ones)")
	}
	return key, nil
}

// watchUserHashKey polls the key file and reports a content other than the running key
// (changed true, once per new content) and a return to it (changed false). The key is never
// swapped live: it names every per-user bucket, like the key prefix, whose change a reload
// refuses too. Polling the content follows a Secret volume's symlink swap.
func watchUserHashKey(ctx context.Context, path string, running []byte, interval time.Duration, report func(changed bool)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	last := running
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := os.ReadFile(path)
		if err != nil {
			continue // mid-swap, or gone: the running key stays either way
		}
		key := bytes.TrimRight(b, "\r\n")
		if bytes.Equal(key, last) {
			continue
		}
		last = key
		report(!bytes.Equal(key, running))
	}
}

// openStore opens the limiter's store when rate limiting is configured (or --redis given).
func openStore(ctx context.Context, cfg *v1alpha1.ProxyConfig, redisURL string, opt store.Options) (store.Store, error) {
	ss := cfg.SessionStorage
	if cfg.RateLimiting == nil && redisURL == "" {
		return nil, nil
	}
	if ss == nil && redisURL == "" {
		return nil, errors.New("rateLimiting requires sessionStorage (or the --redis flag)")
	}
	if ss != nil && ss.Timeout != nil {
		opt.Timeout = ss.Timeout.Duration
	}
	st, err := store.Open(ctx, ss, redisURL, opt)
	if err != nil {
		return nil, err // store errors name the field already
	}
	return st, nil
}

// buildLimits makes the hot-reloadable part of a config: a limiter over the (unchanged) store.
// stores are the buckets' homes: the store (Redis, or the embedded memory store) and, for
// failurePolicy Local, the replica's own in-process buckets, kept across reloads.
type stores struct {
	st        store.Store
	local     *ratelimit.LocalStore
	userKey   []byte
	denyCache int
}

func buildLimits(cfg *v1alpha1.ProxyConfig, ss stores) (enforce.Limits, error) {
	st, userKey, denyCache := ss.st, ss.userKey, ss.denyCache
	l := enforce.Limits{Config: cfg.RateLimiting, MaxBodyBytes: cfg.MaxBodyBytes}
	if cfg.Responses != nil {
		l.Responses = *cfg.Responses
	}
	if cfg.RateLimiting == nil {
		return l, nil
	}
	if st == nil {
		return l, errors.New("rateLimiting was added, but the proxy started without a store: restart it")
	}
	var prefix string // "": the limiter's default
	if cfg.SessionStorage != nil {
		prefix = cfg.SessionStorage.KeyPrefix
	}
	lim, err := ratelimit.New(st, cfg.Server.Namespace, cfg.Server.Name, cfg.RateLimiting,
		ratelimit.WithKeyPrefix(prefix), ratelimit.WithUserHashKey(userKey), ratelimit.WithDenyCache(denyCache))
	if err != nil {
		return l, err
	}
	l.Limiter = lim
	if cfg.RateLimiting.FailurePolicy == v1alpha1.FailurePolicyLocal && cfg.SessionStorage != nil &&
		cfg.SessionStorage.Provider != v1alpha1.SessionStorageMemory { // the memory store is local already
		local, err := ratelimit.New(ss.local, cfg.Server.Namespace, cfg.Server.Name,
			ratelimit.DividedConfig(cfg.RateLimiting, max(cfg.Replicas, 1)),
			ratelimit.WithKeyPrefix(prefix), ratelimit.WithUserHashKey(userKey))
		if err != nil {
			return l, fmt.Errorf("failurePolicy Local: %w", err)
		}
		l.Local = local
	}
	return l, nil
}

// maxHeaderBytes bounds a request's headers (Go's default is 1 MiB): MCP requests carry a few
// short headers and a bearer token.
const maxHeaderBytes = 64 << 10

// serve runs both listeners until ctx ends, then lets in-flight requests finish.
func serve(ctx context.Context, s Settings, hc *v1alpha1.HTTPServerConfig, log *slog.Logger, handler, ops http.Handler) error {
	ln, err := net.Listen("tcp", s.Listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	// Connections past the cap wait in the listen backlog: a flood of idle or slow
	// connections cannot take the proxy's memory and descriptors.
	ln = netutil.LimitListener(ln, int(hc.MaxConnections))
	opsLn, err := net.Listen("tcp", s.MetricsListen)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("--metrics-listen: %w", err)
	}
	// No write timeout: SSE streams stay open for as long as the client listens.
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: hc.ReadHeaderTimeout.Duration, IdleTimeout: hc.IdleTimeout.Duration,
		MaxHeaderBytes: maxHeaderBytes}
	opsSrv := &http.Server{Handler: ops, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	go func() { errc <- opsSrv.Serve(opsLn) }()
	log.Info("proxy serving", "listen", ln.Addr().String(), "metrics", opsLn.Addr().String())
	if s.Ready != nil {
		s.Ready(ln.Addr(), opsLn.Addr())
	}
	select {
	case err := <-errc:
		_ = srv.Close()
		_ = opsSrv.Close()
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: draining in-flight requests", "grace", s.ShutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), s.ShutdownGrace)
	defer cancel()
	err = srv.Shutdown(sctx)
	_ = opsSrv.Shutdown(sctx)
	if err != nil {
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	return nil
}
