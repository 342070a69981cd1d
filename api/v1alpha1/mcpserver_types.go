package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MCPServerSpec declares an MCP server to protect and the limits to enforce in front of it.
//
// +kubebuilder:validation:XValidation:rule="[has(self.oidcConfig), has(self.oidcConfigRef), has(self.externalAuthConfigRef)].filter(x, x).size() <= 1",message="set at most one authentication source: oidcConfig, oidcConfigRef or externalAuthConfigRef"
// +kubebuilder:validation:XValidation:rule="!has(self.rateLimiting) || has(self.sessionStorage)",message="rateLimiting requires sessionStorage (provider redis, or memory for a single replica)"
// +kubebuilder:validation:XValidation:rule="!has(self.rateLimiting) || !has(self.rateLimiting.perUser) || has(self.oidcConfig) || has(self.oidcConfigRef) || has(self.externalAuthConfigRef)",message="rateLimiting.perUser requires authentication: set oidcConfig, oidcConfigRef or externalAuthConfigRef",fieldPath=".rateLimiting.perUser"
// +kubebuilder:validation:XValidation:rule="!has(self.rateLimiting) || !has(self.rateLimiting.tools) || self.rateLimiting.tools.all(t, !has(t.perUser)) || has(self.oidcConfig) || has(self.oidcConfigRef) || has(self.externalAuthConfigRef)",message="rateLimiting.tools[].perUser requires authentication: set oidcConfig, oidcConfigRef or externalAuthConfigRef",fieldPath=".rateLimiting.tools"
// +kubebuilder:validation:XValidation:rule="!has(self.rateLimiting) || !has(self.rateLimiting.prompts) || self.rateLimiting.prompts.all(p, !has(p.perUser)) || has(self.oidcConfig) || has(self.oidcConfigRef) || has(self.externalAuthConfigRef)",message="rateLimiting.prompts[].perUser requires authentication: set oidcConfig, oidcConfigRef or externalAuthConfigRef",fieldPath=".rateLimiting.prompts"
// +kubebuilder:validation:XValidation:rule="!has(self.rateLimiting) || !has(self.rateLimiting.resources) || self.rateLimiting.resources.all(r, !has(r.perUser)) || has(self.oidcConfig) || has(self.oidcConfigRef) || has(self.externalAuthConfigRef)",message="rateLimiting.resources[].perUser requires authentication: set oidcConfig, oidcConfigRef or externalAuthConfigRef",fieldPath=".rateLimiting.resources"
// +kubebuilder:validation:XValidation:rule="!has(self.rateLimiting) || !has(self.rateLimiting.tiers) || size(self.rateLimiting.tiers) == 0 || has(self.oidcConfig) || has(self.oidcConfigRef) || has(self.externalAuthConfigRef)",message="rateLimiting.tiers requires authentication: set oidcConfig, oidcConfigRef or externalAuthConfigRef",fieldPath=".rateLimiting.tiers"
// +kubebuilder:validation:XValidation:rule="!has(self.rateLimiting) || !has(self.rateLimiting.tiers) || !(has(self.oidcConfig) || has(self.oidcConfigRef) || has(self.externalAuthConfigRef)) || self.rateLimiting.tiers.all(t, !has(t.match.claim) || has(self.oidcConfig) || has(self.oidcConfigRef))",message="rateLimiting.tiers[].match.claim requires OIDC authentication (oidcConfig or oidcConfigRef): claims come from the verified token",fieldPath=".rateLimiting.tiers"
// +kubebuilder:validation:XValidation:rule="!has(self.rateLimiting) || !has(self.rateLimiting.tiers) || !(has(self.oidcConfig) || has(self.oidcConfigRef) || has(self.externalAuthConfigRef)) || self.rateLimiting.tiers.all(t, !has(t.match.header) || has(self.externalAuthConfigRef))",message="rateLimiting.tiers[].match.header requires header authentication (externalAuthConfigRef): only the trusted gateway's headers are believed",fieldPath=".rateLimiting.tiers"
// +kubebuilder:validation:XValidation:rule="!has(self.sessionStorage) || self.sessionStorage.provider != 'memory' || !has(self.proxy) || !has(self.proxy.replicas) || self.proxy.replicas <= 1",message="sessionStorage provider memory keeps buckets inside one proxy: proxy.replicas must be at most 1 (use provider redis to scale out)"
type MCPServerSpec struct {
	// Upstream is the MCP server to protect.
	Upstream UpstreamSpec `json:"upstream"`

	// OIDCConfig authenticates callers with OIDC bearer tokens, configured inline.
	// At most one of oidcConfig, oidcConfigRef and externalAuthConfigRef.
	// +optional
	OIDCConfig *OIDCConfig `json:"oidcConfig,omitempty"`

	// OIDCConfigRef names a ConfigMap in the same namespace holding the keys of oidcConfig
	// (issuer, audience, jwksURL, userClaim).
	// +optional
	OIDCConfigRef *ConfigMapReference `json:"oidcConfigRef,omitempty"`

	// ExternalAuthConfigRef names a ConfigMap in the same namespace whose userHeader key names
	// the header (such as X-Forwarded-User) that a trusted authenticating gateway in front of
	// the proxy sets to the caller's identity. The operator renders a NetworkPolicy that lets
	// only that gateway reach the proxy.
	// +optional
	ExternalAuthConfigRef *ConfigMapReference `json:"externalAuthConfigRef,omitempty"`

	// SessionStorage is where the token buckets live. Required when rateLimiting is set.
	// +optional
	SessionStorage *SessionStorageConfig `json:"sessionStorage,omitempty"`

	// RateLimiting declares the limits to enforce. Unset: the proxy forwards every call.
	// +optional
	RateLimiting *RateLimitConfig `json:"rateLimiting,omitempty"`

	// Proxy tunes the enforcement proxy's Deployment.
	// +optional
	Proxy *ProxySpec `json:"proxy,omitempty"`
}

