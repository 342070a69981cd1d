// Command proxy is Tollgate's enforcement proxy: an MCP-aware reverse proxy that checks every
// tools/call, prompts/get and resources/read against token buckets in Redis (proxy/ratelimit)
// and forwards everything else untouched. See docs/proxy.md. `proxy pseudonym` prints a user's
// pseudonym (docs/privacy.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	// Go's own CA roots, used only where the system has none: the images carry no CA bundle.
	_ "golang.org/x/crypto/x509roots/fallback"

	"github.com/tollgate-dev/tollgate/internal/version"
	"github.com/tollgate-dev/tollgate/proxy/app"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "pseudonym" {
		// A user's pseudonym, or the pattern of their Redis keys, for erasure (docs/privacy.md).
		os.Exit(app.Pseudonym(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	var s app.Settings
	flag.StringVar(&s.ConfigPath, "config", "", "ProxyConfig file (required); reloaded when it changes")
	flag.StringVar(&s.Listen, "listen", ":8080", "address of the MCP endpoint")
	flag.StringVar(&s.MetricsListen, "metrics-listen", ":9090", "address of /metrics, /healthz and /readyz")
	flag.StringVar(&s.RedisURL, "redis", "", "overrides sessionStorage: redis://host:port[/db], rediss://..., memory:// (embedded, one replica)")
	flag.StringVar(&s.DecisionLog, "decision-log", "", "append every call's decision to this JSON-lines file (the simulator's trace format)")
	flag.BoolVar(&s.EnablePprof, "enable-pprof", false, "serve /debug/pprof on the metrics listener")
	pipelining := flag.Bool("redis-pipelining", true, "share Redis round trips between concurrent decisions (go-redis autopipelining)")
	denyCache := flag.Bool("deny-cache", true, "refuse locally, without a Redis round trip, what Redis just refused and would refuse again (exact: docs/limiter.md)")
	tokenCache := flag.Bool("token-cache", true, "OIDC: answer a token verified before from a cache while the verifier would still accept it (exact: docs/proxy.md)")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("proxy", version.String())
		return
	}
	s.NoPipelining = !*pipelining
	s.NoTokenCache = !*tokenCache
	if *denyCache {
		s.DenyCacheEntries = app.DefaultDenyCacheEntries
	}
	if s.ConfigPath == "" {
		fmt.Fprintln(os.Stderr, "proxy: --config is required")
		flag.Usage()
		os.Exit(2)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "proxy: --log-level:", err)
		os.Exit(2)
	}
	s.Log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, s); err != nil {
		s.Log.Error("proxy stopped", "err", err)
		os.Exit(1)
	}
}
