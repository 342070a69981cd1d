// Command simulator replays MCP traffic through Tollgate's real limiter on an embedded Redis
// with virtual time, checks fairness properties and writes reports. See docs/scenarios.md.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/tollgate-dev/tollgate/simulator/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
