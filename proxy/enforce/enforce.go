// Package enforce is the proxy's request path. It is closed by default: a request reaches the
// upstream only when its path is the MCP endpoint (in any spelling), a message endpoint the
// proxy learned, or an allow-listed pass-through path; when its method and body fit that path;
// when its caller is identified as the config requires; and, for a POST to an endpoint, when
// its JSON-RPC body was parsed and every limited call in it was decided. See docs/security.md.
package enforce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/auth"
	"github.com/tollgate-dev/tollgate/proxy/mcp"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/proxy/route"
	"github.com/tollgate-dev/tollgate/proxy/store"
)

// Options are what the handler is built with once; Limits can change at run time.
type Options struct {
	// Upstream is the MCP server's endpoint URL; its path is the endpoint the proxy parses.
	Upstream *url.URL
	// Routes routes request paths; nil: the endpoint alone (no message or pass-through paths).
	Routes *route.Table
	// Auth identifies callers.
	Auth auth.Authenticator
	// Metadata, when set, serves RFC 9728 protected-resource metadata at
	// /.well-known/oauth-protected-resource<endpoint path> (OIDC).
	Metadata http.Handler
	// Transport reaches the upstream; nil: NewTransport(v1alpha1.DefaultResponseHeaderTimeout).
	Transport http.RoundTripper
	// BodyReadTimeout bounds the reading of one request body; default
	// v1alpha1.DefaultBodyReadTimeout.
	BodyReadTimeout time.Duration
	// MaxBufferedBytes and MaxBufferedBytesPerCaller cap the body bytes held in memory, in
	// all and per caller; defaults v1alpha1.DefaultMaxBufferedBytes and
	// DefaultMaxBufferedPerCaller.
	MaxBufferedBytes, MaxBufferedBytesPerCaller int64
	// MaxStreams and MaxStreamsPerCaller cap the GET requests open at once, in all and per
	// caller; defaults v1alpha1.DefaultMaxStreams and DefaultMaxStreamsPerCaller.
	MaxStreams, MaxStreamsPerCaller int
	// UserHashKey keys the user hash in the decision log (the limiter's key).
	UserHashKey []byte
	// Metrics counts; nil: metrics nobody reads.
	Metrics     *Metrics
	DecisionLog *DecisionLog
	Log         *slog.Logger
	// Now is the proxy's clock (decision-log times when Redis gave none, check durations,
	// deadlines); nil: time.Now.
	Now func() time.Time
}

// Limits are the parts of the config that reload without a restart.
type Limits struct {
	// Limiter decides; nil: nothing is limited.
	Limiter ratelimit.Decider
	// Local decides while the Limiter's store fails, for failurePolicy Local: in-process
	// buckets (ratelimit.DividedConfig over a LocalStore); nil otherwise.
	Local ratelimit.Decider
	// Config is the rateLimiting block the limiter was built from (mode, failurePolicy);
	// nil: nothing is limited.
	Config *v1alpha1.RateLimitConfig
	// Responses tunes rejections.
	Responses v1alpha1.ProxyResponses
	// MaxBodyBytes bounds a POST body on the MCP endpoint.
	MaxBodyBytes int64

	names       policyNames // the buckets' policy names, set by Update
	tierHeaders tierHeaders // the headers Config's tiers match on, set by Update
}

// Decision-log lines of unidentified callers are written at most at this rate (per second)
// and burst.
const (
	UnidentifiedLogRate  = 10
	UnidentifiedLogBurst = 100
)

// The log lines of refused calls ("rate limited", "request can never be admitted") are
// written at most at this rate (per second) and burst: a caller hammering a spent bucket
// costs the proxy little (the deny cache), and must not cost it its log either. The next
// line written says how many were not ("suppressed"); metrics and the decision log count
// every refusal.
const (
	RefusalLogRate  = 10
	RefusalLogBurst = 100
)