// UpstreamSpec locates the MCP server behind the proxy.
type UpstreamSpec struct {
	// URL is the MCP server's Streamable HTTP endpoint, http or https, such as
	// http://my-server.tools.svc:8080/mcp. The proxy serves the MCP endpoint at the same path.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://[^\s/?#]+([/?#]\S*)?$`
	URL string `json:"url"`

	// LegacySSEPaths are the paths of the upstream's legacy HTTP+SSE transport (protocol
	// 2024-11-05), when it serves that transport beside the endpoint: its event stream (GET)
	// and its message endpoint (POST), such as [/sse, /messages] (the TypeScript SDK's
	// example) or [/sse] (go-sdk, which takes messages on the stream's own path). A POST
	// there is parsed, authenticated and limited like one to the endpoint. The proxy also
	// learns a message endpoint from the endpoint event of each stream it relays; listing it
	// here makes every replica know it before any stream announced it. Clean absolute paths
	// (no escapes, dot segments, repeated or trailing slashes). A server that speaks only the
	// legacy transport needs none: its stream's URL is upstream.url itself.
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=512
	// +kubebuilder:validation:items:Pattern=`^/$|^(/[^/?#\s;%\\]+)+$`
	// +kubebuilder:validation:XValidation:rule="self.all(p, !p.matches('(^|/)[.]{1,2}(/|$)'))",message="legacySSEPaths must not hold . or .. segments"
	// +listType=atomic
	// +optional
	LegacySSEPaths []string `json:"legacySSEPaths,omitempty"`

	// PassthroughPaths are the other upstream paths the proxy forwards, unparsed and never
	// limited but authenticated like every request (a missing OIDC token is a 401). Every
	// path that is neither the MCP endpoint (in any spelling: case, trailing slash, escapes,
	// dot segments), a legacy SSE path, a message endpoint the proxy learned, nor listed here is answered 404 by the proxy. Never
	// list a path that reaches an MCP handler: its calls would not be limited.
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +optional
	PassthroughPaths []PassthroughPath `json:"passthroughPaths,omitempty"`

	// ResponseHeaderTimeout bounds the wait for the upstream's response headers (a JSON
	// answer to a tool call arrives when the tool is done): after it the proxy answers 504
	// with a JSON-RPC error. Default 5m: tools can be slow.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self) > duration('0s')",message="responseHeaderTimeout must be greater than 0"
	// +optional
	ResponseHeaderTimeout *metav1.Duration `json:"responseHeaderTimeout,omitempty"`
}

// PathType says how a pass-through path matches.
// +kubebuilder:validation:Enum=Exact;Prefix
type PathType string

const (
	// PathTypeExact matches the path alone.
	PathTypeExact PathType = "Exact"
	// PathTypePrefix matches the path and every path below it, element by element (as an
	// Ingress does): /docs covers /docs and /docs/a, not /docsx.
	PathTypePrefix PathType = "Prefix"
)

