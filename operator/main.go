// Command operator reconciles MCPServer resources into a running enforcement proxy. It is a
// placeholder until the operator issue lands; the API it serves is api/v1alpha1.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "operator: not implemented yet; the MCPServer API is in api/v1alpha1 and manifests/crd")
	os.Exit(2)
}
