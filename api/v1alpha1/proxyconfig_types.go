package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ProxyConfigKind is the kind of the proxy's component config file.
const ProxyConfigKind = "ProxyConfig"

// ProxyConfig is the enforcement proxy's component config file (apiVersion
// tollgate.dev/v1alpha1, kind ProxyConfig): everything the proxy needs, fully resolved. The
// operator renders it from an MCPServer and its references into a ConfigMap; a person can
// write one by hand to run the proxy outside Kubernetes. It is not a custom resource.
type ProxyConfig struct {
	metav1.TypeMeta `json:",inline"`

	// Server is the identity of the protected server, used in Redis keys and metrics.
	Server ServerIdentity `json:"server"`

	// Generation is the metadata.generation of the MCPServer this config was rendered from
	// (the operator sets it; 0 in a config written by hand). The proxy reports the
	// generation it enforces as tollgate_config_generation: once every replica reports the
	// MCPServer's generation, its limits are live on all of them. Reloaded without a restart.
	// +optional
	Generation int64 `json:"generation,omitempty"`

	// Upstream is the MCP server behind the proxy; the proxy serves the MCP endpoint at the
	// path of upstream.url.
	Upstream UpstreamSpec `json:"upstream"`

	// Auth says how the proxy learns who calls. Exactly one of its fields is set.
	Auth ProxyAuth `json:"auth"`

	// SessionStorage is where the buckets live. The proxy's --redis flag overrides it.
	// +optional
	SessionStorage *ProxySessionStorage `json:"sessionStorage,omitempty"`

	// RateLimiting is the same block as MCPServer's spec.rateLimiting. Reloaded without a
	// restart when the file changes.
	// +optional
	RateLimiting *RateLimitConfig `json:"rateLimiting,omitempty"`

	// Responses tunes what a limited client sees. Reloaded without a restart.
	// +optional
	Responses *ProxyResponses `json:"responses,omitempty"`

	// MaxBodyBytes bounds a POST body on the MCP endpoint; larger ones get HTTP 413.
	// Default 1048576 (1 MiB). Reloaded without a restart.
	// +optional
	MaxBodyBytes int64 `json:"maxBodyBytes,omitempty"`

	// HTTP bounds what one client can hold of the proxy: timeouts and caps. Unset fields
	// take their defaults. A change needs a restart.
	// +optional
	HTTP *HTTPServerConfig `json:"http,omitempty"`

	// Replicas is how many proxy replicas share the store: with failurePolicy Local each
	// divides the shared buckets by it while the store is unreachable. The operator renders
	// spec.proxy.replicas (with an autoscaler, its minimum: the bound then holds at the
	// minimum and is looser above it). Default 1. Reloaded without a restart.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// PublicURL is the proxy's public base URL, such as https://mcp.example.com, or
	// https://example.com/tools when an ingress strips /tools. With OIDC, 401 challenges and the
	// protected-resource metadata (RFC 9728) name it, so that MCP clients find the metadata
	// behind an ingress. Unset: derived from each request (its Host, TLS or
	// X-Forwarded-Proto). A change needs a restart.
	// +optional
	PublicURL string `json:"publicURL,omitempty"`
}

// Defaults of HTTPServerConfig and UpstreamSpec.ResponseHeaderTimeout.
const (
	DefaultReadHeaderTimeout     = 10 * time.Second
	DefaultBodyReadTimeout       = 30 * time.Second
	DefaultIdleTimeout           = 120 * time.Second
	DefaultResponseHeaderTimeout = 5 * time.Minute
	DefaultMaxConnections        = 4096
	DefaultMaxBufferedBytes      = 64 << 20
	DefaultMaxBufferedPerCaller  = 4 << 20
	DefaultMaxStreams            = 1024
	DefaultMaxStreamsPerCaller   = 16
)

