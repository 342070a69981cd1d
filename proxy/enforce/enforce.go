// Package enforce is the proxy's request path: it classifies each POST on the MCP endpoint,
// identifies the caller, asks the limiter, and either answers the rejection itself or
// forwards the request to the upstream MCP server unchanged. Everything else (GET streams,
// DELETE, other paths) is forwarded untouched.
package enforce

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/auth"
	"github.com/tollgate-dev/tollgate/proxy/mcp"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/proxy/store"
)

// Options are what the handler is built with once; Limits can change at run time.
type Options struct {
	// Upstream is the MCP server's endpoint URL; its path is the endpoint the proxy parses.
	Upstream *url.URL
	// Auth identifies callers.
	Auth auth.Authenticator
	// Metadata, when set, serves RFC 9728 protected-resource metadata at
	// /.well-known/oauth-protected-resource<endpoint path> (OIDC).
	Metadata http.Handler
	// Transport reaches the upstream; nil: a transport tuned for one upstream host.
	Transport http.RoundTripper
	// CheckTimeout bounds one limiter decision; default 250ms. The store's own per-command
	// timeout (100ms by default) and circuit breaker normally answer first.
	CheckTimeout time.Duration
	// UserHashKey keys the user hash in the decision log (the limiter's key).
	UserHashKey []byte
	Metrics     *Metrics
	DecisionLog *DecisionLog
	Log         *slog.Logger
}

// Limits are the parts of the config that reload without a restart.
type Limits struct {
	// Limiter decides; nil: nothing is limited.
	Limiter *ratelimit.Limiter
	// Config is the rateLimiting block the limiter was built from (mode, failurePolicy);
	// nil: nothing is limited.
	Config *v1alpha1.RateLimitConfig
	// Responses tunes rejections.
	Responses v1alpha1.ProxyResponses
	// MaxBodyBytes bounds a POST body on the MCP endpoint.
	MaxBodyBytes int64

	names policyNames // the buckets' policy names, set by Update
}

// Handler is the proxy's http.Handler.
type Handler struct {
	opts     Options
	endpoint string
	metaPath string
	proxy    *httputil.ReverseProxy
	users    *ratelimit.UserHasher // hashes user ids for logs, as the limiter does for keys
	limits   atomic.Pointer[Limits]
}

// New builds the handler with initial limits.
func New(opts Options, limits Limits) *Handler {
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = 250 * time.Millisecond
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Transport == nil {
		opts.Transport = NewTransport()
	}
	endpoint := opts.Upstream.EscapedPath()
	if endpoint == "" {
		endpoint = "/"
	}
	h := &Handler{opts: opts, endpoint: endpoint, metaPath: "/.well-known/oauth-protected-resource" + endpoint,
		users: ratelimit.NewUserHasher(opts.UserHashKey)}
	up := opts.Upstream
	h.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// The endpoint is served at the upstream's own path: only scheme and host change.
			pr.Out.URL.Scheme = up.Scheme
			pr.Out.URL.Host = up.Host
			pr.Out.Host = up.Host
			pr.SetXForwarded()
			// A body the handler buffered (it set GetBody) goes out as an in-memory reader:
			// the transport then writes headers and body in one syscall, where the reader
			// ReverseProxy wraps every body in costs a second write (and a second read
			// upstream).
			if pr.Out.GetBody != nil {
				if b, err := pr.Out.GetBody(); err == nil {
					pr.Out.Body = b
				}
			}
		},
		// Reused copy buffers: ReverseProxy otherwise allocates 32 KiB per response.
		BufferPool: copyBuffers{},
		// FlushInterval 0: ReverseProxy flushes text/event-stream and unknown-length
		// responses at once (every SSE event reaches the client as the upstream writes it)
		// and writes a plain JSON answer in one go, not headers and body in two syscalls.
		Transport: opts.Transport,
		ModifyResponse: func(resp *http.Response) error {
			if m := opts.Metrics; m != nil {
				m.upstreamResponse(resp.StatusCode)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if m := opts.Metrics; m != nil {
				m.upstream.WithLabelValues("error").Inc()
			}
			if errors.Is(err, context.Canceled) {
				return // the client went away
			}
			opts.Log.Warn("upstream unreachable", "err", err)
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	h.Update(limits)
	return h
}

// NewTransport is a transport for one upstream host: keep-alive connections enough for the
// proxy's concurrency (the default of 2 idle connections per host churns under load).
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 1024
	t.IdleConnTimeout = 90 * time.Second
	return t
}

// copyBuffers is ReverseProxy's pool of response copy buffers.
type copyBuffers struct{}

