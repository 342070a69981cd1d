// Package scenario is the simulator's file format: what a scenario declares (a server's
// rateLimiting, replicas, traffic, a trace, expectations), how it is read strictly with
// file:line:field errors, and the defaults a scenario gets.
package scenario

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// Scenario is one scenario file.
type Scenario struct {
	// Name identifies the scenario in reports; defaults to the file name without extension.
	Name        string `json:"name,omitempty"`
	Description string `json:"description,omitempty"`
	// Server is the identity the limiter builds its keys from.
	Server Server `json:"server"`
	// RateLimiting is the MCPServer's spec.rateLimiting, the very same type.
	RateLimiting *v1alpha1.RateLimitConfig `json:"rateLimiting"`
	// Replicas is the number of proxy replicas (limiters) sharing one Redis; calls are dealt
	// to them in turn. Default 1.
	Replicas int `json:"replicas,omitempty"`
	// Seed drives every random choice (Poisson arrivals); the --seed flag overrides it.
	// Default 1.
	Seed *uint64 `json:"seed,omitempty"`
	// Duration is the simulated time span. Required unless a trace gives it.
	Duration Duration `json:"duration,omitempty"`
	// Traffic are the generators of calls.
	Traffic []Generator `json:"traffic,omitempty"`
	// Trace is a decision log (JSON lines) to replay, relative to the scenario file.
	Trace string `json:"trace,omitempty"`
	// Faults are Redis failures during the run: rateLimiting.failurePolicy answers them.
	Faults []Fault `json:"faults,omitempty"`
	// Expect are the properties that must hold.
	Expect Expect `json:"expect"`

	// File is where the scenario was read from.
	File string `json:"-"`
	// pos is where each field path was written in File.
	pos map[string]Pos
}

// Server names the simulated MCPServer.
type Server struct {
	Namespace string `json:"namespace,omitempty"` // default "default"
	Name      string `json:"name,omitempty"`      // default "sim"
}

// Generator makes the calls of one user, or of each user of a population.
type Generator struct {
	// Exactly one of User, Users and Anonymous.
	User      string      `json:"user,omitempty"`
	Users     *Population `json:"users,omitempty"`
	Anonymous bool        `json:"anonymous,omitempty"`
	// Method is tools/call (default), prompts/get or resources/read.
	Method string `json:"method,omitempty"`
	// Name is the tool or prompt name or the resource URI.
	Name string `json:"name"`
	// Rate is per user: "10/s", "3/m", "20/30s".
	Rate Rate `json:"rate"`
	// Pattern is constant (default), poisson, burst or ramp.
	Pattern string `json:"pattern,omitempty"`
	// From is where a ramp starts (default 0/s); it ends at Rate.
	From *Rate `json:"from,omitempty"`
	// Start and End bound the generator in simulated time; End defaults to the duration.
	Start Duration  `json:"start,omitempty"`
	End   *Duration `json:"end,omitempty"`
	// Cost is the tokens each call asks (before the entry's weight); default 1.
	Cost int32 `json:"cost,omitempty"`
	// Batch sends each arrival as a JSON-RPC batch of this many identical calls (one
	// decision, all or nothing); default 1.
	Batch int `json:"batch,omitempty"`
	// Jitter delays each arrival by a random amount in [0, jitter), drawn from the seed:
	// clients that do not all arrive in the same microsecond, in a different order each time.
	Jitter Duration `json:"jitter,omitempty"`
	// Claims are the verified OIDC claims the generator's users carry beside their id, each
	// a string or a list of strings ({plan: pro}, {groups: [sre, dev]}): what claim tiers
	// match.
	Claims map[string]Claim `json:"claims,omitempty"`
	// Headers are the headers the trusted gateway sets on the users' requests beside the
	// identity header, one value each ({X-Plan: gold}): what header tiers match.
	Headers map[string]string `json:"headers,omitempty"`
	// Tier is the tier the claims and headers resolve to under rateLimiting.tiers
	// (ratelimit.ResolveTier, as the proxy resolves it), "" for none: set by validation.
	Tier string `json:"-"`
}

// Claim is one claim's value: a string, or a list of strings (written as a list, it stays a
// JSON array even with one item, as in a token).
type Claim struct {
	Values []string
	List   bool
}

// JSON is the claim as it appears in a token's payload.
func (c Claim) JSON() json.RawMessage {
	var v any = c.Values
	switch {
	case !c.List && len(c.Values) == 1:
		v = c.Values[0]
	case c.Values == nil:
		v = []string{}
	}
	raw, _ := json.Marshal(v) // strings and lists of strings always marshal
	return raw
}

// Attributes are the generator's claims and headers as ratelimit.ResolveTier reads them:
// what the proxy would have from the verified token or the trusted gateway.
func (g *Generator) Attributes() ratelimit.Attributes {
	var a ratelimit.Attributes
	if len(g.Claims) > 0 {
		a.Claims = make(map[string]json.RawMessage, len(g.Claims))
		for k, c := range g.Claims {
			a.Claims[k] = c.JSON()
		}
	}
	if len(g.Headers) > 0 {
		a.Header = make(http.Header, len(g.Headers))
		for k, v := range g.Headers {
			a.Header.Set(k, v)
		}
	}
	return a
}

