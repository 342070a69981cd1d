package admission

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// validator is built once: New validates the CRD and compiles every CEL rule.
var validator = sync.OnceValues(New)

func newValidator(tb testing.TB) *Validator {
	tb.Helper()
	v, err := validator()
	if err != nil {
		tb.Fatalf("New(): %v", err)
	}
	return v
}

// validate is the errors of Admit: the API server's verdict on a create of obj.
func validate(v *Validator, obj map[string]interface{}) field.ErrorList {
	_, errs := v.Admit(obj)
	return errs
}

// validateYAML is the errors of AdmitYAML: the API server's verdict on a create of doc.
func validateYAML(v *Validator, doc []byte) field.ErrorList {
	_, errs := v.AdmitYAML(doc)
	return errs
}

// messages renders errs as the API server lists them in its 422 answer. The tests compare
// these texts, not sentinels: they are the very messages kubectl shows a user, which the
// Validator promises to reproduce.
func messages(errs field.ErrorList) []string {
	var out []string
	for _, e := range errs {
		out = append(out, e.Error())
	}
	return out
}

// Rule messages, as written in api/v1alpha1. The want lists below spell out the full error
// texts (path, value and message) and use these only for readability.
const (
	msgPerUserAuth         = "rateLimiting.perUser requires authentication: set oidcConfig, oidcConfigRef or externalAuthConfigRef"
	msgToolPerUserAuth     = "rateLimiting.tools[].perUser requires authentication: set oidcConfig, oidcConfigRef or externalAuthConfigRef"
	msgPromptPerUserAuth   = "rateLimiting.prompts[].perUser requires authentication: set oidcConfig, oidcConfigRef or externalAuthConfigRef"
	msgResourcePerUserAuth = "rateLimiting.resources[].perUser requires authentication: set oidcConfig, oidcConfigRef or externalAuthConfigRef"
	msgToolBucket          = "each tools entry must set shared or perUser"
	msgRefillPositive      = "refillPeriod must be greater than 0"
	msgRefillMin           = "refillPeriod must be at least 1ms"
	msgRefillMax           = "refillPeriod must be at most 8760h (one year)"
	msgBucketTooLarge      = "maxTokens × refillPeriod is too large: maxTokens × (refillPeriod in milliseconds + 1) must not exceed 9007199254740 (for example 100000 tokens per 24h)"
	msgAtLeastOne          = "rateLimiting must set at least one of shared, perUser, tools, prompts or resources"
	msgNeedsStorage        = "rateLimiting requires sessionStorage (provider redis, or memory for a single replica)"
	msgMemoryReplicas      = "sessionStorage provider memory keeps buckets inside one proxy: proxy.replicas must be at most 1 (use provider redis to scale out)"
	msgOneAuth             = "set at most one authentication source: oidcConfig, oidcConfigRef or externalAuthConfigRef"
	msgRedisAddress        = "provider redis requires address (standalone) or addresses (Cluster, or Sentinel with masterName)"
	msgClusterDB           = "db must be 0 for Redis Cluster (addresses without masterName)"
	msgMemoryNoAddress     = "provider memory takes no address, addresses or masterName"
	msgAddressOrAddresses  = "set address or addresses, not both"
	msgMasterNeedsAddrs    = "masterName (Sentinel) requires addresses: the Sentinel addresses"

	// refillPattern is the schema's pattern for refillPeriod, as the server quotes it.
	refillPattern = `'^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$'`
	// notChecked is what the server reports instead of running CEL after a blocking error.
	notChecked = `<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation`
)