// Handler is the proxy's http.Handler.
type Handler struct {
	opts     Options
	routes   *route.Table
	metaPath string
	proxy    *httputil.ReverseProxy
	users    *ratelimit.UserHasher // hashes user ids for logs, as the limiter does for keys
	limits   atomic.Pointer[Limits]
	bytes    *quota    // buffered request body bytes
	streams  *quota    // open GET requests
	sessions *sessions // legacy HTTP+SSE sessions bound to their stream's caller
	// unidentified paces the decision-log lines of unidentified callers.
	unidentified *rate.Limiter
	// refusals paces the log lines of refused calls; refusalsSuppressed counts those it
	// held back since the last one written.
	refusals           *rate.Limiter
	refusalsSuppressed atomic.Int64
	// degradedSince is when degraded mode began (Unix ns), 0 when not degraded.
	degradedSince atomic.Int64
	// identity are the headers the caller's identity is read from, and their look-alikes
	// ('_' for '-'), folded: see checkHeaders.
	identity      []string
	identityExact []string // the same, canonical
}

// New builds the handler with initial limits.
func New(opts Options, limits Limits) *Handler {
	if opts.BodyReadTimeout <= 0 {
		opts.BodyReadTimeout = v1alpha1.DefaultBodyReadTimeout
	}
	if opts.MaxBufferedBytes <= 0 {
		opts.MaxBufferedBytes = v1alpha1.DefaultMaxBufferedBytes
	}
	if opts.MaxBufferedBytesPerCaller <= 0 {
		opts.MaxBufferedBytesPerCaller = v1alpha1.DefaultMaxBufferedPerCaller
	}
	if opts.MaxStreams <= 0 {
		opts.MaxStreams = v1alpha1.DefaultMaxStreams
	}
	if opts.MaxStreamsPerCaller <= 0 {
		opts.MaxStreamsPerCaller = v1alpha1.DefaultMaxStreamsPerCaller
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(prometheus.NewRegistry()) // counted, never read: no nil checks
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Transport == nil {
		opts.Transport = NewTransport(v1alpha1.DefaultResponseHeaderTimeout)
	}
	routes := opts.Routes
	if routes == nil {
		var err error
		if routes, err = route.New(opts.Upstream.EscapedPath(), nil, nil); err != nil {
			// The config's validation refuses such an upstream URL before it gets here.
			panic(fmt.Sprintf("enforce: upstream path: %v", err))
		}
	}
	h := &Handler{
		opts: opts, routes: routes, metaPath: auth.WellKnownPath + routes.Endpoint(),
		users:        ratelimit.NewUserHasher(opts.UserHashKey),
		bytes:        newQuota(opts.MaxBufferedBytes, opts.MaxBufferedBytesPerCaller),
		streams:      newQuota(int64(opts.MaxStreams), int64(opts.MaxStreamsPerCaller)),
		sessions:     newSessions(),
		unidentified: rate.NewLimiter(UnidentifiedLogRate, UnidentifiedLogBurst),
		refusals:     rate.NewLimiter(RefusalLogRate, RefusalLogBurst),
	}
	// Authorization always: an upstream may read its own identity from it.
	h.identityExact = append(opts.Auth.IdentityHeaders(), "Authorization")
	for _, name := range h.identityExact {
		h.identity = append(h.identity, foldHeader(name))
	}
	h.proxy = h.newReverseProxy()
	opts.Metrics.observe(h)
	h.Update(limits)
	return h
}

// Update swaps in new limits; requests in flight finish with the old ones.
func (h *Handler) Update(l Limits) {
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = v1alpha1.DefaultMaxBodyBytes
	}
	l.names = newPolicyNames(l.Limiter)
	l.tierHeaders = newTierHeaders(l.Config)
	h.limits.Store(&l)
}