// PassthroughPath is a path the proxy forwards to the upstream unparsed.
// +kubebuilder:validation:XValidation:rule="!self.path.matches('(^|/)[.]{1,2}(/|$)')",message="path must not hold . or .. segments"
type PassthroughPath struct {
	// Path is a clean absolute path (no escapes, dot segments, repeated or trailing slashes,
	// ';' parameters or backslashes), matched case-sensitively against the request's path
	// once cleaned; the request is forwarded under that cleaned path.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^/$|^(/[^/?#\s;%\\]+)+$`
	Path string `json:"path"`

	// PathType is Exact (the default) or Prefix.
	// +kubebuilder:default=Exact
	// +optional
	PathType PathType `json:"pathType,omitempty"`

	// AllowUpgrade relays protocol upgrades (WebSocket) under this path. Off by default: an
	// upgraded connection is a raw tunnel the proxy cannot see into.
	// +optional
	AllowUpgrade bool `json:"allowUpgrade,omitempty"`
}

// OIDCConfig verifies OIDC bearer tokens (JWTs) and takes the caller's identity from a claim.
type OIDCConfig struct {
	// Issuer is the OIDC issuer URL; its discovery document gives the JWKS location.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://\S+$`
	Issuer string `json:"issuer"`

	// Audience is the value the token's aud claim must contain.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Audience string `json:"audience"`

	// JWKSURL overrides the JWKS location from discovery.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://\S+$`
	// +optional
	JWKSURL string `json:"jwksURL,omitempty"`

	// UserClaim is the claim that identifies the user for per-user limits. Default sub.
	// +kubebuilder:default=sub
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +optional
	UserClaim string `json:"userClaim,omitempty"`
}

// ConfigMapReference names a ConfigMap in the MCPServer's namespace.
type ConfigMapReference struct {
	// Name of the ConfigMap.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// SecretKeyReference names one key of a Secret in the MCPServer's namespace.
type SecretKeyReference struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Key within the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key"`
}

// SessionStorageProvider names where buckets live.
// +kubebuilder:validation:Enum=redis;memory
type SessionStorageProvider string

const (
	// SessionStorageRedis keeps buckets in Redis (standalone, Sentinel or Cluster), shared by
	// every proxy replica.
	SessionStorageRedis SessionStorageProvider = "redis"
	// SessionStorageMemory keeps buckets inside the single proxy replica: nothing to run, lost
	// on restart.
	SessionStorageMemory SessionStorageProvider = "memory"
)

// DefaultKeyPrefix is the Redis key prefix when sessionStorage.keyPrefix is unset.
const DefaultKeyPrefix = "tollgate"

