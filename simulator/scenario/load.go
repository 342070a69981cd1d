package scenario

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	yaml "go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/internal/pathlist"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// Limits that keep a typo from asking for a run that never ends.
const (
	MaxReplicas   = 64
	MaxPopulation = 100_000
	MaxBatch      = 1000
	MaxDuration   = 366 * 24 * time.Hour
)

// Error is an invalid scenario: the file, the line and column when known, and the field.
type Error struct {
	File   string
	Line   int // 0 when unknown
	Column int
	Field  string // "traffic[1].rate"; "" for the file as a whole
	Msg    string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Column)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errorf returns an Error at field of s, with the line where field (or its nearest written
// parent) appears in the file.
func (s *Scenario) Errorf(field, format string, args ...any) *Error {
	e := &Error{File: s.File, Field: field, Msg: fmt.Sprintf(format, args...)}
	if p, ok := s.Pos(field); ok {
		e.Line, e.Column = p.Line, p.Column
	}
	return e
}

// Pos is where field was written, or its nearest parent that was.
func (s *Scenario) Pos(field string) (Pos, bool) {
	for f := field; f != ""; f = parent(f) {
		if p, ok := s.pos[f]; ok {
			return p, true
		}
	}
	return Pos{}, false
}

func parent(field string) string {
	i := strings.LastIndexAny(field, ".[")
	if i < 0 {
		return ""
	}
	return field[:i]
}

// Files expands paths (files or folders, searched recursively) into the scenario files
// they name, sorted: every *.yaml and *.yml.
func Files(paths []string) ([]string, error) {
	return pathlist.Expand(paths, ".yaml", ".yml")
}

// Load reads, decodes and validates one scenario file. Every problem is an *Error.
func Load(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: err.Error()}
	}
	return Parse(path, data)
}

// Parse decodes and validates a scenario read from file path.
func Parse(path string, data []byte) (*Scenario, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: path, Msg: "empty file: a scenario needs at least server, rateLimiting and traffic"}
		}
		return nil, yamlError(path, err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		return nil, &Error{File: path, Line: more.Line, Column: more.Column, Msg: "one scenario per file: a second YAML document starts here"}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	s := &Scenario{File: path}
	d := &decoder{pos: map[string]Pos{}}
	if err := d.decode(root, reflect.ValueOf(s).Elem(), ""); err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			return nil, &Error{File: path, Line: fe.Pos.Line, Column: fe.Pos.Column, Field: fe.Field, Msg: fe.Msg}
		}
		return nil, &Error{File: path, Msg: err.Error()}
	}
	s.pos = d.pos
	if err := s.validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// yamlError turns a yaml.v3 syntax error ("yaml: line 3: ...") into an Error with the line.
func yamlError(path string, err error) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &Error{File: path, Msg: msg}
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		e.Line, e.Column = line, 1
		_, e.Msg, _ = strings.Cut(msg, ": ")
	}
	return e
}

// SeedOr is the scenario's seed, or def when the file sets none.
func (s *Scenario) SeedOr(def uint64) uint64 {
	if s.Seed != nil {
		return *s.Seed
	}
	return def
}

// TracePath is the trace file's path, resolved against the scenario's folder.
func (s *Scenario) TracePath() string {
	if s.Trace == "" || filepath.IsAbs(s.Trace) {
		return s.Trace
	}
	return filepath.Join(filepath.Dir(s.File), s.Trace)
}

// written reports whether field was written in the file (not merely defaulted).
func (s *Scenario) written(field string) bool {
	_, ok := s.pos[field]
	return ok
}

// GeneratorUsers lists the user ids generator g sends as ("" for anonymous).
func (g *Generator) GeneratorUsers() []string {
	switch {
	case g.Users != nil:
		width := len(fmt.Sprint(g.Users.Count - 1))
		out := make([]string, g.Users.Count)
		for i := range out {
			out[i] = fmt.Sprintf("%s%0*d", g.Users.Prefix, width, i)
		}
		return out
	case g.Anonymous:
		return []string{""}
	}
	return []string{g.User}
}