const copyBufferSize = 32 << 10 // ReverseProxy's own size

var copyBufferPool = sync.Pool{New: func() any { return new([copyBufferSize]byte) }}

func (copyBuffers) Get() []byte { return copyBufferPool.Get().(*[copyBufferSize]byte)[:] }

func (copyBuffers) Put(b []byte) {
	if len(b) == copyBufferSize {
		copyBufferPool.Put((*[copyBufferSize]byte)(b))
	}
}

// Update swaps in new limits; requests in flight finish with the old ones.
func (h *Handler) Update(l Limits) {
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = 1 << 20
	}
	l.names = newPolicyNames(l.Limiter)
	h.limits.Store(&l)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == h.metaPath && h.opts.Metadata != nil {
		h.opts.Metadata.ServeHTTP(w, r)
		return
	}
	if r.URL.Path != h.endpoint {
		h.proxy.ServeHTTP(w, r)
		return
	}
	user, err := h.opts.Auth.Authenticate(r)
	if err != nil {
		h.authError(w, err)
		return
	}
	if user == "" && h.opts.Auth.Required() {
		h.unauthenticated(w, r, nil, "authentication required")
		return
	}
	if r.Method != http.MethodPost {
		h.proxy.ServeHTTP(w, r) // GET (SSE stream), DELETE (end session): never limited
		return
	}
	if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		// A compressed body cannot be classified; forwarding it unparsed would be a way
		// around every limit.
		writeJSON(w, http.StatusUnsupportedMediaType, nil, mcp.ErrorResponse(nil, mcp.CodeInvalidRequest, "Content-Encoding not supported", ce))
		return
	}
	lim := h.limits.Load()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, lim.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeJSON(w, http.StatusRequestEntityTooLarge, nil, mcp.ErrorResponse(nil, mcp.CodeInvalidRequest, "Request body too large",
				map[string]int64{"maxBodyBytes": lim.MaxBodyBytes}))
			return
		}
		h.opts.Log.Debug("reading request body", "err", err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.ContentLength = int64(len(body))

	msgs, perr := mcp.Parse(body, mcp.Limits{})
	if perr == nil {
		perr = mcp.CheckHeaders(r.Header, msgs)
	}
	if perr != nil {
		writeJSON(w, perr.HTTPStatus, nil, perr.Response())
		return
	}
	if !h.decide(w, r, lim, msgs, user) {
		return
	}
	h.proxy.ServeHTTP(w, r)
}

// decide applies the limits to one parsed body. It returns true when the request goes on to
// the upstream; otherwise it has answered.
func (h *Handler) decide(w http.ResponseWriter, r *http.Request, lim *Limits, body mcp.Body, user string) bool {
	var reqs []ratelimit.Request
	for _, m := range body.Messages {
		if m.Limited {
			reqs = append(reqs, ratelimit.Request{Method: m.Method, Name: m.Name, UserID: user})
		}
	}
	recs := h.records(body, user)
	if len(reqs) == 0 || lim.Limiter == nil || lim.Config == nil {
		h.log(recs, DecisionUnlimited, ratelimit.Decision{}, time.Now())
		return true
	}
	if user == "" && lim.Limiter.PerUserApplies(reqs) {
		h.count(reqs, OutcomeUnidentified)
		h.log(recs, OutcomeUnidentified, ratelimit.Decision{}, time.Now())
		h.unauthenticated(w, r, &body, "a per-user rate limit applies to this call: the caller must be identified")
		return false
	}

	ctx, cancel := context.WithTimeout(r.Context(), h.opts.CheckTimeout)
	start := time.Now()
	d, err := lim.Limiter.AllowAll(ctx, reqs)
	cancel()
	if m := h.opts.Metrics; m != nil {
		m.checkDuration.Observe(time.Since(start).Seconds())
	}
	shadow := lim.Config.Mode == v1alpha1.RateLimitModeShadow
	var reqErr *ratelimit.RequestError
	switch {
	case errors.As(err, &reqErr):
		// No wait admits this request: a rejection, never a store failure.
		if shadow {
			h.count(reqs, OutcomeShadowRejected)
			h.log(recs, OutcomeShadowRejected, d, start)
			return true
		}
		h.count(reqs, OutcomeInvalid)
		h.log(recs, OutcomeInvalid, d, start)
		h.opts.Log.Info("request can never be admitted", "err", reqErr, "user", loggedUser{h, user})
		data := map[string]any{"limit": reqErr.Bucket, "reason": reqErr.Reason}
		writeJSON(w, rejectStatus(lim), nil, errorBody(body, 429, "Rate limit exceeded", data))
		return false
	case err != nil:
		return h.storeFailure(w, lim, body, reqs, recs, err, start)
	case d.Allowed:
		h.count(reqs, OutcomeAllowed)
		h.log(recs, OutcomeAllowed, d, d.Time)
		setRateLimitHeaders(w.Header(), d, lim.Responses.ExposeSharedRemaining, lim.names)
		return true
	}
	name := lim.names.get(d.Rejected.BucketID)
	if m := h.opts.Metrics; m != nil {
		m.rejections.WithLabelValues(name, string(d.Rejected.Scope)).Inc()
	}
	if shadow {
		h.count(reqs, OutcomeShadowRejected)
		h.log(recs, OutcomeShadowRejected, d, d.Time)
		return true
	}
	h.count(reqs, OutcomeRejected)
	h.log(recs, OutcomeRejected, d, d.Time)
	h.opts.Log.Info("rate limited", "limit", name, "retryAfter", d.RetryAfter, "user", loggedUser{h, user}, "calls", len(reqs))
	secs := max(ceilSeconds(d.RetryAfter), 1)
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	setRateLimitHeaders(w.Header(), d, lim.Responses.ExposeSharedRemaining, lim.names)
	data := map[string]any{
		"retryAfterSeconds": secs,
		"retryAfterMs":      (d.RetryAfter + time.Millisecond - 1) / time.Millisecond,
		"limit":             name,
		"scope":             d.Rejected.Scope,
	}
	writeJSON(w, rejectStatus(lim), nil, errorBody(body, 429, "Rate limit exceeded", data))
	return false
}