// decide applies the limits to one parsed body of user, in tier (Limits.tier; "" for none).
// It returns true when the request goes on to the upstream; otherwise it has answered.
func (h *Handler) decide(w http.ResponseWriter, r *http.Request, lim *Limits, body mcp.Body, user, tier string) bool {
	var reqs []ratelimit.Request
	for _, m := range body.Messages {
		if m.Limited {
			// A batch is one caller's: every call in it is decided in that caller's tier.
			reqs = append(reqs, ratelimit.Request{Method: m.Method, Name: m.Name, UserID: user, Tier: tier})
		}
	}
	recs := h.records(body, user, tier)
	if len(reqs) == 0 || lim.Limiter == nil || lim.Config == nil {
		h.log(recs, ratelimit.OutcomeUnlimited, ratelimit.Decision{}, h.opts.Now())
		return true
	}
	if user == "" && lim.Limiter.PerUserApplies(reqs) {
		h.count(reqs, ratelimit.OutcomeUnidentified)
		h.log(recs, ratelimit.OutcomeUnidentified, ratelimit.Decision{}, h.opts.Now())
		h.unauthenticated(w, r, &body, "a per-user rate limit applies to this call: the caller must be identified")
		return false
	}

	start := h.opts.Now()
	// The limiter bounds its own round trip (ratelimit.WithCallTimeout), so that a refusal of
	// its deny cache costs no timer.
	d, err := lim.Limiter.AllowAll(r.Context(), reqs)
	h.opts.Metrics.checkDuration.Observe(h.opts.Now().Sub(start).Seconds())
	if ratelimit.StoreFailed(err) {
		h.countStoreError(err)
		if lim.Local != nil {
			// failurePolicy Local: the replica's own buckets decide until Redis answers.
			h.setDegraded(true, err)
		}
	} else {
		h.setDegraded(false, nil) // Redis answered: authoritative again at once
	}
	// The policy's answer, as the simulator takes it too. Not the check's deadline: it may be
	// spent already.
	ans := ratelimit.ApplyFailurePolicy(r.Context(), lim.Local, reqs, lim.Config, d, err)
	d, err, outcome := ans.Decision, ans.Err, ans.Outcome
	at := d.Time
	if at.IsZero() {
		at = start // no Redis time: a store failure, or a request refused before the script
	}
	h.count(reqs, outcome)
	h.log(recs, outcome, d, at)
	if d.Rejected != nil {
		h.opts.Metrics.rejections.WithLabelValues(lim.names.get(d.Rejected.BucketID), string(d.Rejected.Scope)).Inc()
	}
	if d.Local {
		h.opts.Metrics.localDenied.Inc()
	}
	switch outcome {
	case ratelimit.OutcomeAllowed, ratelimit.OutcomeDegradedAllowed:
		setRateLimitHeaders(w.Header(), d, lim.Responses.ExposeSharedRemaining, lim.names)
		return true
	case ratelimit.OutcomeShadowRejected:
		return true
	case ratelimit.OutcomeFailOpen, ratelimit.OutcomeFailClosed:
		return h.storeFailure(w, outcome, body)
	case ratelimit.OutcomeInvalid:
		// No wait admits this request: a rejection, never a store failure.
		var reqErr *ratelimit.RequestError
		errors.As(err, &reqErr)
		if more, ok := h.refusalLogged(r.Context()); ok {
			h.opts.Log.Info("request can never be admitted", append([]any{"err", reqErr, "user", loggedUser{h, user}}, more...)...)
		}
		data := map[string]any{"reason": reqErr.Reason}
		if reqErr.Bucket != "" {
			// Named as every rejection names a bucket (RateLimit-Policy, metrics, logs).
			data["limit"] = lim.names.get(reqErr.ID)
			data["scope"] = reqErr.ID.Scope
		}
		writeRejection(w, r, lim, body, data, func(batch bool) string { return neverAdmittedText(reqErr, lim.names, batch) })
		return false
	}
	name := lim.names.get(d.Rejected.BucketID)
	if more, ok := h.refusalLogged(r.Context()); ok {
		h.opts.Log.Info("rate limited", append([]any{"limit", name, "retryAfter", d.RetryAfter, "user", loggedUser{h, user}, "tier", tier, "calls", len(reqs)}, more...)...)
	}
	secs := max(ceilSeconds(d.RetryAfter), 1)
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	setRateLimitHeaders(w.Header(), d, lim.Responses.ExposeSharedRemaining, lim.names)
	data := rateLimited{Limit: name, RetryAfterMs: max(ceilMillis(d.RetryAfter), 1), RetryAfterSeconds: secs, Scope: d.Rejected.Scope}
	writeRejection(w, r, lim, body, data, func(batch bool) string { return rejectedText(d.Rejected, secs, batch) })
	return false
}

