package v1alpha1

// Condition types of MCPServer.status.conditions.
const (
	// ConditionReady summarises the MCPServer for people and GitOps tools (kstatus reads Ready
	// with observedGeneration). True only when everything declared is in force: the proxy is
	// available with the declared limits. False with one of the Reason* constants otherwise.
	ConditionReady = "Ready"

	// ConditionStalled is True when reconciliation cannot make progress until someone changes
	// something (an invalid configuration). kstatus reports a plain Ready=False as InProgress
	// forever; Stalled=True makes it Failed.
	ConditionStalled = "Stalled"

	// ConditionRateLimitConfigValid says whether spec.rateLimiting can be enforced as written.
	// It is defense in depth: CEL admission rules are the primary gate.
	ConditionRateLimitConfigValid = "RateLimitConfigValid"

	// ConditionReferencesResolved says whether every ConfigMap and Secret the spec names exists
	// and holds the keys it needs.
	ConditionReferencesResolved = "ReferencesResolved"

	// ConditionProxyAvailable says whether the proxy Deployment has its desired replicas
	// available.
	ConditionProxyAvailable = "ProxyAvailable"
)

// Reasons of the RateLimitConfigValid condition.
const (
	// ReasonRateLimitConfigValid (status True): the rate-limit configuration is valid.
	ReasonRateLimitConfigValid = "RateLimitConfigValid"
	// ReasonPerUserRequiresAuth (status False): a perUser bucket is configured but no
	// authentication source is, so no user identity exists to key it by.
	ReasonPerUserRequiresAuth = "PerUserRequiresAuth"
	// ReasonTierMatchRequiresAuth (status False): a tier matches on what the configured
	// authentication cannot provide — match.claim without OIDC (no verified claims), or
	// match.header without header authentication (no trusted gateway). Such a tier can never
	// match: it is NOT enforced, the other limits are, and its users get the default buckets.
	ReasonTierMatchRequiresAuth = "TierMatchRequiresAuth"
	// ReasonRateLimitNotApplicable (status True): spec.rateLimiting is unset; nothing to
	// validate, which is trivially valid rather than an error.
	ReasonRateLimitNotApplicable = "RateLimitNotApplicable"
	// ReasonInvalidRateLimitConfig (status False): a bucket breaks a bound the admission rules
	// also check (an object admitted before the rules existed, or written around them).
	ReasonInvalidRateLimitConfig = "InvalidRateLimitConfig"
)

// Reasons of the ReferencesResolved condition (also used on Ready when it is the cause).
const (
	// ReasonReferencesResolved (status True): every referenced ConfigMap and Secret exists.
	ReasonReferencesResolved = "ReferencesResolved"
	// ReasonConfigMapNotFound (status False): a referenced ConfigMap does not exist.
	ReasonConfigMapNotFound = "ConfigMapNotFound"
	// ReasonSecretNotFound (status False): a referenced Secret does not exist.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonKeyNotFound (status False): a referenced ConfigMap or Secret lacks a needed key.
	ReasonKeyNotFound = "KeyNotFound"
	// ReasonSecretNotOwned (status False): the Secret the operator would create for the
	// user-hash key (<name>-proxy-userhash) exists but is not controlled by this MCPServer
	// (left by a deleted MCPServer of the same name until garbage collection removes it, or
	// made by someone else). The operator neither uses nor changes it: delete it, or name it
	// in spec.sessionStorage.userHashKeyRef to use it.
	ReasonSecretNotOwned = "SecretNotOwned"
)

// Reasons of the ProxyAvailable condition (also used on Ready when it is the cause).
const (
	// ReasonProxyAvailable (status True): all desired proxy replicas are available.
	ReasonProxyAvailable = "ProxyAvailable"
	// ReasonProxyUnavailable (status False): the proxy Deployment has fewer available replicas
	// than desired (starting, crash-looping, unschedulable).
	ReasonProxyUnavailable = "ProxyUnavailable"
	// ReasonProxyProgressing (status False): a new proxy revision is rolling out.
	ReasonProxyProgressing = "ProxyProgressing"
	// ReasonProxyScaledToZero (status False): spec.proxy.replicas is 0, so no proxy runs and
	// nothing is enforced (nor reachable through the proxy). Not stalled: it is what the spec
	// asks for; scale up to enforce.
	ReasonProxyScaledToZero = "ProxyScaledToZero"
)

// Reasons of the Ready and Stalled conditions, beside the causes above.
const (
	// ReasonReady (Ready True): the proxy is available and enforcing the declared limits.
	ReasonReady = "Ready"
	// ReasonInvalidConfig (Ready False, Stalled True): the spec, with what it references,
	// cannot be put in force as written: the proxy config rendered from it would be refused by
	// the proxy (a referenced ConfigMap's trustedProxies not a CIDR, say), or an object name
	// would be refused by the API server. The message says which field; nothing is applied.
	ReasonInvalidConfig = "InvalidConfig"
	// ReasonApplyFailed (Ready False): writing a managed object failed; retried.
	ReasonApplyFailed = "ApplyFailed"
	// ReasonNotStalled (Stalled False): reconciliation is making progress.
	ReasonNotStalled = "NotStalled"
)