// HTTPServerConfig bounds what clients can hold of the proxy. Every wait has a timeout and
// every pool a cap, so that slow or numerous clients cannot exhaust the proxy for the others.
// A caller is the identity the proxy established, or the peer's IP address when it has none.
//
// +kubebuilder:validation:XValidation:rule="!has(self.maxBufferedBytesPerCaller) || self.maxBufferedBytesPerCaller <= (has(self.maxBufferedBytes) ? self.maxBufferedBytes : 67108864)",message="maxBufferedBytesPerCaller must be at most maxBufferedBytes (default 67108864)"
// +kubebuilder:validation:XValidation:rule="!has(self.maxStreamsPerCaller) || self.maxStreamsPerCaller <= (has(self.maxStreams) ? self.maxStreams : 1024)",message="maxStreamsPerCaller must be at most maxStreams (default 1024)"
type HTTPServerConfig struct {
	// ReadHeaderTimeout bounds the time to read a request's headers. Default 10s.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self) > duration('0s')",message="readHeaderTimeout must be greater than 0"
	// +optional
	ReadHeaderTimeout *metav1.Duration `json:"readHeaderTimeout,omitempty"`

	// BodyReadTimeout bounds the time to read a whole request body, from the end of the
	// headers: a body still arriving after it is answered 408 and its connection closed.
	// Default 30s.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self) > duration('0s')",message="bodyReadTimeout must be greater than 0"
	// +optional
	BodyReadTimeout *metav1.Duration `json:"bodyReadTimeout,omitempty"`

	// IdleTimeout closes a keep-alive connection idle for this long. Default 120s.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self) > duration('0s')",message="idleTimeout must be greater than 0"
	// +optional
	IdleTimeout *metav1.Duration `json:"idleTimeout,omitempty"`

	// MaxConnections caps open client connections; further ones wait to be accepted.
	// Default 4096.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	MaxConnections int32 `json:"maxConnections,omitempty"`

	// MaxBufferedBytes caps the request body bytes held in memory by all requests together
	// (bodies are buffered to be parsed): a request that would pass it is answered 503.
	// Default 67108864 (64 MiB); at least 1048576 (a whole body of the default maxBodyBytes).
	// +kubebuilder:validation:Minimum=1048576
	// +kubebuilder:validation:Maximum=68719476736
	// +optional
	MaxBufferedBytes int64 `json:"maxBufferedBytes,omitempty"`

	// MaxBufferedBytesPerCaller caps the body bytes one caller holds at once: a request that
	// would pass it is answered 429. Default 4194304 (4 MiB); at least maxBodyBytes (1048576
	// by default) and at most maxBufferedBytes.
	// +kubebuilder:validation:Minimum=1048576
	// +kubebuilder:validation:Maximum=68719476736
	// +optional
	MaxBufferedBytesPerCaller int64 `json:"maxBufferedBytesPerCaller,omitempty"`

	// MaxStreams caps the GET requests (server-sent event streams) open at once, in all:
	// further ones are answered 503. Default 1024.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	MaxStreams int32 `json:"maxStreams,omitempty"`

	// MaxStreamsPerCaller caps the GET requests one caller holds open: further ones are
	// answered 429. Default 16.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	MaxStreamsPerCaller int32 `json:"maxStreamsPerCaller,omitempty"`
}

// ProxyResponses tunes what a limited client sees.
type ProxyResponses struct {
	// RejectStatus is the HTTP status of a rate-limit rejection: 429 (the default) or 200.
	// Some MCP clients drop the body of a 429 (go-sdk reports only "Too Many Requests"); with
	// 200 they read the JSON-RPC error, with its retryAfterSeconds, as the call's result.
	// +kubebuilder:validation:Enum=200;429
	// +optional
	RejectStatus int `json:"rejectStatus,omitempty"`

	// ExposeSharedRemaining shows shared buckets' remaining tokens in the RateLimit header of
	// every response. Off by default: a shared bucket's level reveals other users' traffic.
	// Per-user buckets are always shown, and a rejecting bucket always is.
	// +optional
	ExposeSharedRemaining bool `json:"exposeSharedRemaining,omitempty"`

	// ToolRejection is how a rejected tools/call is answered: Error (the default), a JSON-RPC
	// error with HTTP rejectStatus; or ToolResult, HTTP 200 with a CallToolResult whose
	// isError is true and whose text says which limit was reached and when to retry, which an
	// LLM agent reads as its tool's result (no MCP SDK hands a 429 body to the model). The
	// RateLimit, RateLimit-Policy and Retry-After headers are sent with both. prompts/get and
	// resources/read are always answered with the error (their results have no isError).
	// +kubebuilder:validation:Enum=Error;ToolResult
	// +optional
	ToolRejection ToolRejection `json:"toolRejection,omitempty"`
}