// refusalLogged reports whether a refused call's log line is to be written (Info is on, and
// the pace allows it), with the attributes to add: how many lines were held back since the
// last one written. Asked before the line's arguments are built, so that a line not written
// costs nothing.
func (h *Handler) refusalLogged(ctx context.Context) ([]any, bool) {
	if !h.opts.Log.Enabled(ctx, slog.LevelInfo) {
		return nil, false
	}
	if !h.refusals.AllowN(h.opts.Now(), 1) {
		h.refusalsSuppressed.Add(1)
		return nil, false
	}
	if n := h.refusalsSuppressed.Swap(0); n > 0 {
		return []any{"suppressed", n}, true
	}
	return nil, true
}

// countStoreError counts a failure of the limiter's store by kind.
func (h *Handler) countStoreError(err error) {
	kind := "error"
	var ne net.Error
	switch {
	case errors.Is(err, store.ErrCircuitOpen):
		kind = "circuit_open"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		kind = "timeout"
	}
	h.opts.Metrics.storeErrors.WithLabelValues(kind).Inc()
	if kind != "circuit_open" { // an open breaker would log every refused call
		h.opts.Log.Warn("rate limiter store failed", "kind", kind, "err", err)
	}
}

// setDegraded records entering (a store failure under failurePolicy Local) and leaving (the
// store answered) degraded mode: logged once each way, and read by the tollgate_degraded gauge
// and the readiness detail.
func (h *Handler) setDegraded(on bool, cause error) {
	if h.degradedSince.Load() == 0 && !on || h.degradedSince.Load() != 0 && on {
		return // no change: the common path costs one atomic load
	}
	if on {
		if h.degradedSince.CompareAndSwap(0, h.opts.Now().UnixNano()) {
			h.opts.Log.Warn("rate limiter store unavailable: deciding with local buckets (failurePolicy Local)", "err", cause)
		}
		return
	}
	if since := h.degradedSince.Swap(0); since != 0 {
		h.opts.Log.Info("rate limiter store back: Redis decides again", "degradedFor", h.opts.Now().Sub(time.Unix(0, since)))
	}
}

// Degraded reports whether the handler decides with local buckets (failurePolicy Local, the
// store failing), and since when.
func (h *Handler) Degraded() (bool, time.Time) {
	since := h.degradedSince.Load()
	if since == 0 {
		return false, time.Time{}
	}
	return true, time.Unix(0, since)
}

// storeFailure answers by the failure policy's outcome: fail open lets the call through, fail
// closed answers 503.
func (h *Handler) storeFailure(w http.ResponseWriter, outcome ratelimit.Outcome, body mcp.Body) bool {
	if outcome == ratelimit.OutcomeFailOpen {
		return true
	}
	// The same wait in both units as a rejection's data, so that a client reading
	// retryAfterMs (SEP-3304) reads it here too. Never a tool result: this is no limit an
	// agent should plan around but an outage, and 503 is what retrying clients understand.
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusServiceUnavailable, nil, errorBody(body, mcp.CodeInternalError, "Rate limiter unavailable",
		map[string]any{"retryAfterSeconds": 1, "retryAfterMs": 1000}))
	return false
}

func rejectStatus(lim *Limits) int {
	if lim.Responses.RejectStatus == http.StatusOK {
		return http.StatusOK
	}
	return http.StatusTooManyRequests
}

// errorBody answers every request of body with the same JSON-RPC error: one object for a
// single message (its id echoed, or omitted when it had none), an array for a batch (one
// object per request with an id; a batch of notifications gets one object without an id).
func errorBody(body mcp.Body, code int, message string, data any) []byte {
	if body.Batch {
		if b := mcp.BatchErrorResponse(body.Messages, code, message, data); b != nil {
			return b
		}
		return mcp.ErrorResponse(nil, code, message, data)
	}
	var id []byte
	if len(body.Messages) == 1 {
		id = body.Messages[0].ID
	}
	return mcp.ErrorResponse(id, code, message, data)
}

func writeJSON(w http.ResponseWriter, status int, h http.Header, body []byte) {
	for k, v := range h {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body) // the client may be gone; nothing to do about it
}