// cases is the table TestValidate runs; FuzzValidate seeds from it.
var cases = map[string]struct {
	reason   string
	manifest string
	want     []string
}{
	// ---- valid ----
	"SharedOnlyRedis": {
		reason: "A shared bucket needs no authentication; redis standalone takes an address.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
  namespace: tools
spec:
  upstream:
    url: http://search.tools.svc:8080/mcp
  sessionStorage:
    provider: redis
    address: redis.tollgate.svc:6379
  rateLimiting:
    shared:
      maxTokens: 100
      refillPeriod: 1m
`,
	},
	"PerUserInlineOIDC": {
		reason: "A per-user bucket is valid with inline oidcConfig.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: https://search.example.com/mcp
  oidcConfig:
    issuer: https://login.example.com/realms/tools
    audience: tollgate
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    perUser:
      maxTokens: 10
      refillPeriod: 1h30m
`,
	},
	"PerUserOIDCConfigRef": {
		reason: "A per-user bucket is valid with oidcConfigRef.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfigRef:
    name: search-oidc
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    perUser:
      maxTokens: 10
      refillPeriod: 1m
`,
	},
	"PerUserExternalAuth": {
		reason: "A per-user bucket is valid with externalAuthConfigRef.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  externalAuthConfigRef:
    name: gateway-auth
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    perUser:
      maxTokens: 10
      refillPeriod: 1m
`,
	},
	"ToolsPromptsResourcesWithCosts": {
		reason: "Per-tool, per-prompt and per-resource buckets with costs, shared and per user, with Sentinel storage.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
  namespace: tools
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig:
    issuer: https://login.example.com
    audience: tollgate
    jwksURL: https://login.example.com/keys
    userClaim: email
  sessionStorage:
    provider: redis
    addresses: [sentinel-0:26379, sentinel-1:26379]
    masterName: mymaster
    db: 3
    passwordRef: {name: redis, key: password}
    tls:
      caCertRef: {name: redis-ca, key: ca.crt}
    keyPrefix: prod-eu.1
  rateLimiting:
    failurePolicy: Deny
    mode: Shadow
    shared:
      maxTokens: 1000
      refillPeriod: 1m
    tools:
    - name: search
      cost: 5
      shared: {maxTokens: 100, refillPeriod: 1m}
      perUser: {maxTokens: 20, refillPeriod: 1m}
    - name: index
      perUser: {maxTokens: 1, refillPeriod: 500ms}
    prompts:
    - name: summarize
      cost: 2
      shared: {maxTokens: 50, refillPeriod: 10s}
    resources:
    - uri: file:///var/data/big.csv
      cost: 10
      perUser: {maxTokens: 100, refillPeriod: 1h}
  proxy:
    replicas: 3
    image: ghcr.io/tollgate-dev/proxy:v0.1.0
    resources:
      requests: {cpu: 100m, memory: 64Mi}
`,
	},
	"MemoryOneReplica": {
		reason: "Provider memory is valid with proxy.replicas 1.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: memory
  rateLimiting:
    shared:
      maxTokens: 100
      refillPeriod: 1m
  proxy:
    replicas: 1
`,
	},
	"DailyQuota": {
		reason: "100000 tokens per 24h is the documented example that fits the bucket bound.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    shared:
      maxTokens: 100000
      refillPeriod: 24h
`,
	},
	"HourlyQuotaAtBound": {
		reason: "2.5 million tokens per hour is just within the bucket bound (9000002500000 <= 9007199254740).",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    shared:
      maxTokens: 2500000
      refillPeriod: 1h
`,
	},
	"ClusterDBZero": {
		reason: "Redis Cluster (addresses without masterName) takes db 0.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    addresses: [redis-0:6379, redis-1:6379, redis-2:6379]
    db: 0
  rateLimiting:
    shared: {maxTokens: 100, refillPeriod: 1m}
`,
	},
	"NoRateLimiting": {
		reason: "Without rateLimiting nothing is limited and sessionStorage is optional.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
`,
	},
	"NullRateLimitingIsDropped": {
		reason: "An empty YAML key is null; the server drops nulls of non-nullable fields while decoding, so no rateLimiting rule applies.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  rateLimiting:
`,
	},
	"StatusDroppedOnCreate": {
		reason: "The CRD has a status subresource: a create drops status, so even an invalid status does not fail it.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
status:
  observedGeneration: -1
  conditions:
  - type: Ready
`,
	},

	// ---- invalid: authentication ----
	"PassthroughLegacySSEPathsHTTP": {
		reason: "Message endpoints, pass-through paths, the upstream timeout and every HTTP bound, all valid.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {name: search}
spec:
  upstream:
    url: http://search:8080/mcp
    legacySSEPaths: [/messages]
    passthroughPaths:
    - {path: /healthz}
    - {path: /static, pathType: Prefix}
    - {path: /ws, allowUpgrade: true}
    responseHeaderTimeout: 10m
  proxy:
    http: {readHeaderTimeout: 5s, bodyReadTimeout: 20s, idleTimeout: 1m, maxConnections: 1000, maxBufferedBytes: 33554432, maxBufferedBytesPerCaller: 2097152, maxStreams: 100, maxStreamsPerCaller: 4}
`,
	},
	"PassthroughUncleanPath": {
		reason: "A pass-through path is matched against cleaned paths: one that is not clean is refused by the pattern.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {name: search}
spec:
  upstream:
    url: http://search:8080/mcp
    passthroughPaths:
    - {path: /static/, pathType: Prefix}
    - {path: /ws, pathType: Regex}
`,
		want: []string{
			`spec.upstream.passthroughPaths[0].path: Invalid value: "/static/": spec.upstream.passthroughPaths[0].path in body should match '^/$|^(/[^/?#\s;%\\]+)+$'`,
			`spec.upstream.passthroughPaths[1].pathType: Unsupported value: "Regex": supported values: "Exact", "Prefix"`,
			notChecked,
		},
	},
	"LegacySSEPathDotSegments": {
		reason: "Dot segments in a legacy SSE path are refused by a rule (one error a case: sibling fields' rule errors come in map order).",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {name: search}
spec:
  upstream:
    url: http://search:8080/mcp
    legacySSEPaths: [/messages, /a/./b]
`,
		want: []string{`spec.upstream.legacySSEPaths: Invalid value: legacySSEPaths must not hold . or .. segments`},
	},
	"PassthroughDotSegments": {
		reason: "Dot segments in a pass-through path are refused by a rule.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {name: search}
spec:
  upstream:
    url: http://search:8080/mcp
    passthroughPaths:
    - {path: /a/../b, pathType: Prefix}
`,
		want: []string{`spec.upstream.passthroughPaths[0]: Invalid value: path must not hold . or .. segments`},
	},
	"ZeroResponseHeaderTimeout": {
		reason: "A zero upstream timeout is refused by a rule.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {name: search}
spec:
  upstream:
    url: http://search:8080/mcp
    responseHeaderTimeout: 0s
`,
		want: []string{`spec.upstream.responseHeaderTimeout: Invalid value: "0s": responseHeaderTimeout must be greater than 0`},
	},
	"HTTPBounds": {
		reason: "A caller's share may not exceed the total, and timeouts must be positive.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {name: search}
spec:
  upstream: {url: http://search:8080/mcp}
  proxy:
    http:
      bodyReadTimeout: 0s
      maxBufferedBytes: 2097152
      maxBufferedBytesPerCaller: 4194304
      maxStreams: 4
      maxStreamsPerCaller: 8
`,
		want: []string{
			`spec.proxy.http: Invalid value: maxBufferedBytesPerCaller must be at most maxBufferedBytes (default 67108864)`,
			`spec.proxy.http: Invalid value: maxStreamsPerCaller must be at most maxStreams (default 1024)`,
			`spec.proxy.http.bodyReadTimeout: Invalid value: "0s": bodyReadTimeout must be greater than 0`,
		},
	},
	"DottedName": {
		reason: "A name with a dot would make an invalid Service name (<name>-proxy).",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {name: a.b}
spec:
  upstream: {url: http://search:8080/mcp}
`,
		want: []string{`<nil>: Invalid value: metadata.name must be a DNS-1035 label of at most 57 characters (lower-case letters, digits and '-', starting with a letter): the proxy's Service is named <name>-proxy`},
	},
	"LongName": {
		reason: "A 58-character name would make a 64-character Service name.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata: {name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}
spec:
  upstream: {url: http://search:8080/mcp}
`,
		want: []string{`<nil>: Invalid value: metadata.name must be a DNS-1035 label of at most 57 characters (lower-case letters, digits and '-', starting with a letter): the proxy's Service is named <name>-proxy`},
	},
	"PerUserWithoutAuth": {
		reason: "A server-level per-user bucket needs an authentication source.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    perUser:
      maxTokens: 10
      refillPeriod: 1m
`,
		want: []string{`spec.rateLimiting.perUser: Invalid value: ` + msgPerUserAuth},
	},
	"ToolPerUserWithoutAuth": {
		reason: "A per-user bucket on a tool needs an authentication source too.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    tools:
    - name: search
      perUser: {maxTokens: 10, refillPeriod: 1m}
`,
		want: []string{`spec.rateLimiting.tools: Invalid value: ` + msgToolPerUserAuth},
	},
	"PromptPerUserWithoutAuth": {
		reason: "A per-user bucket on a prompt needs an authentication source too.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    shared: {maxTokens: 100, refillPeriod: 1m}
    prompts:
    - name: summarize
      perUser: {maxTokens: 10, refillPeriod: 1m}
`,
		want: []string{`spec.rateLimiting.prompts: Invalid value: ` + msgPromptPerUserAuth},
	},
	"ResourcePerUserWithoutAuth": {
		reason: "A per-user bucket on a resource needs an authentication source too.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    resources:
    - uri: file:///data.csv
      perUser: {maxTokens: 10, refillPeriod: 1m}
`,
		want: []string{`spec.rateLimiting.resources: Invalid value: ` + msgResourcePerUserAuth},
	},
	"TwoAuthSources": {
		reason: "oidcConfig and externalAuthConfigRef are exclusive.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig:
    issuer: https://login.example.com
    audience: tollgate
  externalAuthConfigRef:
    name: gateway-auth
`,
		want: []string{`spec: Invalid value: ` + msgOneAuth},
	},

	// ---- invalid: buckets ----
	"ToolWithoutBucket": {
		reason: "A tools entry must set shared or perUser; cost alone limits nothing.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    tools:
    - name: search
      cost: 3
`,
		want: []string{`spec.rateLimiting.tools[0]: Invalid value: ` + msgToolBucket},
	},
	"RefillPeriodZero": {
		reason: "0s is caught by the greater-than-0 rule only, not also by the 1ms one.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    shared:
      maxTokens: 100
      refillPeriod: 0s
`,
		want: []string{`spec.rateLimiting.shared: Invalid value: ` + msgRefillPositive},
	},
	"RefillPeriodBelowOneMillisecond": {
		reason: "500us is positive but below 1ms.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    tools:
    - name: search
      shared:
        maxTokens: 100
        refillPeriod: 500us
`,
		want: []string{`spec.rateLimiting.tools[0].shared: Invalid value: ` + msgRefillMin},
	},
	"RefillPeriodAboveOneYear": {
		reason: "8761h is above the one-year bound.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    shared:
      maxTokens: 1
      refillPeriod: 8761h
`,
		want: []string{`spec.rateLimiting.shared: Invalid value: ` + msgRefillMax},
	},
	"RefillPeriodDays": {
		reason: "Go durations have no d unit: the schema pattern rejects 1d, and the CEL rules, guarded by the same pattern, add nothing.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    shared:
      maxTokens: 100
      refillPeriod: 1d
`,
		want: []string{`spec.rateLimiting.shared.refillPeriod: Invalid value: "1d": spec.rateLimiting.shared.refillPeriod in body should match ` + refillPattern},
	},
	"RefillPeriodBeyondGoDuration": {
		reason: "3000000h matches the pattern but is beyond a Go duration (292 years): CEL's duration() fails, so every bucket rule reports a conversion error naming its message.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    shared:
      maxTokens: 1
      refillPeriod: 3000000h
`,
		want: []string{
			`spec.rateLimiting.shared: Invalid value: "object": type conversion error from 'string' to 'google.protobuf.Duration' evaluating rule: ` + msgRefillPositive,
			`spec.rateLimiting.shared: Invalid value: "object": type conversion error from 'string' to 'google.protobuf.Duration' evaluating rule: ` + msgRefillMin,
			`spec.rateLimiting.shared: Invalid value: "object": type conversion error from 'string' to 'google.protobuf.Duration' evaluating rule: ` + msgRefillMax,
			`spec.rateLimiting.shared: Invalid value: "object": type conversion error from 'string' to 'google.protobuf.Duration' evaluating rule: ` + msgBucketTooLarge,
		},
	},
	"MaxTokensZero": {
		reason: "maxTokens 0 fails the schema minimum; that error does not block CEL, which finds nothing more.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    shared:
      maxTokens: 0
      refillPeriod: 1m
`,
		want: []string{`spec.rateLimiting.shared.maxTokens: Invalid value: 0: spec.rateLimiting.shared.maxTokens in body should be greater than or equal to 1`},
	},
	"BucketTooLarge": {
		reason: "1000000 tokens per 8760h exceeds maxTokens × (refillPeriod in ms + 1) <= 9007199254740.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    prompts:
    - name: summarize
      shared:
        maxTokens: 1000000
        refillPeriod: 8760h
`,
		want: []string{`spec.rateLimiting.prompts[0].shared: Invalid value: ` + msgBucketTooLarge},
	},
	"BucketTooLargeWouldOverflow": {
		reason: "1000000000 × 31536000001 overflows int64; the rule divides instead of multiplying, so it reports its own message, not an integer overflow.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    shared:
      maxTokens: 1000000000
      refillPeriod: 8760h
`,
		want: []string{`spec.rateLimiting.shared: Invalid value: ` + msgBucketTooLarge},
	},
	"MaxTokensWrongType": {
		reason: "A wrong type is a blocking error: the server skips every CEL rule and says so.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  rateLimiting:
    perUser:
      maxTokens: ten
      refillPeriod: 1m
`,
		want: []string{
			`spec.rateLimiting.perUser.maxTokens: Invalid value: "string": spec.rateLimiting.perUser.maxTokens in body must be of type integer: "string"`,
			notChecked,
		},
	},

	// ---- invalid: rateLimiting and sessionStorage ----
	"EmptyRateLimiting": {
		reason: "rateLimiting: {} limits nothing (its defaults, failurePolicy and mode, do not count).",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: memory
  rateLimiting: {}
`,
		want: []string{`spec.rateLimiting: Invalid value: ` + msgAtLeastOne},
	},
	"RateLimitingWithoutSessionStorage": {
		reason: "The buckets must live somewhere.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  rateLimiting:
    shared:
      maxTokens: 100
      refillPeriod: 1m
`,
		want: []string{`spec: Invalid value: ` + msgNeedsStorage},
	},
	"MemoryThreeReplicas": {
		reason: "In-memory buckets cannot be shared by three proxy replicas.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: memory
  rateLimiting:
    shared:
      maxTokens: 100
      refillPeriod: 1m
  proxy:
    replicas: 3
`,
		want: []string{`spec: Invalid value: ` + msgMemoryReplicas},
	},
	"DuplicateToolNames": {
		reason: "tools is a list map keyed by name: duplicates fail the list-type check, before and apart from CEL.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    tools:
    - name: search
      shared: {maxTokens: 10, refillPeriod: 1m}
    - name: search
      shared: {maxTokens: 20, refillPeriod: 1m}
`,
		want: []string{`spec.rateLimiting.tools[1]: Duplicate value: {"name":"search"}`},
	},
	"RedisWithoutAddress": {
		reason: "Provider redis needs address or addresses.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
  rateLimiting:
    shared: {maxTokens: 100, refillPeriod: 1m}
`,
		want: []string{`spec.sessionStorage: Invalid value: ` + msgRedisAddress},
	},
	"ClusterWithDB": {
		reason: "Redis Cluster has only database 0.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    addresses: [redis-0:6379, redis-1:6379]
    db: 3
  rateLimiting:
    shared: {maxTokens: 100, refillPeriod: 1m}
`,
		want: []string{`spec.sessionStorage: Invalid value: ` + msgClusterDB},
	},
	"MemoryWithAddress": {
		reason: "Provider memory takes no Redis address.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: memory
    address: redis:6379
`,
		want: []string{`spec.sessionStorage: Invalid value: ` + msgMemoryNoAddress},
	},
	"AddressAndAddressesMasterNameAlone": {
		reason: "address and addresses together break one rule; a masterName needs the Sentinel addresses.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
    addresses: [redis-0:6379]
`,
		want: []string{`spec.sessionStorage: Invalid value: ` + msgAddressOrAddresses},
	},
	"MasterNameWithoutAddresses": {
		reason: "masterName selects Sentinel, which needs the Sentinel addresses.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
    masterName: mymaster
`,
		want: []string{`spec.sessionStorage: Invalid value: ` + msgMasterNeedsAddrs},
	},
	"UnknownFailurePolicy": {
		reason: "A value outside an enum is a blocking error too.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    failurePolicy: Ignore
    shared: {maxTokens: 100, refillPeriod: 1m}
`,
		want: []string{
			`spec.rateLimiting.failurePolicy: Unsupported value: "Ignore": supported values: "Allow", "Deny", "Local"`,
			notChecked,
		},
	},

	// ---- invalid: decoding and metadata ----
	"UnknownField": {
		reason: "With strict field validation (kubectl's default) the server refuses to decode an object with unknown fields, and checks nothing else.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
  labelz: {app: search}
spec:
  upstream:
    url: http://search:8080/mcp
  rateLimiting:
    shared: {maxTokens: 0, refillPeriod: 1m, burst: 5}
    perUsers: {maxTokens: 10, refillPeriod: 1m}
`,
		want: []string{
			`metadata.labelz: Invalid value: unknown field "metadata.labelz"`,
			`spec.rateLimiting.perUsers: Invalid value: unknown field "spec.rateLimiting.perUsers"`,
			`spec.rateLimiting.shared.burst: Invalid value: unknown field "spec.rateLimiting.shared.burst"`,
		},
	},
	"MissingUpstream": {
		reason: "spec.upstream is required; a missing required field blocks CEL.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  oidcConfigRef: {name: oidc}
`,
		want: []string{`spec.upstream: Required value`, notChecked},
	},
	"BadName": {
		reason: "metadata.name must be a DNS-1123 subdomain.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: Search_Server
spec:
  upstream:
    url: http://search:8080/mcp
`,
		want: []string{`metadata.name: Invalid value: "Search_Server": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`,
			`<nil>: Invalid value: metadata.name must be a DNS-1035 label of at most 57 characters (lower-case letters, digits and '-', starting with a letter): the proxy's Service is named <name>-proxy`},
	},
	// ---- tiers and responses ----
	"TiersValid": {
		reason: "Claim tiers (string and array claims) with perUser, tools and unlimited are valid with OIDC.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: pro
      match: {claim: plan, values: [pro, enterprise]}
      perUser: {maxTokens: 100, refillPeriod: 1m}
      tools:
      - name: web_search
        perUser: {maxTokens: 20, refillPeriod: 1m}
    - name: staff
      match: {claim: groups, values: [sre]}
      unlimited: true
`,
	},
	"TierHeaderValid": {
		reason: "A header tier is valid with header authentication (externalAuthConfigRef).",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  externalAuthConfigRef: {name: gateway}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: gateway-gold
      match: {header: X-Plan, values: [gold]}
      perUser: {maxTokens: 50, refillPeriod: 1m}
`,
	},
	"TierClaimAndHeader": {
		reason: "A match sets exactly one of claim and header.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: pro
      match: {claim: plan, header: X-Plan, values: [pro]}
      perUser: {maxTokens: 100, refillPeriod: 1m}
`,
		want: []string{
			`spec.rateLimiting.tiers: Invalid value: rateLimiting.tiers[].match.header requires header authentication (externalAuthConfigRef): only the trusted gateway's headers are believed`,
			`spec.rateLimiting.tiers[0].match: Invalid value: set exactly one of claim and header`,
		},
	},
	"TierNeitherClaimNorHeader": {
		reason: "A match with neither claim nor header matches nothing.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: pro
      match: {values: [pro]}
      perUser: {maxTokens: 100, refillPeriod: 1m}
`,
		want: []string{
			`spec.rateLimiting.tiers[0].match: Invalid value: set exactly one of claim and header`,
		},
	},
	"TierNoValues": {
		reason: "A match needs at least one value.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: pro
      match: {claim: plan, values: []}
      perUser: {maxTokens: 100, refillPeriod: 1m}
`,
		want: []string{
			`spec.rateLimiting.tiers[0].match.values: Invalid value: 0: spec.rateLimiting.tiers[0].match.values in body should have at least 1 items`,
		},
	},
	"TierEmptyValue": {
		reason: "An empty value would match an empty claim: refused.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: pro
      match: {claim: plan, values: [""]}
      perUser: {maxTokens: 100, refillPeriod: 1m}
`,
		want: []string{
			`spec.rateLimiting.tiers[0].match.values[0]: Invalid value: "": spec.rateLimiting.tiers[0].match.values[0] in body should be at least 1 chars long`,
		},
	},
	"TierUnlimitedWithBuckets": {
		reason: "unlimited excludes perUser and tools.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: staff
      match: {claim: groups, values: [sre]}
      unlimited: true
      perUser: {maxTokens: 100, refillPeriod: 1m}
`,
		want: []string{
			`spec.rateLimiting.tiers[0]: Invalid value: an unlimited tier has no per-user buckets: unset perUser and tools`,
		},
	},
	"TierEmpty": {
		reason: "A tier with no bucket and not unlimited changes nothing: refused.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: pro
      match: {claim: plan, values: [pro]}
`,
		want: []string{
			`spec.rateLimiting.tiers[0]: Invalid value: a tier must set perUser, tools or unlimited`,
		},
	},
	"TierDuplicateNames": {
		reason: "tiers is a list map keyed by name.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: pro
      match: {claim: plan, values: [pro]}
      unlimited: true
    - name: pro
      match: {claim: plan, values: [enterprise]}
      unlimited: true
`,
		want: []string{
			`spec.rateLimiting.tiers[1]: Duplicate value: {"name":"pro"}`,
		},
	},
	"TierBadName": {
		reason: "A tier name is a DNS-1123 label (it is a metric label value and part of keys).",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: Pro_Tier
      match: {claim: plan, values: [pro]}
      unlimited: true
`,
		want: []string{
			`spec.rateLimiting.tiers[0].name: Invalid value: "Pro_Tier": spec.rateLimiting.tiers[0].name in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'`,
		},
	},
	"TierBadHeaderName": {
		reason: "A header name is an HTTP token.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  externalAuthConfigRef: {name: gateway}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: gold
      match: {header: "X Plan", values: [gold]}
      unlimited: true
`,
		want: []string{
			`spec.rateLimiting.tiers[0].match.header: Invalid value: "X Plan": spec.rateLimiting.tiers[0].match.header in body should match '^[A-Za-z0-9!#$%&'*+.^_|~-]+$'`,
		},
	},
	"TierBadBucket": {
		reason: "A tier's buckets obey the bucket rules.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: pro
      match: {claim: plan, values: [pro]}
      perUser: {maxTokens: 0, refillPeriod: 0s}
`,
		want: []string{
			`spec.rateLimiting.tiers[0].perUser.maxTokens: Invalid value: 0: spec.rateLimiting.tiers[0].perUser.maxTokens in body should be greater than or equal to 1`,
			`spec.rateLimiting.tiers[0].perUser: Invalid value: refillPeriod must be greater than 0`,
		},
	},
	"TierBadToolBucket": {
		reason: "A tier's tool buckets obey the bucket rules.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: pro
      match: {claim: plan, values: [pro]}
      tools:
      - name: web_search
        perUser: {maxTokens: 5, refillPeriod: 9000h}
`,
		want: []string{
			`spec.rateLimiting.tiers[0].tools[0].perUser: Invalid value: refillPeriod must be at most 8760h (one year)`,
		},
	},
	"TierHeaderWithOIDC": {
		reason: "A header tier needs header authentication: under OIDC no gateway header is trusted.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: gold
      match: {header: X-Plan, values: [gold]}
      unlimited: true
`,
		want: []string{
			`spec.rateLimiting.tiers: Invalid value: rateLimiting.tiers[].match.header requires header authentication (externalAuthConfigRef): only the trusted gateway's headers are believed`,
		},
	},
	"TierClaimWithHeaderAuth": {
		reason: "A claim tier needs OIDC: a gateway's identity header carries no claims.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  externalAuthConfigRef: {name: gateway}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: pro
      match: {claim: plan, values: [pro]}
      unlimited: true
`,
		want: []string{
			`spec.rateLimiting.tiers: Invalid value: rateLimiting.tiers[].match.claim requires OIDC authentication (oidcConfig or oidcConfigRef): claims come from the verified token`,
		},
	},
	"TierWithoutAuth": {
		reason: "Tiers need an identity: PerUserRequiresAuth covers them.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    shared: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: pro
      match: {claim: plan, values: [pro]}
      unlimited: true
`,
		want: []string{
			`spec.rateLimiting.tiers: Invalid value: rateLimiting.tiers requires authentication: set oidcConfig, oidcConfigRef or externalAuthConfigRef`,
		},
	},
	"TierTooManyValues": {
		reason: "At most 32 values a tier.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: pro
      match:
        claim: plan
        values:
        - v0
        - v1
        - v2
        - v3
        - v4
        - v5
        - v6
        - v7
        - v8
        - v9
        - v10
        - v11
        - v12
        - v13
        - v14
        - v15
        - v16
        - v17
        - v18
        - v19
        - v20
        - v21
        - v22
        - v23
        - v24
        - v25
        - v26
        - v27
        - v28
        - v29
        - v30
        - v31
        - v32
      unlimited: true
`,
		want: []string{
			`spec.rateLimiting.tiers[0].match.values: Too many: 33: must have at most 32 items`,
			`<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation`,
		},
	},
	"TierTooMany": {
		reason: "At most 16 tiers.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: t0
      match: {claim: plan, values: [p0]}
      unlimited: true
    - name: t1
      match: {claim: plan, values: [p1]}
      unlimited: true
    - name: t2
      match: {claim: plan, values: [p2]}
      unlimited: true
    - name: t3
      match: {claim: plan, values: [p3]}
      unlimited: true
    - name: t4
      match: {claim: plan, values: [p4]}
      unlimited: true
    - name: t5
      match: {claim: plan, values: [p5]}
      unlimited: true
    - name: t6
      match: {claim: plan, values: [p6]}
      unlimited: true
    - name: t7
      match: {claim: plan, values: [p7]}
      unlimited: true
    - name: t8
      match: {claim: plan, values: [p8]}
      unlimited: true
    - name: t9
      match: {claim: plan, values: [p9]}
      unlimited: true
    - name: t10
      match: {claim: plan, values: [p10]}
      unlimited: true
    - name: t11
      match: {claim: plan, values: [p11]}
      unlimited: true
    - name: t12
      match: {claim: plan, values: [p12]}
      unlimited: true
    - name: t13
      match: {claim: plan, values: [p13]}
      unlimited: true
    - name: t14
      match: {claim: plan, values: [p14]}
      unlimited: true
    - name: t15
      match: {claim: plan, values: [p15]}
      unlimited: true
    - name: t16
      match: {claim: plan, values: [p16]}
      unlimited: true
`,
		want: []string{
			`spec.rateLimiting.tiers: Too many: 17: must have at most 16 items`,
			`<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation`,
		},
	},
	"ResponsesToolResult": {
		reason: "spec.proxy.responses takes toolRejection ToolResult and rejectStatus 200 or 429.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  proxy:
    responses: {toolRejection: ToolResult, rejectStatus: 429, exposeSharedRemaining: true}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: pro
      match: {claim: plan, values: [pro]}
      unlimited: true
`,
	},
	"ResponsesInvalidToolRejection": {
		reason: "toolRejection is Error or ToolResult; rejectStatus 200 or 429.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  proxy:
    responses: {toolRejection: Result}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: pro
      match: {claim: plan, values: [pro]}
      unlimited: true
`,
		want: []string{
			`spec.proxy.responses.toolRejection: Unsupported value: "Result": supported values: "Error", "ToolResult"`,
			`<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation`,
		},
	},
	"ResponsesInvalidRejectStatus": {
		reason: "toolRejection is Error or ToolResult; rejectStatus 200 or 429.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig: {issuer: https://login.example.com, audience: tollgate}
  proxy:
    responses: {rejectStatus: 503}
  sessionStorage: {provider: redis, address: redis:6379}
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
    tiers:
    - name: pro
      match: {claim: plan, values: [pro]}
      unlimited: true
`,
		want: []string{
			`spec.proxy.responses.rejectStatus: Unsupported value: 503: supported values: "200", "429"`,
			`<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation`,
		},
	},
	"ResourceVersionOnCreate": {
		reason: "A create carrying a resourceVersion passes validation and fails in storage.",
		manifest: `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: search
  resourceVersion: "12345"
spec:
  upstream:
    url: http://search:8080/mcp
`,
		want: []string{`metadata.resourceVersion: Invalid value: "12345": resourceVersion should not be set on objects to be created`},
	},
	"WrongKind": {
		reason: "Another kind is not an MCPServer; nothing else is checked.",
		manifest: `
apiVersion: tollgate.dev/v1
kind: MCPServers
metadata:
  name: search
spec: {}
`,
		want: []string{
			`kind: Invalid value: "MCPServers": must be MCPServer`,
			`apiVersion: Invalid value: "tollgate.dev/v1": must be tollgate.dev/v1alpha1`,
		},
	},
}

func TestValidate(t *testing.T) {
	v := newValidator(t)
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := messages(validateYAML(v, []byte(tc.manifest)))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\nAdmitYAML(...): -want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

func TestAdmitDefaults(t *testing.T) {
	v := newValidator(t)
	manifest := `
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  generateName: search-
spec:
  upstream:
    url: http://search:8080/mcp
  oidcConfig:
    issuer: https://login.example.com
    audience: tollgate
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    perUser: {maxTokens: 10, refillPeriod: 1m}
  proxy: {}
`
	got, errs := v.AdmitYAML([]byte(manifest))
	if len(errs) > 0 {
		t.Fatalf("AdmitYAML(...): unexpected errors: %v", messages(errs))
	}
	meta := got["metadata"].(map[string]interface{})
	if name, _ := meta["name"].(string); !strings.HasPrefix(name, "search-") || len(name) != len("search-")+5 {
		t.Errorf("metadata.name = %q, want generated from generateName search-", name)
	}
	delete(meta, "name")
	want := map[string]interface{}{
		"apiVersion": "tollgate.dev/v1alpha1",
		"kind":       "MCPServer",
		"metadata": map[string]interface{}{
			"generateName": "search-",
			"namespace":    DefaultNamespace,
			"generation":   int64(1),
		},
		"spec": map[string]interface{}{
			"upstream": map[string]interface{}{"url": "http://search:8080/mcp"},
			"oidcConfig": map[string]interface{}{
				"issuer":    "https://login.example.com",
				"audience":  "tollgate",
				"userClaim": "sub",
			},
			"sessionStorage": map[string]interface{}{
				"provider":  "redis",
				"address":   "redis:6379",
				"keyPrefix": "tollgate",
			},
			"rateLimiting": map[string]interface{}{
				"perUser":       map[string]interface{}{"maxTokens": int64(10), "refillPeriod": "1m"},
				"failurePolicy": "Allow",
				"mode":          "Enforce",
			},
			"proxy": map[string]interface{}{"replicas": int64(1)},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("AdmitYAML(...): -want +got:\n%s", diff)
	}
}

func TestValidateDoesNotModifyInput(t *testing.T) {
	v := newValidator(t)
	obj := map[string]interface{}{
		"apiVersion": "tollgate.dev/v1alpha1",
		"kind":       "MCPServer",
		"metadata":   map[string]interface{}{"name": "search"},
		"spec": map[string]interface{}{
			"upstream":       map[string]interface{}{"url": "http://search:8080/mcp"},
			"sessionStorage": map[string]interface{}{"provider": "memory"},
			"rateLimiting": map[string]interface{}{
				// Go ints, as a caller building the object by hand writes them.
				"shared": map[string]interface{}{"maxTokens": 5, "refillPeriod": "1s"},
			},
		},
	}
	before := fmt.Sprint(obj)
	if errs := validate(v, obj); len(errs) > 0 {
		t.Fatalf("Admit(...): unexpected errors: %v", messages(errs))
	}
	if after := fmt.Sprint(obj); after != before {
		t.Errorf("Admit modified its input:\nbefore %s\nafter  %s", before, after)
	}
}

func TestValidateOddInputs(t *testing.T) {
	v := newValidator(t)
	tests := map[string]struct {
		reason string
		obj    map[string]interface{}
		doc    string
		want   []string
	}{
		"NilMap": {
			reason: "A nil object is JSON null, not an object.",
			want:   []string{`<nil>: Invalid value: expected a JSON object, got null`},
		},
		"NilSpec": {
			reason: "spec: null is dropped while decoding; then spec is missing, which the schema requires.",
			obj: map[string]interface{}{
				"apiVersion": "tollgate.dev/v1alpha1", "kind": "MCPServer",
				"metadata": map[string]interface{}{"name": "search"}, "spec": nil,
			},
			want: []string{`spec: Required value`, notChecked},
		},
		"SpecWrongType": {
			reason: "A spec that is not an object is a type error, and blocks CEL.",
			obj: map[string]interface{}{
				"apiVersion": "tollgate.dev/v1alpha1", "kind": "MCPServer",
				"metadata": map[string]interface{}{"name": "search"}, "spec": []interface{}{"x"},
			},
			want: []string{`spec: Invalid value: "array": spec in body must be of type object: "array"`, notChecked},
		},
		"MetadataWrongType": {
			reason: "Metadata that does not decode as ObjectMeta makes the request undecodable.",
			obj: map[string]interface{}{
				"apiVersion": "tollgate.dev/v1alpha1", "kind": "MCPServer",
				"metadata": map[string]interface{}{"name": 5}, "spec": map[string]interface{}{},
			},
			want: []string{`metadata: Invalid value: {"name":5}: json: cannot unmarshal number into Go struct field ObjectMeta.name of type string`},
		},
		"NotJSON": {
			reason: "A Go value JSON cannot represent.",
			obj:    map[string]interface{}{"f": func() {}},
			want:   []string{`<nil>: Invalid value: json: unsupported type: func()`},
		},
		"TwoDocuments": {
			reason: "AdmitYAML takes exactly one document.",
			doc:    "kind: MCPServer\n---\nkind: MCPServer\n",
			want:   []string{`<nil>: Invalid value: expected exactly one YAML or JSON document, got 2`},
		},
		"ScalarDocument": {
			reason: "A document that is not a mapping.",
			doc:    "hello",
			want:   []string{`<nil>: Invalid value: json: cannot unmarshal string into Go value of type map[string]interface {}`},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var errs field.ErrorList
			if tc.doc != "" {
				errs = validateYAML(v, []byte(tc.doc))
			} else {
				errs = validate(v, tc.obj)
			}
			if diff := cmp.Diff(tc.want, messages(errs)); diff != "" {
				t.Errorf("%s\n-want +got:\n%s", tc.reason, diff)
			}
		})
	}
}

// TestLargestObjectFitsCELBudget admits an object with the most entries the schema allows, each
// with both buckets, so that every rule runs the most times it can: it must stay within the
// server's per-object CEL cost budget (RuntimeCELCostBudget).
func TestLargestObjectFitsCELBudget(t *testing.T) {
	v := newValidator(t)
	if errs := validateYAML(v, []byte(largestManifest("search"))); len(errs) > 0 {
		t.Errorf("AdmitYAML(largest object): unexpected errors: %v", messages(errs))
	}
}

// largestManifest is an MCPServer with the most list entries the schema allows, each with
// both buckets: every rule runs the most times it can.
func largestManifest(name string) string {
	var b strings.Builder
	b.WriteString(`
apiVersion: tollgate.dev/v1alpha1
kind: MCPServer
metadata:
  name: ` + name + `
spec:
  upstream:
    url: http://search:8080/mcp
    responseHeaderTimeout: 1h2m3s4ms5us6ns
    legacySSEPaths:
`)
	long := strings.Repeat("/segment-of-a-long-path", 22) // 506 bytes: near the 512 bound
	for i := range 8 {
		fmt.Fprintf(&b, "    - %s/%d\n", long, i)
	}
	b.WriteString("    passthroughPaths:\n")
	for i := range 32 {
		fmt.Fprintf(&b, "    - {path: %s/%02d, pathType: Prefix}\n", long, i)
	}
	b.WriteString(`  externalAuthConfigRef: {name: gateway}
  proxy:
    http: {readHeaderTimeout: 5s, bodyReadTimeout: 20s, idleTimeout: 1m, maxBufferedBytesPerCaller: 2097152, maxStreamsPerCaller: 4}
  sessionStorage:
    provider: redis
    address: redis:6379
  rateLimiting:
    shared: {maxTokens: 1000, refillPeriod: 1.5h}
    perUser: {maxTokens: 100, refillPeriod: 1h0m0.5s}
`)
	bucket := "{maxTokens: 100, refillPeriod: 1h2m3s4ms5us6ns}"
	b.WriteString("    tiers:\n")
	value := strings.Repeat("v", 250)
	for i := range 16 {
		fmt.Fprintf(&b, "    - name: tier-%02d\n      match:\n        header: X-Plan-%02d\n        values:\n", i, i)
		for j := range 32 {
			fmt.Fprintf(&b, "        - %s-%02d\n", value, j)
		}
		fmt.Fprintf(&b, "      perUser: %s\n      tools:\n", bucket)
		for j := range 64 {
			fmt.Fprintf(&b, "      - name: tools-%03d\n        perUser: %s\n", j, bucket)
		}
	}
	for _, list := range []struct{ name, key string }{{"tools", "name"}, {"prompts", "name"}, {"resources", "uri"}} {
		fmt.Fprintf(&b, "    %s:\n", list.name)
		for i := range 256 {
			name := fmt.Sprintf("%s-%03d", list.name, i)
			if list.key == "uri" {
				name = "file:///" + name // a URI, as the operator's own checks want it
			}
			fmt.Fprintf(&b, "    - %s: %s\n      cost: 2\n      shared: %s\n      perUser: %s\n", list.key, name, bucket, bucket)
		}
	}
	return b.String()
}

func FuzzValidate(f *testing.F) {
	v := newValidator(f)
	for _, tc := range cases {
		f.Add([]byte(tc.manifest))
	}
	f.Add([]byte(`{"apiVersion":"tollgate.dev/v1alpha1","kind":"MCPServer","spec":{"rateLimiting":{"tools":[null,1,"x"]}}}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		for _, e := range validateYAML(v, doc) {
			if err, ok := e.BadValue.(error); ok && e.Type == field.ErrorTypeInternal && errors.Is(err, ErrPanicked) {
				t.Fatalf("AdmitYAML(%q) panicked: %s", doc, e.Detail)
			}
		}
	})
}

// TestValidateConcurrently checks that one Validator serves many goroutines (run with -race).
func TestValidateConcurrently(t *testing.T) {
	v := newValidator(t)
	var wg sync.WaitGroup
	for name, tc := range cases {
		wg.Go(func() {
			if diff := cmp.Diff(tc.want, messages(validateYAML(v, []byte(tc.manifest)))); diff != "" {
				t.Errorf("%s: -want +got:\n%s", name, diff)
			}
		})
	}
	wg.Wait()
}

func BenchmarkValidateYAML(b *testing.B) {
	v := newValidator(b)
	doc := []byte(cases["ToolsPromptsResourcesWithCosts"].manifest)
	for b.Loop() {
		if errs := validateYAML(v, doc); len(errs) > 0 {
			b.Fatal(messages(errs))
		}
	}
}

func BenchmarkNew(b *testing.B) {
	for b.Loop() {
		if _, err := New(); err != nil {
			b.Fatal(err)
		}
	}
}
