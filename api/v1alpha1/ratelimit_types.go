package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Bounds shared by the CRD schema, the Go-side validation and the limiter. The limiter's Lua
// script works in integer microseconds with doubles, which are exact only below 2^53: a bucket
// holds maxTokens × refillPeriod token-microseconds, so that product is bounded.
const (
	// MaxBucketTokens is the largest maxTokens (and cost) a bucket accepts.
	MaxBucketTokens = 1_000_000_000
	// MaxBucketTokenMilliseconds bounds maxTokens × (refillPeriod in whole milliseconds + 1):
	// 2^53 / 1000, so that maxTokens × refillPeriod in microseconds stays below 2^53.
	// 100000 tokens per 24h fit; so do 2.5 million per hour.
	MaxBucketTokenMilliseconds = 9_007_199_254_740
	// MaxRateLimitEntries bounds tools, prompts and resources (CEL cost budget, memory).
	MaxRateLimitEntries = 256
	// MaxNameLength bounds tool and prompt names (MCP allows 128 characters).
	MaxNameLength = 128
	// MaxURILength bounds resource URIs.
	MaxURILength = 2048
	// MaxTiers bounds rateLimiting.tiers, MaxTierTools each tier's tools, and MaxTierValues
	// each match's values (CEL cost budget; a tier is resolved on every request).
	MaxTiers      = 16
	MaxTierTools  = 64
	MaxTierValues = 32
	// MaxTierValueLength bounds a match value, a claim name and a header name.
	MaxTierValueLength = 256
)

// FailurePolicy says what the proxy does with a call when the limiter's store cannot be reached.
// +kubebuilder:validation:Enum=Allow;Deny;Local
type FailurePolicy string

const (
	// FailurePolicyAllow lets calls through while the store is unreachable (fail open), counted
	// in metrics. The default: an outage of the limiter does not become an outage of the server.
	FailurePolicyAllow FailurePolicy = "Allow"
	// FailurePolicyDeny answers HTTP 503 with Retry-After while the store is unreachable (fail
	// closed): for limits that protect something more important than availability.
	FailurePolicyDeny FailurePolicy = "Deny"
	// FailurePolicyLocal keeps limiting while the store is unreachable: each proxy replica
	// decides with in-process token buckets holding the same buckets (same costs, batches and
	// all-or-nothing rule), each shared bucket divided among the replicas (ProxyConfig
	// replicas; per-user buckets too with local.dividePerUser). Redis is authoritative again as
	// soon as it answers. docs/proxy.md states the over-admission bound across an outage.
	FailurePolicyLocal FailurePolicy = "Local"
)

// LocalFailurePolicy tunes failurePolicy Local.
type LocalFailurePolicy struct {
	// DividePerUser divides per-user buckets among the replicas too. Off by default: a user's
	// calls are usually spread over the replicas, and a divided per-user bucket would refuse a
	// user whose calls all reach one replica. Off, a user may get up to replicas × their
	// bucket during an outage.
	// +optional
	DividePerUser bool `json:"dividePerUser,omitempty"`
}

// RateLimitMode says whether decisions are enforced.
// +kubebuilder:validation:Enum=Enforce;Shadow
type RateLimitMode string

const (
	// RateLimitModeEnforce rejects calls that exceed a limit. The default.
	RateLimitModeEnforce RateLimitMode = "Enforce"
	// RateLimitModeShadow decides, counts and logs every call but never rejects one: a dark
	// launch of a new limit.
	RateLimitModeShadow RateLimitMode = "Shadow"
)

// RateLimitBucket is a token bucket: it holds at most maxTokens tokens, each limited call takes
// its cost in tokens, and it refills continuously from empty to full over refillPeriod (at
// maxTokens/refillPeriod tokens per unit of time). A bucket that has not been used is full.
//
// The rules start with the refillPeriod pattern (the same regular expression, [.] for \.) so
// that a refillPeriod the pattern rejects is reported once, by the pattern, instead of once
// more by every rule as a CEL "type conversion error" from duration(). The product bound is
// written as a division so that it cannot overflow int64 (1000000000 tokens per 8760h would).
//
// +kubebuilder:validation:XValidation:rule="!self.refillPeriod.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self.refillPeriod) > duration('0s')",message="refillPeriod must be greater than 0"
// +kubebuilder:validation:XValidation:rule="!self.refillPeriod.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self.refillPeriod) == duration('0s') || duration(self.refillPeriod) >= duration('1ms')",message="refillPeriod must be at least 1ms"
// +kubebuilder:validation:XValidation:rule="!self.refillPeriod.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self.refillPeriod) <= duration('8760h')",message="refillPeriod must be at most 8760h (one year)"
// +kubebuilder:validation:XValidation:rule="!self.refillPeriod.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || self.maxTokens <= 9007199254740 / (duration(self.refillPeriod).getMilliseconds() + 1)",message="maxTokens × refillPeriod is too large: maxTokens × (refillPeriod in milliseconds + 1) must not exceed 9007199254740 (for example 100000 tokens per 24h)"
type RateLimitBucket struct {
	// MaxTokens is the bucket's capacity: the largest burst it admits, and the number of
	// tokens it regains over one refillPeriod. From 1 to 1000000000.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	MaxTokens int32 `json:"maxTokens"`

	// RefillPeriod is the time the bucket takes to refill from empty to full, as a Go
	// duration ("1m", "1h30m", "500ms"; no "d" unit). From 1ms to 8760h, used at microsecond
	// precision, and maxTokens × (refillPeriod in milliseconds + 1) at most 9007199254740.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=64
	RefillPeriod metav1.Duration `json:"refillPeriod"`
}