// validate checks what decoding cannot and fills in defaults.
func (s *Scenario) validate() error {
	if s.Name == "" {
		s.Name = strings.TrimSuffix(filepath.Base(s.File), filepath.Ext(s.File))
	}
	if s.Server.Namespace == "" {
		s.Server.Namespace = "default"
	}
	if s.Server.Name == "" {
		s.Server.Name = "sim"
	}
	if s.RateLimiting == nil {
		return s.Errorf("rateLimiting", "required: the MCPServer's spec.rateLimiting block to simulate")
	}
	// The limiter's own checks, run now so that a bad config is an invalid scenario (exit 2)
	// rather than a failed run. New does not touch Redis: without a config it checks the
	// server identity its keys are built from; with one, the buckets (bounds, resources that
	// normalise to one URI).
	if _, err := ratelimit.New(nil, s.Server.Namespace, s.Server.Name, nil); err != nil {
		return s.Errorf("server", "%v", err)
	}
	if _, err := ratelimit.New(noRedis{}, s.Server.Namespace, s.Server.Name, s.RateLimiting); err != nil {
		return s.Errorf("rateLimiting", "%v", err)
	}
	switch {
	case s.Replicas == 0 && s.written("replicas"):
		// Written as 0, it is a mistake (no replica decides anything), not the default.
		return s.Errorf("replicas", "must be between 1 and %d (leave it out for 1)", MaxReplicas)
	case s.Replicas == 0:
		s.Replicas = 1
	case s.Replicas < 0 || s.Replicas > MaxReplicas:
		return s.Errorf("replicas", "must be between 1 and %d", MaxReplicas)
	}
	if s.Duration.Duration > MaxDuration {
		return s.Errorf("duration", "at most %s", MaxDuration)
	}
	if s.Duration.Duration == 0 && s.Trace == "" {
		return s.Errorf("duration", "required (a Go duration such as 60s, or 7d)")
	}
	if len(s.Traffic) == 0 && s.Trace == "" {
		return s.Errorf("traffic", "required: at least one generator, or a trace")
	}
	if s.Trace != "" {
		fi, err := os.Stat(s.TracePath())
		switch {
		case err != nil:
			return s.Errorf("trace", "%v", err)
		case fi.IsDir():
			return s.Errorf("trace", "%s is a folder: want a decision log (JSON lines)", s.TracePath())
		}
	}
	if err := s.validateFaults(); err != nil {
		return err
	}
	users := map[string]bool{}
	for i := range s.Traffic {
		if err := s.validateGenerator(i); err != nil {
			return err
		}
		for _, u := range s.Traffic[i].GeneratorUsers() {
			users[u] = true
		}
	}
	return s.validateExpect(users)
}

// validateFaults checks each fault's window and sorts the faults by it: outages must not
// overlap (one outage is one span of failed calls) and must end within the duration.
func (s *Scenario) validateFaults() error {
	for i, f := range s.Faults {
		field := fmt.Sprintf("faults[%d]", i)
		if f.RedisDown == nil {
			return s.Errorf(field, "set redisDown: {from, to}")
		}
		w := f.RedisDown
		field += ".redisDown"
		switch {
		case !s.written(field + ".to"):
			return s.Errorf(field+".to", "required: when Redis answers again")
		case w.To.Duration <= w.From.Duration:
			return s.Errorf(field+".to", "must be after from (%s)", w.From.Duration)
		case s.Duration.Duration > 0 && w.To.Duration > s.Duration.Duration:
			return s.Errorf(field+".to", "%s is after the scenario's duration %s", w.To.Duration, s.Duration.Duration)
		}
	}
	// Sorted by start, stably: errors above name the faults as written.
	slices.SortStableFunc(s.Faults, func(a, b Fault) int { return cmp.Compare(a.RedisDown.From.Duration, b.RedisDown.From.Duration) })
	for i := 1; i < len(s.Faults); i++ {
		if prev, w := s.Faults[i-1].RedisDown, s.Faults[i].RedisDown; w.From.Duration < prev.To.Duration {
			return s.Errorf("faults", "the outages [%s, %s) and [%s, %s) overlap: write them as one", prev.From.Duration, prev.To.Duration, w.From.Duration, w.To.Duration)
		}
	}
	return nil
}