// ToolRejection is the form of a rejected tools/call's answer.
type ToolRejection string

const (
	// ToolRejectionError answers a JSON-RPC error (code 429, data with retryAfterMs).
	ToolRejectionError ToolRejection = "Error"
	// ToolRejectionToolResult answers a CallToolResult with isError true.
	ToolRejectionToolResult ToolRejection = "ToolResult"
)

// ServerIdentity names the protected server: the MCPServer's namespace and name.
type ServerIdentity struct {
	// Namespace of the MCPServer (a DNS-1123 label).
	Namespace string `json:"namespace"`
	// Name of the MCPServer (a DNS-1123 subdomain).
	Name string `json:"name"`
}

// ProxyAuth says how the proxy identifies callers. Exactly one field is set.
type ProxyAuth struct {
	// Header trusts an identity header set by an authenticating gateway.
	// +optional
	Header *HeaderAuth `json:"header,omitempty"`
	// OIDC verifies bearer JWTs.
	// +optional
	OIDC *OIDCConfig `json:"oidc,omitempty"`
	// Anonymous identifies nobody; perUser buckets are refused with it.
	// +optional
	Anonymous *AnonymousAuth `json:"anonymous,omitempty"`
}

// HeaderAuth trusts an identity header set by an authenticating gateway in front of the proxy.
type HeaderAuth struct {
	// Name of the header, such as X-Forwarded-User.
	Name string `json:"name"`
	// TrustedProxies are the CIDRs the header is accepted from; unset: from anywhere (the
	// operator then renders a NetworkPolicy that lets only the gateway reach the proxy).
	// +optional
	TrustedProxies []string `json:"trustedProxies,omitempty"`
}

// AnonymousAuth identifies nobody. It has no fields.
type AnonymousAuth struct{}

// ProxySessionStorage is SessionStorageConfig resolved for the proxy: secrets are files the
// proxy reads (mounted Secrets rotate without a restart), never values in the config.
type ProxySessionStorage struct {
	// Provider is redis or memory.
	Provider SessionStorageProvider `json:"provider"`
	// Address is host:port of a standalone Redis.
	// +optional
	Address string `json:"address,omitempty"`
	// Addresses are Cluster nodes, or Sentinels with masterName.
	// +optional
	Addresses []string `json:"addresses,omitempty"`
	// MasterName is the Sentinel master set name.
	// +optional
	MasterName string `json:"masterName,omitempty"`
	// DB is the Redis database number.
	// +optional
	DB int32 `json:"db,omitempty"`
	// UsernameFile is a file holding the Redis ACL username.
	// +optional
	UsernameFile string `json:"usernameFile,omitempty"`
	// PasswordFile is a file holding the Redis password.
	// +optional
	PasswordFile string `json:"passwordFile,omitempty"`
	// TLS enables TLS to Redis.
	// +optional
	TLS *ProxyRedisTLS `json:"tls,omitempty"`
	// KeyPrefix starts every key; default tollgate.
	// +optional
	KeyPrefix string `json:"keyPrefix,omitempty"`
	// UserHashKeyFile is a file holding the secret (at least 16 bytes; a trailing newline is
	// removed) that keys user pseudonyms: the HMAC of each user id that Redis keys, the
	// decision log and log lines carry instead of the id. Every replica of a server must read
	// the same secret. Read once at start: a changed file is refused like any reload that
	// would rename buckets, and applies on a restart. Unset: a random key per process
	// (pseudonyms, and per-user buckets in a shared Redis, are then this process's own).
	// The operator always sets it.
	// +optional
	UserHashKeyFile string `json:"userHashKeyFile,omitempty"`
	// Timeout bounds each Redis command (dial, read, write). Default 100ms.
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// ProxyRedisTLS is RedisTLSConfig resolved for the proxy.
type ProxyRedisTLS struct {
	// CAFile is a PEM CA bundle; unset: the system roots.
	// +optional
	CAFile string `json:"caFile,omitempty"`
	// ServerName overrides the name checked in Redis's certificate.
	// +optional
	ServerName string `json:"serverName,omitempty"`
	// InsecureSkipVerify disables certificate verification. For tests only.
	// +optional
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}