func (h *Handler) authError(w http.ResponseWriter, err error) {
	var ae *auth.Error
	if !errors.As(err, &ae) {
		h.opts.Log.Warn("authentication failed", "err", err)
		writeJSON(w, http.StatusUnauthorized, nil, mcp.ErrorResponse(nil, 401, "Unauthorized", nil))
		return
	}
	writeJSON(w, ae.Status, ae.Header, mcp.ErrorResponse(nil, ae.Status, ae.Message, nil))
}

func (h *Handler) unauthenticated(w http.ResponseWriter, r *http.Request, body *mcp.Body, msg string) {
	var resp []byte
	if body != nil {
		resp = errorBody(*body, 401, "Unauthorized", msg)
	} else {
		resp = mcp.ErrorResponse(nil, 401, "Unauthorized", msg)
	}
	writeJSON(w, http.StatusUnauthorized, h.opts.Auth.Challenge(r), resp)
}

func (h *Handler) count(reqs []ratelimit.Request, outcome ratelimit.Outcome) {
	for _, r := range reqs {
		// The tier label's values are the config's tier names and "" (no tier), never
		// anything a request wrote: ResolveTier returns only configured names.
		h.opts.Metrics.decisions.WithLabelValues(r.Method, string(outcome), r.Tier).Inc()
	}
}

func (h *Handler) userHash(user string) string {
	if user == "" {
		return ""
	}
	return h.users.Hash(user)
}

// loggedUser is a user id as logs show it: hashed, and only when the line is written.
type loggedUser struct {
	h    *Handler
	user string
}

func (u loggedUser) LogValue() slog.Value { return slog.StringValue(u.h.userHash(u.user)) }

// maxLoggedName bounds a name (tool, prompt, resource URI) in the decision log and in log
// lines: longer ones are cut and marked. No configured name is that long (MaxURILength is
// 2048 before canonicalisation), so a cut name never looks like a configured one.
const maxLoggedName = 8 << 10

// records are the decision-log lines of a body: one per message with a method, each with the
// caller's tier, so that a replay decides it in the same tier.
func (h *Handler) records(body mcp.Body, user, tier string) []ratelimit.Record {
	if h.opts.DecisionLog == nil {
		return nil
	}
	u := h.userHash(user)
	recs := make([]ratelimit.Record, 0, len(body.Messages))
	for _, m := range body.Messages {
		if m.Method == "" {
			continue
		}
		rec := ratelimit.Record{Method: truncate(m.Method, maxLoggedName), Name: m.Name, User: u, Tier: tier, Cost: 1}
		if len(rec.Name) > maxLoggedName {
			rec.Name, rec.NameTruncated = rec.Name[:maxLoggedName], true
		}
		if body.Batch {
			rec.Batch = len(body.Messages)
		}
		recs = append(recs, rec)
	}
	return recs
}

// log writes the records with the decision; limited calls get it, the others "unlimited".
// Calls refused for want of an identity cost their sender nothing to make, so their lines are
// written at a bounded rate (the rest counted in tollgate_decision_log_suppressed_total):
// a flood of them does not fill the disk.
func (h *Handler) log(recs []ratelimit.Record, decision ratelimit.Outcome, d ratelimit.Decision, at time.Time) {
	if h.opts.DecisionLog == nil || len(recs) == 0 {
		return
	}
	if decision == ratelimit.OutcomeUnidentified && !h.unidentified.Allow() {
		h.opts.Metrics.logSuppressed.Add(float64(len(recs)))
		return
	}
	for i := range recs {
		recs[i].Time = at
		if !ratelimit.IsLimited(recs[i].Method) {
			recs[i].Decision = ratelimit.OutcomeUnlimited
			continue
		}
		recs[i].Decision = decision
		if d.Rejected != nil {
			recs[i].Limit = d.Rejected.String()
			recs[i].RetryAfterMs = d.RetryAfter.Milliseconds()
		}
	}
	if err := h.opts.DecisionLog.Write(recs); err != nil {
		h.opts.Log.Warn("writing the decision log", "err", err)
	}
}