func (s *Scenario) validateGenerator(i int) error {
	g := &s.Traffic[i]
	f := func(name string) string { return fmt.Sprintf("traffic[%d].%s", i, name) }
	for _, check := range generatorChecks {
		if err := check(s, g, i, f); err != nil {
			return err
		}
	}
	return s.validateIdentity(i)
}

// generatorChecks validate one traffic generator, in order, each filling in its defaults; the
// first error is reported. f names a field of the generator (traffic[i].<name>).
var generatorChecks = []func(s *Scenario, g *Generator, i int, f func(string) string) error{
	checkGeneratorWho, checkGeneratorMethod, checkGeneratorPattern, checkGeneratorRate,
	checkGeneratorSpan, checkGeneratorCost, checkGeneratorBatch,
}

// checkGeneratorWho: exactly one of user, users and anonymous; a population's bounds.
func checkGeneratorWho(s *Scenario, g *Generator, i int, f func(string) string) error {
	set := 0
	for _, b := range []bool{g.User != "", g.Users != nil, g.Anonymous} {
		if b {
			set++
		}
	}
	if set != 1 {
		return s.Errorf(fmt.Sprintf("traffic[%d]", i), "set exactly one of user, users and anonymous")
	}
	if g.Users != nil {
		if g.Users.Count < 1 || g.Users.Count > MaxPopulation {
			return s.Errorf(f("users.count"), "must be between 1 and %d", MaxPopulation)
		}
		if g.Users.Prefix == "" {
			g.Users.Prefix = "user-"
		}
	}
	return nil
}

// checkGeneratorMethod: a limited method (default tools/call) and a name.
func checkGeneratorMethod(s *Scenario, g *Generator, _ int, f func(string) string) error {
	if g.Method == "" {
		g.Method = ratelimit.MethodToolsCall
	}
	if !ratelimit.IsLimited(g.Method) {
		return s.Errorf(f("method"), "%q: must be tools/call, prompts/get or resources/read", g.Method)
	}
	if g.Name == "" {
		return s.Errorf(f("name"), "required: the tool or prompt name, or the resource URI")
	}
	return nil
}

// checkGeneratorPattern: a known pattern (default constant); only a ramp has from.
func checkGeneratorPattern(s *Scenario, g *Generator, _ int, f func(string) string) error {
	switch g.Pattern {
	case "":
		g.Pattern = PatternConstant
	case PatternConstant, PatternPoisson, PatternBurst, PatternRamp:
	default:
		return s.Errorf(f("pattern"), "%q: must be constant, poisson, burst or ramp", g.Pattern)
	}
	if g.From != nil && g.Pattern != PatternRamp {
		return s.Errorf(f("from"), "only a ramp has a starting rate")
	}
	return nil
}

// checkGeneratorRate: a rate above 0 (a ramp may start from one and end at 0).
func checkGeneratorRate(s *Scenario, g *Generator, _ int, f func(string) string) error {
	if g.Rate.Per == 0 {
		return s.Errorf(f("rate"), "required, like 10/s, 3/m or 20/30s")
	}
	if g.Rate.Count == 0 && (g.Pattern != PatternRamp || g.From == nil || g.From.Count == 0) {
		return s.Errorf(f("rate"), "must be above 0")
	}
	return nil
}

// checkGeneratorSpan: start before end, end within the scenario, jitter shorter than the span.
func checkGeneratorSpan(s *Scenario, g *Generator, _ int, f func(string) string) error {
	end := s.Duration.Duration
	if g.End != nil {
		end = g.End.Duration
		if s.Duration.Duration > 0 && end > s.Duration.Duration {
			return s.Errorf(f("end"), "%s is after the scenario's duration %s", end, s.Duration.Duration)
		}
	} else if end == 0 {
		return s.Errorf(f("end"), "required when the scenario has no duration")
	}
	if g.Start.Duration >= end {
		return s.Errorf(f("start"), "%s must be before the generator's end %s", g.Start.Duration, end)
	}
	if g.Jitter.Duration >= end-g.Start.Duration {
		return s.Errorf(f("jitter"), "%s is not shorter than the generator's span", g.Jitter.Duration)
	}
	return nil
}