// ToolRateLimitConfig limits one tool, in addition to the server-level buckets.
// +kubebuilder:validation:XValidation:rule="has(self.shared) || has(self.perUser)",message="each tools entry must set shared or perUser"
type ToolRateLimitConfig struct {
	// Name is the tool's name as clients send it in tools/call params.name (exact match).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Name string `json:"name"`

	// Shared is one bucket for all callers of this tool.
	// +optional
	Shared *RateLimitBucket `json:"shared,omitempty"`

	// PerUser is a bucket for each authenticated user of this tool. Requires authentication.
	// Redis holds one key per user per TTL window for it (see docs/limiter.md).
	// +optional
	PerUser *RateLimitBucket `json:"perUser,omitempty"`

	// Cost is the number of tokens one call of this tool takes from every bucket that applies
	// to it (server-level ones included): weight for expensive tools. Unset means 1.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	// +optional
	Cost int32 `json:"cost,omitempty"`
}

// PromptRateLimitConfig limits one prompt (prompts/get), in addition to the server-level buckets.
// +kubebuilder:validation:XValidation:rule="has(self.shared) || has(self.perUser)",message="each prompts entry must set shared or perUser"
type PromptRateLimitConfig struct {
	// Name is the prompt's name as clients send it in prompts/get params.name (exact match).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Name string `json:"name"`

	// Shared is one bucket for all callers of this prompt.
	// +optional
	Shared *RateLimitBucket `json:"shared,omitempty"`

	// PerUser is a bucket for each authenticated user of this prompt. Requires authentication.
	// +optional
	PerUser *RateLimitBucket `json:"perUser,omitempty"`

	// Cost is the number of tokens one get of this prompt takes from every bucket that applies
	// to it. Unset means 1.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	// +optional
	Cost int32 `json:"cost,omitempty"`
}

// ResourceRateLimitConfig limits one resource (resources/read), in addition to the server-level
// buckets.
// +kubebuilder:validation:XValidation:rule="has(self.shared) || has(self.perUser)",message="each resources entry must set shared or perUser"
type ResourceRateLimitConfig struct {
	// URI is the resource's URI as clients send it in resources/read params.uri. The proxy
	// normalises URIs before matching (see docs/proxy.md).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	URI string `json:"uri"`

	// Shared is one bucket for all readers of this resource.
	// +optional
	Shared *RateLimitBucket `json:"shared,omitempty"`

	// PerUser is a bucket for each authenticated reader of this resource. Requires
	// authentication.
	// +optional
	PerUser *RateLimitBucket `json:"perUser,omitempty"`

	// Cost is the number of tokens one read of this resource takes from every bucket that
	// applies to it. Unset means 1.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000000
	// +optional
	Cost int32 `json:"cost,omitempty"`
}

