// Package e2e holds the end-to-end tests of the GitOps chain (its _test.go files, `task e2e`):
// a manifest applied to a real kube-apiserver (envtest), reconciled by the real operator
// manager (operator/manager, the binary's own wiring, as the operator's ServiceAccount under
// the shipped RBAC), deployed by a node stand-in (internal/node) that runs the real proxy
// binary against a real redis-server and a go-sdk MCP server (internal/testupstream). Each
// scenario asserts what a client sees through the proxy, what the upstream executed, and the
// MCPServer's status as GitOps tools read it: its conditions, kstatus and the shipped Argo CD
// health check (manifests/argocd-health.lua) run as Argo CD runs it. docs/operator.md, "End-to-
// end test", says what the chain proves and what it does not.
package e2e