// checkGeneratorCost: not negative (default 1).
func checkGeneratorCost(s *Scenario, g *Generator, _ int, f func(string) string) error {
	if g.Cost < 0 {
		return s.Errorf(f("cost"), "must not be negative")
	}
	if g.Cost == 0 {
		g.Cost = 1
	}
	return nil
}

// checkGeneratorBatch: 1 to MaxBatch calls a batch (default 1).
func checkGeneratorBatch(s *Scenario, g *Generator, _ int, f func(string) string) error {
	switch {
	case g.Batch == 0:
		g.Batch = 1
	case g.Batch < 0 || g.Batch > MaxBatch:
		return s.Errorf(f("batch"), "must be between 1 and %d", MaxBatch)
	}
	return nil
}

// headerNameRE is an HTTP field name (RFC 9110 token), as rateLimiting.tiers' match.header.
var headerNameRE = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`)

// validateIdentity checks generator i's claims and headers and resolves its users' tier as
// the proxy would, with the one resolution the proxy uses (ratelimit.ResolveTier).
func (s *Scenario) validateIdentity(i int) error {
	g := &s.Traffic[i]
	f := func(name string) string { return fmt.Sprintf("traffic[%d].%s", i, name) }
	if g.Anonymous && (g.Claims != nil || g.Headers != nil) {
		field := "claims"
		if g.Claims == nil {
			field = "headers"
		}
		return s.Errorf(f(field), "an anonymous caller has no identity to carry claims or headers (use user or users)")
	}
	canonical := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(g.Headers)) {
		field := f("headers." + name)
		if !headerNameRE.MatchString(name) {
			return s.Errorf(field, "%q is not a header name (letters, digits and !#$%%&'*+.^_|~-)", name)
		}
		c := http.CanonicalHeaderKey(name)
		if other, ok := canonical[c]; ok {
			return s.Errorf(field, "the same header as %s (header names ignore case): a header is sent once", other)
		}
		canonical[c] = name
		if v := g.Headers[name]; strings.ContainsAny(v, "\r\n\x00") {
			return s.Errorf(field, "a header value cannot hold a line break or NUL")
		}
	}
	g.Tier = ratelimit.ResolveTier(s.RateLimiting.Tiers, g.Attributes())
	return nil
}

func (s *Scenario) validateExpect(users map[string]bool) error {
	for _, check := range expectChecks {
		if err := check(s, &s.Expect, users); err != nil {
			return err
		}
	}
	return nil
}

// expectChecks validate the expectations, in order, each filling in its defaults; the first
// error is reported. users are the users the traffic names.
var expectChecks = []func(s *Scenario, e *Expect, users map[string]bool) error{
	checkExpectRenamed, checkExpectApplicable, checkExpectIsolation, checkExpectFairness,
	checkExpectNoStarvation, checkExpectRedisKeys, checkExpectCounts,
}

// checkExpectRenamed moves perUserRejectionNeverDrainsShared to its new name.
func checkExpectRenamed(s *Scenario, e *Expect, _ map[string]bool) error {
	if e.PerUserRejectionNeverDrainsShared != nil {
		if e.RejectionChangesNoBucket != nil {
			return s.Errorf("expect.perUserRejectionNeverDrainsShared", "the former name of rejectionChangesNoBucket: set only one of them")
		}
		e.RejectionChangesNoBucket, e.PerUserRejectionNeverDrainsShared = e.PerUserRejectionNeverDrainsShared, nil
	}
	return nil
}

// checkExpectApplicable: a property turned on must have something to check, and some
// property must be on.
func checkExpectApplicable(s *Scenario, e *Expect, _ map[string]bool) error {
	hasTiers := len(s.RateLimiting.Tiers) > 0
	if e.TierEnvelope != nil && *e.TierEnvelope && !hasTiers {
		return s.Errorf("expect.tierEnvelope", "rateLimiting has no tiers, so there is no tier envelope to check")
	}
	local := s.LocalOutages()
	if e.OutageEnvelope != nil && *e.OutageEnvelope && !local {
		return s.Errorf("expect.outageEnvelope", "needs faults and rateLimiting.failurePolicy Local: only then do local buckets decide")
	}
	if e.checksNothing(hasTiers, local) {
		return s.Errorf("expect", "every property is off: the scenario would check nothing (turn one back on, or add counts)")
	}
	return nil
}

// knownUsers checks that every user a field names sends traffic (trace users are known only
// once the trace is read).
func (s *Scenario) knownUsers(users map[string]bool, field string, list []string) error {
	if s.Trace != "" {
		return nil
	}
	for i, u := range list {
		if !users[u] {
			return s.Errorf(fmt.Sprintf("%s[%d]", field, i), "user %q sends no traffic in this scenario", u)
		}
	}
	return nil
}

func checkExpectIsolation(s *Scenario, e *Expect, users map[string]bool) error {
	iso := e.Isolation
	if iso == nil {
		return nil
	}
	switch iso.Scope {
	case "":
		iso.Scope = ScopePerUser
	case ScopePerUser, ScopeAll:
	default:
		return s.Errorf("expect.isolation.scope", "%q: must be perUser or all", iso.Scope)
	}
	if iso.Scope == ScopePerUser && !s.RateLimiting.HasPerUser() {
		return s.Errorf("expect.isolation", "rateLimiting has no perUser bucket, so per-user isolation has nothing to compare (use scope: all, or add a perUser bucket)")
	}
	return s.knownUsers(users, "expect.isolation.users", iso.Users)
}

func checkExpectFairness(s *Scenario, e *Expect, _ map[string]bool) error {
	if fa := e.Fairness; fa != nil && (fa.Min <= 0 || fa.Min > 1) {
		return s.Errorf("expect.fairness.min", "Jain's index is in (0, 1]: got %v", fa.Min)
	}
	return nil
}

func checkExpectNoStarvation(s *Scenario, e *Expect, users map[string]bool) error {
	ns := e.NoStarvation
	if ns == nil {
		return nil
	}
	if ns.Min < 1 {
		return s.Errorf("expect.noStarvation.min", "must be at least 1")
	}
	if ns.Window.Duration <= 0 {
		return s.Errorf("expect.noStarvation.window", "required, like 10s")
	}
	return s.knownUsers(users, "expect.noStarvation.users", ns.Users)
}

func checkExpectRedisKeys(s *Scenario, e *Expect, _ map[string]bool) error {
	if k := e.RedisKeys; k != nil && k.Peak == nil && k.Final == nil && k.Expired == nil {
		return s.Errorf("expect.redisKeys", "set at least one of peak, final and expired")
	}
	return nil
}

func checkExpectCounts(s *Scenario, e *Expect, users map[string]bool) error {
	for i := range e.Counts {
		c := &e.Counts[i]
		f := fmt.Sprintf("expect.counts[%d]", i)
		if c.User != "" && c.UserPrefix != "" {
			return s.Errorf(f, "set user or userPrefix, not both")
		}
		bounds := c.bounds()
		if !slices.ContainsFunc(slices.Collect(maps.Values(bounds)), func(b *Bounds) bool { return b != nil }) {
			return s.Errorf(f, "set at least one of requests, admitted, rejected, shadowRejected, failOpen, failClosed, degradedAllowed and degradedRejected")
		}
		if c.Method != "" && !ratelimit.IsLimited(c.Method) {
			return s.Errorf(f+".method", "%q: must be tools/call, prompts/get or resources/read", c.Method)
		}
		if c.User != "" {
			if err := s.knownUsers(users, f+".user", []string{c.User}); err != nil {
				return s.Errorf(f+".user", "user %q sends no traffic in this scenario", c.User)
			}
		}
		for _, name := range slices.Sorted(maps.Keys(bounds)) {
			if b := bounds[name]; b != nil && b.Min != nil && b.Max != nil && *b.Min > *b.Max {
				return s.Errorf(f+"."+name, "min %d is above max %d", *b.Min, *b.Max)
			}
		}
	}
	return nil
}

// TierEnvelopeOn reports whether tierEnvelope is checked: unless false, when there are tiers.
func (e *Expect) TierEnvelopeOn(hasTiers bool) bool { return hasTiers && On(e.TierEnvelope) }

// OutageEnvelopeOn reports whether outageEnvelope is checked: unless false, when local
// buckets decide during outages (Scenario.LocalOutages).
func (e *Expect) OutageEnvelopeOn(localOutages bool) bool {
	return localOutages && On(e.OutageEnvelope)
}

// LocalOutages reports whether the scenario has outages that failurePolicy Local answers
// with local buckets.
func (s *Scenario) LocalOutages() bool {
	return len(s.Outages()) > 0 && s.RateLimiting.FailurePolicy == v1alpha1.FailurePolicyLocal
}

// checksNothing reports whether every property is off.
func (e *Expect) checksNothing(hasTiers, localOutages bool) bool {
	return !On(e.RejectionChangesNoBucket) && !On(e.TokenBucketEnvelope) && !On(e.ReferenceModel) && !e.TierEnvelopeOn(hasTiers) &&
		!On(e.DenyCacheExact) && !e.OutageEnvelopeOn(localOutages) &&
		e.Isolation == nil && e.Fairness == nil && e.NoStarvation == nil && len(e.Counts) == 0 && e.RedisKeys == nil
}

// noRedis lets validation build a limiter, which checks the config without calling Redis.
type noRedis struct{ redis.Scripter }

// PerUserOnly returns a copy of cfg without its shared buckets, nil when it has no per-user
// bucket: the config the isolation property replays with. An entry that has only a shared
// bucket but weighs its calls (cost > 1) keeps an unbounded shared bucket instead, because
// the weight also applies to the per-user buckets and an entry needs a bucket to exist.
func PerUserOnly(cfg *v1alpha1.RateLimitConfig) *v1alpha1.RateLimitConfig {
	// Tiers are per-user buckets only: they stay.
	out := &v1alpha1.RateLimitConfig{PerUser: cfg.PerUser, Tiers: cfg.Tiers, FailurePolicy: cfg.FailurePolicy, Mode: cfg.Mode}
	keep := func(perUser *v1alpha1.RateLimitBucket, cost int32) (shared *v1alpha1.RateLimitBucket, ok bool) {
		switch {
		case perUser != nil:
			return nil, true
		case cost > 1:
			return unbounded, true
		}
		return nil, false
	}
	for _, t := range cfg.Tools {
		if sh, ok := keep(t.PerUser, t.Cost); ok {
			out.Tools = append(out.Tools, v1alpha1.ToolRateLimitConfig{Name: t.Name, Shared: sh, PerUser: t.PerUser, Cost: t.Cost})
		}
	}
	for _, p := range cfg.Prompts {
		if sh, ok := keep(p.PerUser, p.Cost); ok {
			out.Prompts = append(out.Prompts, v1alpha1.PromptRateLimitConfig{Name: p.Name, Shared: sh, PerUser: p.PerUser, Cost: p.Cost})
		}
	}
	for _, r := range cfg.Resources {
		if sh, ok := keep(r.PerUser, r.Cost); ok {
			out.Resources = append(out.Resources, v1alpha1.ResourceRateLimitConfig{URI: r.URI, Shared: sh, PerUser: r.PerUser, Cost: r.Cost})
		}
	}
	if !out.HasPerUser() {
		return nil
	}
	return out
}

// unbounded is a bucket no simulated traffic empties: the most tokens a bucket may hold,
// refilled every millisecond.
var unbounded = &v1alpha1.RateLimitBucket{MaxTokens: v1alpha1.MaxBucketTokens, RefillPeriod: metav1.Duration{Duration: time.Millisecond}}

// ForTrace is the scenario `simulator whatif` replays: trace (a decision log) under cfg, for
// server, with the default expectations; file is where cfg was read from (errors name it).
// The trace path is taken as given (relative to the working directory), not relative to file.
func ForTrace(file, trace string, server Server, cfg *v1alpha1.RateLimitConfig) (*Scenario, error) {
	abs, err := filepath.Abs(trace)
	if err != nil {
		return nil, &Error{File: trace, Msg: err.Error()}
	}
	s := &Scenario{File: file, Server: server, RateLimiting: cfg, Trace: abs}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return s, nil
}
