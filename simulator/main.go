// Command simulator replays MCP traffic through Tollgate's real limiter on an embedded Redis
// with virtual time, checks fairness properties and writes reports. See docs/scenarios.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"

	"github.com/tollgate-dev/tollgate/simulator/cli"
)

func main() {
	// A soft memory limit scaled from the run's expected working set (cli.SetMemoryLimit,
	// docs/benchmarks.md "Memory"); GOMEMLIMIT, when set, is the user's and wins.
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		cli.SetMemoryLimit = func(n int64) { debug.SetMemoryLimit(n) }
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
