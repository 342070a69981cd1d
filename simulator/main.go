// Command simulator replays MCP traffic through Tollgate's real limiter on an embedded Redis
// with virtual time. Today it runs a built-in demo; scenario replay follows (issue 5).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/tollgate-dev/tollgate/simulator/demo"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] != "demo" {
		fmt.Fprintf(os.Stderr, "usage: simulator [demo]\nunknown command %q: scenario replay is not implemented yet\n", os.Args[1])
		os.Exit(2)
	}
	if err := demo.Run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "simulator:", err)
		os.Exit(1)
	}
}
