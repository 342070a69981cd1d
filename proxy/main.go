// Command proxy is Tollgate's enforcement proxy: an MCP-aware reverse proxy that checks every
// tools/call, prompts/get and resources/read against the limiter in proxy/ratelimit. It is a
// placeholder until the proxy issue lands.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "proxy: not implemented yet; the limiter it will run is proxy/ratelimit (see docs/limiter.md)")
	os.Exit(2)
}