// storeFailure applies the failure policy when the limiter's store failed.
func (h *Handler) storeFailure(w http.ResponseWriter, lim *Limits, body mcp.Body, reqs []ratelimit.Request, recs []Record, err error, at time.Time) bool {
	kind := "error"
	var ne net.Error
	switch {
	case errors.Is(err, store.ErrCircuitOpen):
		kind = "circuit_open"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		kind = "timeout"
	}
	if m := h.opts.Metrics; m != nil {
		m.storeErrors.WithLabelValues(kind).Inc()
	}
	if lim.Config.FailurePolicy == v1alpha1.FailurePolicyDeny {
		h.count(reqs, OutcomeFailClosed)
		h.log(recs, OutcomeFailClosed, ratelimit.Decision{}, at)
		h.opts.Log.Warn("rate limiter unavailable: failing closed", "kind", kind, "err", err)
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, nil, errorBody(body, -32603, "Rate limiter unavailable", map[string]any{"retryAfterSeconds": 1}))
		return false
	}
	h.count(reqs, OutcomeFailOpen)
	h.log(recs, OutcomeFailOpen, ratelimit.Decision{}, at)
	h.opts.Log.Warn("rate limiter unavailable: failing open", "kind", kind, "err", err)
	return true
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

func (h *Handler) count(reqs []ratelimit.Request, outcome string) {
	m := h.opts.Metrics
	if m == nil {
		return
	}
	for _, r := range reqs {
		m.decisions.WithLabelValues(r.Method, outcome).Inc()
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

// records are the decision-log lines of a body: one per message with a method.
func (h *Handler) records(body mcp.Body, user string) []Record {
	if h.opts.DecisionLog == nil {
		return nil
	}
	u := h.userHash(user)
	recs := make([]Record, 0, len(body.Messages))
	for _, m := range body.Messages {
		if m.Method == "" {
			continue
		}
		rec := Record{Method: m.Method, Name: m.Name, User: u, Cost: 1}
		if body.Batch {
			rec.Batch = len(body.Messages)
		}
		recs = append(recs, rec)
	}
	return recs
}

// log writes the records with the decision; limited calls get it, the others "unlimited".
func (h *Handler) log(recs []Record, decision string, d ratelimit.Decision, at time.Time) {
	if h.opts.DecisionLog == nil {
		return
	}
	for i := range recs {
		recs[i].Time = at
		if !isLimited(recs[i].Method) {
			recs[i].Decision = DecisionUnlimited
			continue
		}
		recs[i].Decision = decision
		if d.Rejected != nil {
			recs[i].Limit = policyName(d.Rejected.BucketID) // rejections only: not worth a lookup
			recs[i].RetryAfterMs = d.RetryAfter.Milliseconds()
		}
	}
	if err := h.opts.DecisionLog.Write(recs); err != nil {
		h.opts.Log.Warn("writing the decision log", "err", err)
	}
}

func isLimited(method string) bool {
	return method == ratelimit.MethodToolsCall || method == ratelimit.MethodPromptsGet || method == ratelimit.MethodResourcesRead
}