// Fault is one failure of the limiter's store during a run.
type Fault struct {
	// RedisDown: every script call fails in [from, to) of virtual time, as when Redis does
	// not answer (the proxy's circuit breaker then fails calls at once).
	RedisDown *Window `json:"redisDown,omitempty"`
}

// Window is a span of virtual time, [From, To).
type Window struct {
	From Duration `json:"from"`
	To   Duration `json:"to"`
}

// Contains reports whether the virtual time t is in the window.
func (w Window) Contains(t time.Duration) bool { return t >= w.From.Duration && t < w.To.Duration }

// Outages are the windows in which Redis is down, in time order (validation sorts faults and
// refuses overlaps).
func (s *Scenario) Outages() []Window {
	var out []Window
	for _, f := range s.Faults {
		if f.RedisDown != nil {
			out = append(out, *f.RedisDown)
		}
	}
	return out
}

// Population is count users named prefix + a zero-padded index: u0000 … u9999.
type Population struct {
	Count  int    `json:"count"`
	Prefix string `json:"prefix,omitempty"` // default "user-"
}

// Traffic patterns.
const (
	PatternConstant = "constant"
	PatternPoisson  = "poisson"
	PatternBurst    = "burst"
	PatternRamp     = "ramp"
)

// Expect lists the properties to check. The first three hold for any correct limiter and
// are checked unless set to false; the others are checked when present.
type Expect struct {
	// RejectionChangesNoBucket: a refused decision changes no bucket (observed in Redis).
	RejectionChangesNoBucket *bool `json:"rejectionChangesNoBucket,omitempty"`
	// PerUserRejectionNeverDrainsShared is the property's former name (it judged per-user
	// rejections and shared buckets only), still read: validation moves it to
	// RejectionChangesNoBucket.
	PerUserRejectionNeverDrainsShared *bool `json:"perUserRejectionNeverDrainsShared,omitempty"`
	TokenBucketEnvelope               *bool `json:"tokenBucketEnvelope,omitempty"`
	ReferenceModel                    *bool `json:"referenceModel,omitempty"`
	// TierEnvelope: each tier's users get their tier's buckets and envelope, and no other
	// per-user bucket. Checked unless false when rateLimiting has tiers.
	TierEnvelope *bool         `json:"tierEnvelope,omitempty"`
	Isolation    *Isolation    `json:"isolation,omitempty"`
	Fairness     *Fairness     `json:"fairness,omitempty"`
	NoStarvation *NoStarvation `json:"noStarvation,omitempty"`
	Counts       []Count       `json:"counts,omitempty"`
	RedisKeys    *RedisKeys    `json:"redisKeys,omitempty"`
	// OutageEnvelope: with failurePolicy Local, what the replicas' local buckets admit
	// during outages stays within the bound docs/proxy.md states. Checked unless false when
	// the scenario has faults and failurePolicy is Local.
	OutageEnvelope *bool `json:"outageEnvelope,omitempty"`
	// DenyCacheExact: the replay with the deny cache (as the proxy runs) and one without it
	// make the same decision for every call Redis could answer. It costs a second replay:
	// checked unless false up to DenyCacheExactCalls calls, and above only when true.
	DenyCacheExact *bool `json:"denyCacheExact,omitempty"`
}

// DenyCacheExactCalls is the most calls a scenario has for denyCacheExact to be checked
// without asking: its second replay about doubles a run (measured 2026-11-30: +50 to +90 % on
// the shipped scenarios), seconds for them, minutes for a million calls.
const DenyCacheExactCalls = 100_000

// DenyCacheExactOn reports whether denyCacheExact is checked in a run of calls calls.
func (e *Expect) DenyCacheExactOn(calls int) bool {
	if e.DenyCacheExact != nil {
		return *e.DenyCacheExact
	}
	return calls <= DenyCacheExactCalls
}

// RedisKeys bounds the limiter's keys in Redis: memory stays bounded when idle buckets'
// keys expire.
type RedisKeys struct {
	Peak    *Bounds `json:"peak,omitempty"`    // most keys alive at once
	Final   *Bounds `json:"final,omitempty"`   // alive at the end
	Expired *Bounds `json:"expired,omitempty"` // deleted by their TTL during the run
}

// On reports whether a default-on property is checked.
func On(b *bool) bool { return b == nil || *b }

// Isolation: each listed user's per-user outcomes are the same with and without the other
// users' traffic.
type Isolation struct {
	// Users to check; default every user.
	Users []string `json:"users,omitempty"`
	// Scope is perUser (default: only per-user buckets, since shared buckets couple users by
	// design) or all (keep the shared buckets too: "nobody else's traffic ever changed this
	// user's outcome").
	Scope string `json:"scope,omitempty"`
}

// UnmarshalText accepts `isolation: true`.
func (i *Isolation) UnmarshalText(b []byte) error {
	if string(b) != "true" {
		return errors.New("want true or a mapping {users, scope}")
	}
	*i = Isolation{}
	return nil
}