// SessionStorageConfig says where the token buckets live.
//
// +kubebuilder:validation:XValidation:rule="self.provider != 'redis' || has(self.address) || has(self.addresses)",message="provider redis requires address (standalone) or addresses (Cluster, or Sentinel with masterName)"
// +kubebuilder:validation:XValidation:rule="!(has(self.address) && has(self.addresses))",message="set address or addresses, not both"
// +kubebuilder:validation:XValidation:rule="self.provider != 'memory' || (!has(self.address) && !has(self.addresses) && !has(self.masterName))",message="provider memory takes no address, addresses or masterName"
// +kubebuilder:validation:XValidation:rule="!has(self.masterName) || has(self.addresses)",message="masterName (Sentinel) requires addresses: the Sentinel addresses"
// +kubebuilder:validation:XValidation:rule="!has(self.addresses) || has(self.masterName) || !has(self.db) || self.db == 0",message="db must be 0 for Redis Cluster (addresses without masterName)"
type SessionStorageConfig struct {
	// Provider is redis or memory (the embedded single-replica limiter).
	Provider SessionStorageProvider `json:"provider"`

	// Address is host:port of a standalone Redis.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Address string `json:"address,omitempty"`

	// Addresses are host:port of Redis Cluster nodes, or of Sentinels when masterName is set.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=512
	// +listType=atomic
	// +optional
	Addresses []string `json:"addresses,omitempty"`

	// MasterName is the Sentinel master set name; with addresses it selects Sentinel.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	MasterName string `json:"masterName,omitempty"`

	// DB is the Redis database number; must be 0 for Cluster.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=15
	// +optional
	DB int32 `json:"db,omitempty"`

	// UsernameRef is the Secret key holding the Redis ACL username.
	// +optional
	UsernameRef *SecretKeyReference `json:"usernameRef,omitempty"`

	// PasswordRef is the Secret key holding the Redis password. The proxy reads it from a
	// mounted file, so a rotated password is picked up without a restart.
	// +optional
	PasswordRef *SecretKeyReference `json:"passwordRef,omitempty"`

	// TLS configures TLS to Redis. Unset: plain TCP.
	// +optional
	TLS *RedisTLSConfig `json:"tls,omitempty"`

	// KeyPrefix starts every key the limiter writes, so that several clusters or
	// installations can share one Redis. Letters, digits, '.', '_' and '-'; default tollgate.
	// +kubebuilder:default=tollgate
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9._-]{1,64}$`
	// +optional
	KeyPrefix string `json:"keyPrefix,omitempty"`

	// UserHashKeyRef is the Secret key holding the secret that keys user pseudonyms: the
	// HMAC of each user id that Redis keys, the decision log and log lines carry instead of
	// the id. At least 16 bytes; the proxy uses the value as it is (a trailing newline
	// removed). Unset: the operator creates a Secret <name>-proxy-userhash with a random
	// 256-bit key once, owned by this MCPServer, and never changes it. Set it to share
	// pseudonyms between servers (the same Secret for each) or to hold the key elsewhere
	// (an external secret store). Changing the key starts every user's per-user buckets
	// afresh once: docs/privacy.md says how to rotate.
	// +optional
	UserHashKeyRef *SecretKeyReference `json:"userHashKeyRef,omitempty"`
}

// RedisTLSConfig configures TLS to Redis.
type RedisTLSConfig struct {
	// CACertRef is the Secret key holding the PEM CA bundle that signs Redis's certificate.
	// Unset: the system roots.
	// +optional
	CACertRef *SecretKeyReference `json:"caCertRef,omitempty"`

	// ServerName overrides the name checked in Redis's certificate.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ServerName string `json:"serverName,omitempty"`

	// InsecureSkipVerify disables certificate verification. For tests only.
	// +optional
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// ProxySpec tunes the enforcement proxy's Deployment.
type ProxySpec struct {
	// Replicas is the number of proxy pods. Default 1; at most 1 with provider memory.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Image overrides the proxy image the operator was built with.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Image string `json:"image,omitempty"`

	// Resources are the proxy container's compute resources.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// HTTP bounds what one client can hold of the proxy: timeouts and caps, each with a safe
	// default.
	// +optional
	HTTP *HTTPServerConfig `json:"http,omitempty"`

	// Responses tunes what a limited client sees: the rejection status, shared buckets in
	// the RateLimit header, and the form of a rejected tools/call (an error, or a tool result
	// an LLM agent reads). Rendered into the proxy config as it is.
	// +optional
	Responses *ProxyResponses `json:"responses,omitempty"`

	// PublicURL is where clients reach the proxy from outside, such as
	// https://mcp.example.com, or https://example.com/tools when an ingress strips /tools: OIDC
	// challenges and the protected-resource metadata name it. Unset: derived from each request.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://[^\s/?#@]+(/[^\s?#]*)?$`
	// +optional
	PublicURL string `json:"publicURL,omitempty"`
}

// MCPServerStatus is the observed state of an MCPServer.
type MCPServerStatus struct {
	// ObservedGeneration is the metadata.generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Ready (the summary GitOps tools read), Stalled, RateLimitConfigValid and
	// the others listed in conditions.go, each stamped with observedGeneration.
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// URL is where clients reach the MCP endpoint through the proxy, inside the cluster.
	// +optional
	URL string `json:"url,omitempty"`
}

// MCPServer is an MCP server protected by a Tollgate enforcement proxy.
//
// The name becomes the proxy's objects' names, "<name>-proxy": the Service's must be a DNS-1035
// label (no dots, at most 63 characters, starting with a letter).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mcps,categories=tollgate
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 57",message="metadata.name must be a DNS-1035 label of at most 57 characters (lower-case letters, digits and '-', starting with a letter): the proxy's Service is named <name>-proxy"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.status.url`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MCPServer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   MCPServerSpec   `json:"spec"`
	Status MCPServerStatus `json:"status,omitempty"`
}

// MCPServerList is a list of MCPServers.
//
// +kubebuilder:object:root=true
type MCPServerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MCPServer `json:"items"`
}