// RateLimitConfig declares the token buckets that limit an MCP server's tools/call, prompts/get
// and resources/read calls. A call is admitted only when every bucket that applies to it holds
// enough tokens, and then it takes its cost from all of them at once: a rejection by one bucket
// (say a user's own) never drains another (say the shared one).
//
// +kubebuilder:validation:XValidation:rule="has(self.shared) || has(self.perUser) || (has(self.tools) && size(self.tools) > 0) || (has(self.prompts) && size(self.prompts) > 0) || (has(self.resources) && size(self.resources) > 0)",message="rateLimiting must set at least one of shared, perUser, tools, prompts or resources"
type RateLimitConfig struct {
	// Shared is one bucket for all limited calls of all users.
	// +optional
	Shared *RateLimitBucket `json:"shared,omitempty"`

	// PerUser is a bucket for each authenticated user, over all of that user's limited calls.
	// Requires authentication (oidcConfig, oidcConfigRef or externalAuthConfigRef). Redis
	// holds about one key per user per TTL window for it (see docs/limiter.md).
	// +optional
	PerUser *RateLimitBucket `json:"perUser,omitempty"`

	// Tools limits individual tools by name. Tools not listed are limited only by the
	// server-level buckets.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Tools []ToolRateLimitConfig `json:"tools,omitempty"`

	// Prompts limits individual prompts by name.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Prompts []PromptRateLimitConfig `json:"prompts,omitempty"`

	// Resources limits individual resources by URI.
	// +listType=map
	// +listMapKey=uri
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Resources []ResourceRateLimitConfig `json:"resources,omitempty"`

	// Tiers give groups of users other per-user limits than rateLimiting.perUser and the tools'
	// perUser buckets, chosen from the caller's identity: an OIDC claim or a header set by the
	// trusted gateway. The first tier that matches wins; a caller no tier matches gets the
	// buckets above. Shared buckets apply to every tier alike. Requires authentication.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Tiers []RateLimitTier `json:"tiers,omitempty"`

	// FailurePolicy is what the proxy does when the limiter's store cannot be reached: Allow
	// (fail open, the default), Deny (HTTP 503) or Local (each replica limits with in-process
	// buckets, shared ones divided among the replicas).
	// +kubebuilder:default=Allow
	// +optional
	FailurePolicy FailurePolicy `json:"failurePolicy,omitempty"`

	// Local tunes failurePolicy Local.
	// +optional
	Local *LocalFailurePolicy `json:"local,omitempty"`

	// Mode is Enforce (the default) or Shadow: decide and report, never reject.
	// +kubebuilder:default=Enforce
	// +optional
	Mode RateLimitMode `json:"mode,omitempty"`
}

// RateLimitTier is a group of users with per-user limits of its own.
//
// +kubebuilder:validation:XValidation:rule="!has(self.unlimited) || !self.unlimited || (!has(self.perUser) && !has(self.tools))",message="an unlimited tier has no per-user buckets: unset perUser and tools"
// +kubebuilder:validation:XValidation:rule="(has(self.unlimited) && self.unlimited) || has(self.perUser) || (has(self.tools) && size(self.tools) > 0)",message="a tier must set perUser, tools or unlimited"
type RateLimitTier struct {
	// Name names the tier in metrics, logs, headers and the decision log: a DNS-1123 label,
	// unique among the tiers.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// Match says which callers are in the tier.
	Match TierMatch `json:"match"`

	// PerUser replaces rateLimiting.perUser for the tier's users. Unset: rateLimiting.perUser
	// applies to them as to everyone.
	// +optional
	PerUser *RateLimitBucket `json:"perUser,omitempty"`

	// Tools replaces the perUser bucket of each tool named, for the tier's users (a tool not
	// in rateLimiting.tools gets a per-user bucket for this tier only). Tools not named keep
	// their perUser buckets.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Tools []TierToolLimit `json:"tools,omitempty"`

	// Unlimited exempts the tier's users from every per-user bucket; shared buckets still
	// apply. Excludes perUser and tools.
	// +optional
	Unlimited bool `json:"unlimited,omitempty"`
}

// TierMatch selects a tier's users by one attribute of their identity: an OIDC claim or a
// header. Exactly one of claim and header.
//
// +kubebuilder:validation:XValidation:rule="has(self.claim) != has(self.header)",message="set exactly one of claim and header"
type TierMatch struct {
	// Claim is the name of a top-level claim of the caller's verified OIDC token (such as
	// plan, groups, or a namespaced https://example.com/plan): a string, or an array of
	// strings, matching when any of them is one of values. Requires OIDC authentication.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Claim string `json:"claim,omitempty"`

	// Header is a request header set by the trusted authenticating gateway, beside the
	// identity header (such as X-Plan), matching when its one value is one of values (exact,
	// case-sensitive). Requires header authentication; the gateway must set or strip it on
	// every request, as it does the identity header. Sent more than once, the request is
	// refused (400).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`
	// +optional
	Header string `json:"header,omitempty"`

	// Values are the claim or header values that select the tier (exact match).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	Values []string `json:"values"`
}

// TierToolLimit is a tier's per-user bucket for one tool.
type TierToolLimit struct {
	// Name is the tool's name as clients send it in tools/call params.name (exact match).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	Name string `json:"name"`

	// PerUser is the bucket each of the tier's users has for this tool.
	PerUser RateLimitBucket `json:"perUser"`
}

// HasPerUser reports whether any bucket of the config is per user (tiers' included).
func (c *RateLimitConfig) HasPerUser() bool {
	if c == nil {
		return false
	}
	if c.PerUser != nil || len(c.Tiers) > 0 {
		return true
	}
	for i := range c.Tools {
		if c.Tools[i].PerUser != nil {
			return true
		}
	}
	for i := range c.Prompts {
		if c.Prompts[i].PerUser != nil {
			return true
		}
	}
	for i := range c.Resources {
		if c.Resources[i].PerUser != nil {
			return true
		}
	}
	return false
}