// Isolation scopes.
const (
	ScopePerUser = "perUser"
	ScopeAll     = "all"
)

// Fairness: Jain's index over the users whose demand exceeds their fair share.
type Fairness struct {
	Min float64 `json:"min"`
	// Window, when set, checks every window of this length; else the whole run.
	Window Duration `json:"window,omitempty"`
}

// NoStarvation: every user admitted at least Min times in every window in which they asked
// (at least min(Min, asked) when they asked fewer times).
type NoStarvation struct {
	Min    int      `json:"min"`
	Window Duration `json:"window"`
	// Users to check; default every user.
	Users []string `json:"users,omitempty"`
}

// Count bounds the outcomes of the calls that match its selectors.
type Count struct {
	User       string `json:"user,omitempty"`
	UserPrefix string `json:"userPrefix,omitempty"`
	Method     string `json:"method,omitempty"`
	Name       string `json:"name,omitempty"`
	// EachUser applies the bounds to every matching user separately, else to the sum.
	EachUser       bool    `json:"eachUser,omitempty"`
	Requests       *Bounds `json:"requests,omitempty"`
	Admitted       *Bounds `json:"admitted,omitempty"`
	Rejected       *Bounds `json:"rejected,omitempty"`
	ShadowRejected *Bounds `json:"shadowRejected,omitempty"`
	// The calls decided while Redis was down, by failurePolicy: let through (Allow), refused
	// (Deny), admitted or refused by the local buckets (Local). They are counted in
	// admitted and rejected too.
	FailOpen         *Bounds `json:"failOpen,omitempty"`
	FailClosed       *Bounds `json:"failClosed,omitempty"`
	DegradedAllowed  *Bounds `json:"degradedAllowed,omitempty"`
	DegradedRejected *Bounds `json:"degradedRejected,omitempty"`
}

// bounds lists the count's bounds by field name.
func (c *Count) bounds() map[string]*Bounds {
	return map[string]*Bounds{
		"requests": c.Requests, "admitted": c.Admitted, "rejected": c.Rejected, "shadowRejected": c.ShadowRejected,
		"failOpen": c.FailOpen, "failClosed": c.FailClosed, "degradedAllowed": c.DegradedAllowed, "degradedRejected": c.DegradedRejected,
	}
}

// Bounds is {min, max} (either optional) or a single number for an exact count.
type Bounds struct {
	Min *int64 `json:"min,omitempty"`
	Max *int64 `json:"max,omitempty"`
}

// UnmarshalText reads an exact count.
func (b *Bounds) UnmarshalText(t []byte) error {
	n, err := strconv.ParseInt(string(t), 10, 64)
	if err != nil {
		return errors.New("want a count or {min, max}")
	}
	*b = Bounds{Min: &n, Max: &n}
	return nil
}

// Holds reports whether n is within the bounds.
func (b *Bounds) Holds(n int64) bool {
	return b == nil || ((b.Min == nil || n >= *b.Min) && (b.Max == nil || n <= *b.Max))
}

func (b *Bounds) String() string {
	switch {
	case b.Min != nil && b.Max != nil && *b.Min == *b.Max:
		return strconv.FormatInt(*b.Min, 10)
	case b.Min != nil && b.Max != nil:
		return fmt.Sprintf("[%d, %d]", *b.Min, *b.Max)
	case b.Min != nil:
		return fmt.Sprintf(">= %d", *b.Min)
	case b.Max != nil:
		return fmt.Sprintf("<= %d", *b.Max)
	}
	return "any"
}

// Duration is a Go duration string ("90s", "1h30m"), plus "d" for whole days ("7d").
type Duration struct{ time.Duration }

// UnmarshalText parses a duration.
func (d *Duration) UnmarshalText(b []byte) error {
	s := string(b)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 32)
		if err != nil || n < 0 {
			return fmt.Errorf("%q: want a duration like 90s, 1h30m or 7d", s)
		}
		d.Duration = time.Duration(n) * 24 * time.Hour
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("%q: want a duration like 90s, 1h30m or 7d", s)
	}
	d.Duration = v
	return nil
}

// Rate is Count calls per Per: "10/s", "3/m", "100/h", "20/30s".
type Rate struct {
	Count int64
	Per   time.Duration
}

// UnmarshalText parses a rate.
func (r *Rate) UnmarshalText(b []byte) error {
	s := string(b)
	num, per, ok := strings.Cut(s, "/")
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if !ok || err != nil || n < 0 {
		return fmt.Errorf("%q: want a rate like 10/s, 3/m, 100/h or 20/30s", s)
	}
	per = strings.TrimSpace(per)
	switch per {
	case "ms", "s", "m", "h":
		per = "1" + per
	case "d":
		per = "24h"
	}
	p, err := time.ParseDuration(per)
	if err != nil || p < time.Microsecond {
		return fmt.Errorf("%q: want a rate like 10/s, 3/m, 100/h or 20/30s", s)
	}
	*r = Rate{Count: n, Per: p}
	return nil
}

func (r Rate) String() string { return fmt.Sprintf("%d/%s", r.Count, r.Per) }
