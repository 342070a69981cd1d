package v1alpha1

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tollgate-dev/tollgate/internal/resourceuri"
)

// Refill period bounds, as durations (the CRD states the same bounds in CEL).
const (
	minRefillPeriod = time.Millisecond
	maxRefillPeriod = 8760 * time.Hour
)

// Validate checks c against every bound the CRD's schema and CEL rules state, and the few that
// only Go can state (a cost no bucket could ever hold). It is the check the limiter runs before
// it accepts a config, and the operator's defense in depth for objects admitted around the
// rules. Each error names its bucket, like `tool "search" perUser bucket: maxTokens must be
// >= 1`; all are returned, joined. A nil config is valid (nothing is limited).
func (c *RateLimitConfig) Validate() error {
	if c == nil {
		return nil
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(c.Shared.validate("shared bucket"))
	add(c.PerUser.validate("perUser bucket"))
	if c.Shared == nil && c.PerUser == nil && len(c.Tools) == 0 && len(c.Prompts) == 0 && len(c.Resources) == 0 {
		add(errors.New("rateLimiting must set at least one of shared, perUser, tools, prompts or resources"))
	}
	switch c.FailurePolicy {
	case "", FailurePolicyAllow, FailurePolicyDeny, FailurePolicyLocal:
	default:
		add(fmt.Errorf("failurePolicy %q: must be Allow, Deny or Local", c.FailurePolicy))
	}
	switch c.Mode {
	case "", RateLimitModeEnforce, RateLimitModeShadow:
	default:
		add(fmt.Errorf("mode %q: must be Enforce or Shadow", c.Mode))
	}
	add(validateEntries(c, "tool", MaxNameLength, c.Tools, func(t ToolRateLimitConfig) entry {
		return entry{t.Name, t.Shared, t.PerUser, t.Cost}
	}, nil))
	add(validateEntries(c, "prompt", MaxNameLength, c.Prompts, func(p PromptRateLimitConfig) entry {
		return entry{p.Name, p.Shared, p.PerUser, p.Cost}
	}, nil))
	add(validateEntries(c, "resource", MaxURILength, c.Resources, func(r ResourceRateLimitConfig) entry {
		return entry{r.URI, r.Shared, r.PerUser, r.Cost}
	}, canonicalOnce()))
	add(c.validateTiers())
	return errors.Join(errs...)
}

// headerToken is an HTTP field name (RFC 9110 token).
var headerToken = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`)

// validateTiers checks the tiers: the bounds and rules the CRD states, and that every tool's
// cost fits the tier's buckets as it must fit the default ones. Each tier runs tierChecks, a
// chain of small checks (as ProxyConfig.Validate runs proxyConfigChecks): a new rule is a new
// link.
func (c *RateLimitConfig) validateTiers() error {
	if len(c.Tiers) > MaxTiers {
		return fmt.Errorf("tiers: at most %d entries, got %d", MaxTiers, len(c.Tiers))
	}
	v := tierValidation{cfg: c, toolCost: make(map[string]int32, len(c.Tools))}
	for _, t := range c.Tools {
		v.toolCost[t.Name] = max(t.Cost, 1)
	}
	var errs []error
	seen := make(map[string]bool, len(c.Tiers))
	for i := range c.Tiers {
		t := &c.Tiers[i]
		// A tier is named by its name in errors, or by its index when the name is not one.
		label := fmt.Sprintf("tier %q", t.Name)
		if msgs := validation.IsDNS1123Label(t.Name); len(msgs) > 0 {
			label = fmt.Sprintf("tiers[%d]", i)
			errs = append(errs, fmt.Errorf("%s: name %q: %s", label, t.Name, msgs[0]))
		} else if seen[t.Name] {
			errs = append(errs, fmt.Errorf("%s: listed more than once", label))
		}
		seen[t.Name] = true
		for _, check := range tierChecks {
			errs = append(errs, check(v, t, label)...)
		}
	}
	return errors.Join(errs...)
}

// tierValidation is what a tier's checks need of the config around it.
type tierValidation struct {
	cfg      *RateLimitConfig
	toolCost map[string]int32 // the cost of a call of each configured tool (at least 1)
}

// tierChecks are the links of a tier's validation, in the order their errors are reported.
// Each gets the tier and its label and returns its errors (none: nil).
var tierChecks = []func(v tierValidation, t *RateLimitTier, label string) []error{
	checkTierMatch,
	checkTierValues,
	checkTierShape,
	checkTierPerUser,
	checkTierTools,
}

// checkTierMatch: exactly one of claim and header, bounded, and a header that is a field name.
func checkTierMatch(_ tierValidation, t *RateLimitTier, label string) []error {
	switch m := t.Match; {
	case (m.Claim == "") == (m.Header == ""):
		return []error{fmt.Errorf("%s: match: set exactly one of claim and header", label)}
	case len(m.Claim) > MaxTierValueLength || len(m.Header) > MaxTierValueLength:
		return []error{fmt.Errorf("%s: match: claim or header name longer than %d bytes", label, MaxTierValueLength)}
	case m.Header != "" && !headerToken.MatchString(m.Header):
		return []error{fmt.Errorf("%s: match.header %q: not an HTTP header name", label, m.Header)}
	}
	return nil
}

// checkTierValues: one to MaxTierValues values, each 1 to MaxTierValueLength bytes.
func checkTierValues(_ tierValidation, t *RateLimitTier, label string) []error {
	var errs []error
	switch vals := t.Match.Values; {
	case len(vals) == 0:
		errs = append(errs, fmt.Errorf("%s: match.values: at least one value", label))
	case len(vals) > MaxTierValues:
		errs = append(errs, fmt.Errorf("%s: match.values: at most %d entries", label, MaxTierValues))
	}
	for j, val := range t.Match.Values {
		if val == "" || len(val) > MaxTierValueLength {
			errs = append(errs, fmt.Errorf("%s: match.values[%d]: must be 1 to %d bytes", label, j, MaxTierValueLength))
		}
	}
	return errs
}

// checkTierShape: an unlimited tier has no buckets; any other has perUser or tools, bounded.
func checkTierShape(_ tierValidation, t *RateLimitTier, label string) []error {
	switch {
	case t.Unlimited && (t.PerUser != nil || len(t.Tools) > 0):
		return []error{fmt.Errorf("%s: an unlimited tier has no per-user buckets: unset perUser and tools", label)}
	case t.Unlimited:
		return nil
	case t.PerUser == nil && len(t.Tools) == 0:
		return []error{fmt.Errorf("%s: must set perUser, tools or unlimited", label)}
	case len(t.Tools) > MaxTierTools:
		return []error{fmt.Errorf("%s: tools: at most %d entries, got %d", label, MaxTierTools, len(t.Tools))}
	}
	return nil
}

// checkTierPerUser: the tier's perUser bucket is valid and holds every tool's cost. An
// unlimited tier's buckets are refused by checkTierShape alone.
func checkTierPerUser(v tierValidation, t *RateLimitTier, label string) []error {
	if t.Unlimited {
		return nil
	}
	var errs []error
	if err := t.PerUser.validate(label + " perUser bucket"); err != nil {
		errs = append(errs, err)
	}
	// Every limited call takes its cost from the tier's perUser bucket: the largest
	// configured cost must fit it, as validateEntries checks for rateLimiting.perUser.
	if t.PerUser != nil && t.PerUser.MaxTokens >= 1 {
		for _, tc := range v.cfg.Tools {
			if tc.Cost > t.PerUser.MaxTokens {
				errs = append(errs, fmt.Errorf("%s perUser bucket: tool %q costs %d, above its maxTokens %d: no call could ever be admitted", label, tc.Name, tc.Cost, t.PerUser.MaxTokens))
			}
		}
	}
	return errs
}

// checkTierTools: each of the tier's tool buckets is named once, valid, and holds the tool's
// cost.
func checkTierTools(v tierValidation, t *RateLimitTier, label string) []error {
	if t.Unlimited {
		return nil
	}
	var errs []error
	seen := make(map[string]bool, len(t.Tools))
	for j, tt := range t.Tools {
		tl := fmt.Sprintf("%s tool %q", label, tt.Name)
		switch {
		case tt.Name == "":
			tl = fmt.Sprintf("%s tools[%d]", label, j)
			errs = append(errs, fmt.Errorf("%s: name must not be empty", tl))
		case len(tt.Name) > MaxNameLength:
			errs = append(errs, fmt.Errorf("%s: name longer than %d bytes", tl, MaxNameLength))
		case seen[tt.Name]:
			errs = append(errs, fmt.Errorf("%s: listed more than once", tl))
		}
		seen[tt.Name] = true
		if err := tt.PerUser.validate(tl + " perUser bucket"); err != nil {
			errs = append(errs, err)
			continue
		}
		if cost := v.toolCost[tt.Name]; cost > tt.PerUser.MaxTokens {
			errs = append(errs, fmt.Errorf("%s perUser bucket: the tool costs %d, above its maxTokens %d: no call could ever be admitted", tl, cost, tt.PerUser.MaxTokens))
		}
	}
	return errs
}

// TierAuthError returns why the tiers cannot be matched with the given authentication (oidc:
// claims can be read; header: gateway headers can be trusted), or nil. Claim tiers need OIDC,
// header tiers header authentication.
func (c *RateLimitConfig) TierAuthError(oidc, header bool) error {
	if c == nil {
		return nil
	}
	var errs []error
	for _, t := range c.Tiers {
		switch {
		case t.Match.Claim != "" && !oidc:
			errs = append(errs, fmt.Errorf("tier %q: match.claim %q needs OIDC authentication to read claims from", t.Name, t.Match.Claim))
		case t.Match.Header != "" && !header:
			errs = append(errs, fmt.Errorf("tier %q: match.header %q needs header authentication (a trusted gateway) to be trusted", t.Name, t.Match.Header))
		}
	}
	return errors.Join(errs...)
}

// ErrSameResource is wrapped by the error of a resources[] entry whose URI names, once
// canonicalised, the same resource as an earlier entry's: one bucket configured twice.
var ErrSameResource = errors.New("the same resource")

// canonicalOnce checks resource URIs: calls are matched by the canonical URI, so an entry
// without one could match nothing, and two entries with one canonical form would be one
// bucket configured twice (ErrSameResource).
func canonicalOnce() func(string) error {
	seen := map[string]string{}
	return func(uri string) error {
		c, err := resourceuri.Canonical(uri)
		if err != nil {
			return err
		}
		if other, ok := seen[c]; ok {
			return fmt.Errorf("%w as %q once canonicalised (%q)", ErrSameResource, other, c)
		}
		seen[c] = uri
		return nil
	}
}

// entry is the shape tools, prompts and resources have in common.
type entry struct {
	name            string
	shared, perUser *RateLimitBucket
	cost            int32
}

func validateEntries[T any](c *RateLimitConfig, kind string, maxLen int, items []T, view func(T) entry, checkName func(string) error) error {
	if len(items) > MaxRateLimitEntries {
		return fmt.Errorf("%ss: at most %d entries, got %d", kind, MaxRateLimitEntries, len(items))
	}
	var errs []error
	seen := make(map[string]bool, len(items))
	for i, it := range items {
		e := view(it)
		label := fmt.Sprintf("%s %q", kind, e.name)
		switch {
		case e.name == "":
			label = fmt.Sprintf("%ss[%d]", kind, i)
			errs = append(errs, fmt.Errorf("%s: name must not be empty", label))
		case len(e.name) > maxLen:
			errs = append(errs, fmt.Errorf("%s: name longer than %d bytes", label, maxLen))
		case seen[e.name]:
			errs = append(errs, fmt.Errorf("%s: listed more than once", label))
		case checkName != nil:
			if err := checkName(e.name); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", label, err))
			}
		}
		seen[e.name] = true
		if e.shared == nil && e.perUser == nil {
			errs = append(errs, fmt.Errorf("%s: must set shared or perUser", label))
		}
		if err := e.shared.validate(label + " shared bucket"); err != nil {
			errs = append(errs, err)
		}
		if err := e.perUser.validate(label + " perUser bucket"); err != nil {
			errs = append(errs, err)
		}
		if e.cost < 0 || e.cost > MaxBucketTokens {
			errs = append(errs, fmt.Errorf("%s: cost must be between 1 and %d", label, MaxBucketTokens))
			continue
		}
		// A call of this entry takes cost tokens from its own buckets and the server-level
		// ones: a cost above any of their capacities could never be admitted.
		for _, b := range []struct {
			name string
			b    *RateLimitBucket
		}{{"shared", e.shared}, {"perUser", e.perUser}, {"server shared", c.Shared}, {"server perUser", c.PerUser}} {
			if b.b != nil && b.b.MaxTokens >= 1 && e.cost > b.b.MaxTokens {
				errs = append(errs, fmt.Errorf("%s: cost %d exceeds the %s bucket's maxTokens %d: no call could ever be admitted", label, e.cost, b.name, b.b.MaxTokens))
			}
		}
	}
	return errors.Join(errs...)
}

// validate checks one bucket; label names it in the error. A nil bucket is valid (unset).
func (b *RateLimitBucket) validate(label string) error {
	if b == nil {
		return nil
	}
	switch p := b.RefillPeriod.Duration; {
	case b.MaxTokens < 1:
		return fmt.Errorf("%s: maxTokens must be >= 1", label)
	case b.MaxTokens > MaxBucketTokens:
		return fmt.Errorf("%s: maxTokens must be <= %d", label, MaxBucketTokens)
	case p <= 0:
		return fmt.Errorf("%s: refillPeriod must be greater than 0", label)
	case p < minRefillPeriod:
		return fmt.Errorf("%s: refillPeriod must be at least 1ms", label)
	case p > maxRefillPeriod:
		return fmt.Errorf("%s: refillPeriod must be at most 8760h (one year)", label)
	case int64(b.MaxTokens) > MaxBucketTokenMilliseconds/(p.Milliseconds()+1): // no int64 overflow
		return fmt.Errorf("%s: maxTokens × refillPeriod is too large: maxTokens × (refillPeriod in milliseconds + 1) must not exceed %d (for example 100000 tokens per 24h)", label, int64(MaxBucketTokenMilliseconds))
	}
	return nil
}

// cleanPath is an absolute path in clean form: no escapes, ';' parameters, backslashes,
// whitespace, query or fragment, no empty segment (repeated or trailing slash) — the
// pattern the CRD states for legacySSEPaths and passthroughPaths. Dot segments are refused
// apart (dotSegment), as the CRD's rule does.
var (
	cleanPath  = regexp.MustCompile(`^/$|^(/[^/?#\s;%\\]+)+$`)
	dotSegment = regexp.MustCompile(`(^|/)[.]{1,2}(/|$)`)
)

// MaxPathLength bounds legacySSEPaths and passthroughPaths entries.
const MaxPathLength = 512

// validPath returns why p is not a clean absolute path, or "".
func validPath(p string) string {
	switch {
	case len(p) > MaxPathLength:
		return fmt.Sprintf("longer than %d bytes", MaxPathLength)
	case !cleanPath.MatchString(p):
		return "must be a clean absolute path: starting with /, with no escapes, ';', backslashes, whitespace, query, fragment, repeated or trailing slashes"
	case dotSegment.MatchString(p):
		return "must not hold . or .. segments"
	}
	return ""
}

// Validate checks the upstream's paths and timeout (the URL itself is the caller's: the
// proxy and the operator parse it for their own needs). Errors name the field under prefix
// ("upstream", or "spec.upstream").
func (u *UpstreamSpec) Validate(prefix string) error {
	var errs []error
	for i, p := range u.LegacySSEPaths {
		if msg := validPath(p); msg != "" {
			errs = append(errs, fmt.Errorf("%s.legacySSEPaths[%d] %q: %s", prefix, i, p, msg))
		}
	}
	if len(u.LegacySSEPaths) > 8 {
		errs = append(errs, fmt.Errorf("%s.legacySSEPaths: at most 8 entries", prefix))
	}
	if len(u.PassthroughPaths) > 32 {
		errs = append(errs, fmt.Errorf("%s.passthroughPaths: at most 32 entries", prefix))
	}
	for i, r := range u.PassthroughPaths {
		if msg := validPath(r.Path); msg != "" {
			errs = append(errs, fmt.Errorf("%s.passthroughPaths[%d].path %q: %s", prefix, i, r.Path, msg))
		}
		switch r.PathType {
		case "", PathTypeExact, PathTypePrefix:
		default:
			errs = append(errs, fmt.Errorf("%s.passthroughPaths[%d].pathType %q: must be Exact or Prefix", prefix, i, r.PathType))
		}
	}
	if d := u.ResponseHeaderTimeout; d != nil && d.Duration <= 0 {
		errs = append(errs, fmt.Errorf("%s.responseHeaderTimeout: must be greater than 0", prefix))
	}
	return errors.Join(errs...)
}

// Validate checks the HTTP server bounds; errors name the field under prefix ("http", or
// "spec.proxy.http"). A nil config is valid (every default applies).
func (h *HTTPServerConfig) Validate(prefix string) error {
	if h == nil {
		return nil
	}
	var errs []error
	for _, d := range []struct {
		name string
		d    *metav1.Duration
	}{{"readHeaderTimeout", h.ReadHeaderTimeout}, {"bodyReadTimeout", h.BodyReadTimeout}, {"idleTimeout", h.IdleTimeout}} {
		if d.d != nil && d.d.Duration <= 0 {
			errs = append(errs, fmt.Errorf("%s.%s: must be greater than 0", prefix, d.name))
		}
	}
	for _, n := range []struct {
		name string
		v    int64
	}{
		{"maxConnections", int64(h.MaxConnections)}, {"maxBufferedBytes", h.MaxBufferedBytes},
		{"maxBufferedBytesPerCaller", h.MaxBufferedBytesPerCaller}, {"maxStreams", int64(h.MaxStreams)},
		{"maxStreamsPerCaller", int64(h.MaxStreamsPerCaller)},
	} {
		if n.v < 0 {
			errs = append(errs, fmt.Errorf("%s.%s: must be at least 1", prefix, n.name))
		}
	}
	orDefault := func(v, def int64) int64 {
		if v > 0 {
			return v
		}
		return def
	}
	if per, all := orDefault(h.MaxBufferedBytesPerCaller, DefaultMaxBufferedPerCaller), orDefault(h.MaxBufferedBytes, DefaultMaxBufferedBytes); per > all {
		errs = append(errs, fmt.Errorf("%s.maxBufferedBytesPerCaller: %d must be at most maxBufferedBytes (%d)", prefix, per, all))
	}
	if per, all := orDefault(int64(h.MaxStreamsPerCaller), DefaultMaxStreamsPerCaller), orDefault(int64(h.MaxStreams), DefaultMaxStreams); per > all {
		errs = append(errs, fmt.Errorf("%s.maxStreamsPerCaller: %d must be at most maxStreams (%d)", prefix, per, all))
	}
	return errors.Join(errs...)
}
