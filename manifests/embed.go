// Package manifests embeds the generated Kubernetes manifests, so that Go code (the operator,
// the offline admission validator) uses the very CRD that `kubectl apply` installs.
package manifests

import "embed"

// CRDs holds the generated CustomResourceDefinitions, crd/*.yaml.
//
//go:embed crd/*.yaml
var CRDs embed.FS

// MCPServerCRD returns crd/tollgate.dev_mcpservers.yaml, the MCPServer CRD.
func MCPServerCRD() []byte {
	b, err := CRDs.ReadFile("crd/tollgate.dev_mcpservers.yaml")
	if err != nil {
		// The file is embedded at build time: it cannot be missing at run time.
		panic(err)
	}
	return b
}
