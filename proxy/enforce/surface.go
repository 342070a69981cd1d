package enforce

import (
	"bytes"
	"io"
	"net/http"
	"strings"

	"github.com/tollgate-dev/tollgate/proxy/auth"
	"github.com/tollgate-dev/tollgate/proxy/mcp"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
	"github.com/tollgate-dev/tollgate/proxy/route"
)

// refusal is a request the proxy answers itself, before anything reaches the upstream.
type refusal struct {
	status  int
	reason  string // tollgate_requests_refused_total's reason label: a fixed set
	message string // the JSON-RPC error message
	detail  string // its data: what exactly is wrong
	data    any    // its data instead, when set
	allow   string // the Allow header of a 405
	close   bool   // close the connection: what is left of the request is not read
}

// Methods by route. A body is read, parsed and decided only on a POST to an endpoint; no other
// request to an endpoint may carry one.
const (
	allowEndpoint    = "GET, POST, DELETE, OPTIONS"
	allowMessages    = "GET, POST, OPTIONS" // go-sdk announces its stream's own path
	allowPassthrough = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
)

var (
	refuseNotFound = refusal{status: http.StatusNotFound, reason: "not_found", message: "Not found",
		detail: "this path is neither the MCP endpoint nor a path the proxy passes through"}
	refuseBadPath = refusal{status: http.StatusBadRequest, reason: "bad_path", message: "Invalid Request", close: true}
)

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == h.metaPath && h.opts.Metadata != nil {
		if hasBody(r) {
			h.refuse(w, r, refusal{status: http.StatusBadRequest, reason: "body_not_allowed", message: "Invalid Request",
				detail: "a " + r.Method + " request takes no body", close: true})
			return
		}
		h.opts.Metadata.ServeHTTP(w, r)
		return
	}
	m, err := h.routes.Match(r.URL.EscapedPath())
	if err != nil {
		ref := refuseBadPath
		ref.detail = err.Error()
		h.refuse(w, r, ref)
		return
	}
	if m.Kind == route.NotFound {
		h.refuse(w, r, refuseNotFound)
		return
	}
	// One snapshot of the limits per request: the tier headers checked, the tier resolved and
	// the decision all come from the same config, even when a reload lands meanwhile.
	lim := h.limits.Load()
	if ref := h.checkRequest(r, m, lim); ref != nil {
		h.refuse(w, r, *ref)
		return
	}
	var id auth.Identity
	// A CORS preflight never carries credentials; it has no body and runs nothing. One that
	// does carry them is authenticated like any request.
	if r.Method != http.MethodOptions || h.carriesIdentity(r) {
		if id, err = h.opts.Auth.Authenticate(r); err != nil {
			h.authError(w, err)
			return
		}
		if id.User == "" && h.opts.Auth.Required() {
			h.unauthenticated(w, r, nil, "authentication required")
			return
		}
	}
	user := id.User
	caller := callerKey(user, r.RemoteAddr)
	x := &exchange{path: m.Path, user: user}
	switch {
	case r.Method == http.MethodGet:
		// An event stream holds a connection, a request to the upstream and goroutines for as
		// long as it is open: streams are capped in all and per caller.
		switch h.streams.acquire(caller, 1) {
		case quotaCaller:
			h.refuse(w, r, refusal{status: http.StatusTooManyRequests, reason: "streams_caller", message: "Too many open streams",
				detail: "this caller holds the most streams allowed open at once"})
			return
		case quotaTotal:
			h.refuse(w, r, refusal{status: http.StatusServiceUnavailable, reason: "streams_total", message: "Too many open streams",
				detail: "the proxy holds the most streams allowed open at once"})
			return
		}
		defer h.streams.release(caller, 1, 1)
	case r.Method == http.MethodPost && m.Kind != route.Passthrough:
		if m.Kind == route.Messages && !h.sessions.allowed(m.Clean, r.URL.Query(), user) {
			h.refuse(w, r, refusal{status: http.StatusForbidden, reason: "session_owner", message: "Forbidden",
				detail: "this session belongs to the caller that opened its stream"})
			return
		}
		h.serveCall(w, r, x, caller, id, lim)
		return
	case hasBody(r):
		// A pass-through body is forwarded as it arrives; it must arrive in time all the same.
		rc := http.NewResponseController(w)
		if rc.SetReadDeadline(h.opts.Now().Add(h.opts.BodyReadTimeout)) == nil {
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
		}
	}
	h.forward(w, r, x)
}

// checkRequest applies the rules every request meets before its caller is identified: the
// methods of its route, no body where the method takes none, no protocol upgrade, and headers
// that reach the upstream as the proxy read them (the identity headers, and the tier headers
// of lim). It returns nil when the request may go on.
func (h *Handler) checkRequest(r *http.Request, m route.Match, lim *Limits) *refusal {
	allow := allowPassthrough
	switch m.Kind {
	case route.Endpoint:
		allow = allowEndpoint
	case route.Messages:
		allow = allowMessages
	}
	if !tokenIn(allow, r.Method) {
		return &refusal{status: http.StatusMethodNotAllowed, reason: "method", message: "Method not allowed",
			detail: "allowed: " + allow, allow: allow, close: hasBody(r)}
	}
	if hasBody(r) && r.Method != http.MethodPost && r.Method != http.MethodPut && r.Method != http.MethodPatch {
		// Forwarded, such a body would be read by an upstream that ignores bodies on these
		// methods as the start of the next request on the connection (request smuggling).
		return &refusal{status: http.StatusBadRequest, reason: "body_not_allowed", message: "Invalid Request",
			detail: "a " + r.Method + " request takes no body", close: true}
	}
	if ref := h.checkUpgrade(r, m); ref != nil {
		return ref
	}
	for _, v := range r.Header.Values("Connection") {
		for tok := range strings.SplitSeq(v, ",") {
			if h.isIdentityHeader(strings.TrimSpace(tok)) {
				return &refusal{status: http.StatusBadRequest, reason: "connection_header", message: "Invalid Request",
					detail: "the Connection header names the identity header " + strings.TrimSpace(tok) + ": the upstream would not receive the identity the proxy checked"}
			}
			if lim.tierHeaders.has(strings.TrimSpace(tok)) {
				return &refusal{status: http.StatusBadRequest, reason: "connection_header", message: "Invalid Request",
					detail: "the Connection header names the tier header " + truncate(strings.TrimSpace(tok), 64) + ": the upstream would not receive the header that chose the caller's rate-limit tier"}
			}
		}
	}
	for name, vals := range r.Header {
		if h.isIdentityHeader(name) && !h.isExactIdentityHeader(name) {
			// X_User beside X-User: servers that map both to one variable (CGI, WSGI)
			// would read an identity the proxy did not check.
			return &refusal{status: http.StatusBadRequest, reason: "header_lookalike", message: "Invalid Request",
				detail: "header " + truncate(name, 64) + " looks like the identity header"}
		}
		if ref := lim.tierHeaders.check(name, vals); ref != nil {
			return ref
		}
	}
	return nil
}

// checkUpgrade refuses protocol upgrades: relayed, an upgrade becomes a raw tunnel to the
// upstream that the proxy cannot see into. An h2c upgrade is dropped rather than refused (a
// server may ignore it, and curl --http2 sends it); a pass-through rule may allow upgrades
// (WebSocket) under its path.
func (h *Handler) checkUpgrade(r *http.Request, m route.Match) *refusal {
	up := r.Header.Values("Upgrade")
	if len(up) == 0 {
		return nil
	}
	if m.Kind == route.Passthrough && m.Rule.AllowUpgrade {
		return nil
	}
	onlyH2C := true
	for _, v := range up {
		for tok := range strings.SplitSeq(v, ",") {
			if !strings.EqualFold(strings.TrimSpace(tok), "h2c") {
				onlyH2C = false
			}
		}
	}
	if !onlyH2C {
		return &refusal{status: http.StatusBadRequest, reason: "upgrade", message: "Invalid Request",
			detail: "protocol upgrades are not relayed", close: true}
	}
	r.Header.Del("Upgrade")
	r.Header.Del("Http2-Settings")
	var keep []string
	for _, v := range r.Header.Values("Connection") {
		for tok := range strings.SplitSeq(v, ",") {
			if t := strings.TrimSpace(tok); t != "" && !strings.EqualFold(t, "upgrade") && !strings.EqualFold(t, "http2-settings") {
				keep = append(keep, t)
			}
		}
	}
	r.Header.Del("Connection")
	if len(keep) > 0 {
		r.Header.Set("Connection", strings.Join(keep, ", "))
	}
	return nil
}

// foldHeader is a header name as servers that confuse '_' and '-' and ignore case see it.
func foldHeader(name string) string {
	return strings.ToLower(strings.ReplaceAll(name, "_", "-"))
}

func (h *Handler) isIdentityHeader(name string) bool {
	f := foldHeader(name)
	for _, id := range h.identity {
		if f == id {
			return true
		}
	}
	return false
}

// carriesIdentity reports whether r has one of the headers the identity is read from.
func (h *Handler) carriesIdentity(r *http.Request) bool {
	for _, id := range h.opts.Auth.IdentityHeaders() {
		if len(r.Header.Values(id)) > 0 {
			return true
		}
	}
	return false
}

func (h *Handler) isExactIdentityHeader(name string) bool {
	for _, id := range h.identityExact {
		if http.CanonicalHeaderKey(name) == id {
			return true
		}
	}
	return false
}

// serveCall reads, parses and decides a POST to an endpoint under lim, then forwards it.
func (h *Handler) serveCall(w http.ResponseWriter, r *http.Request, x *exchange, caller string, id auth.Identity, lim *Limits) {
	if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		// A compressed body cannot be classified; forwarding it unparsed would be a way
		// around every limit.
		h.refuse(w, r, refusal{status: http.StatusUnsupportedMediaType, reason: "content_encoding", message: "Content-Encoding not supported",
			detail: truncate(ce, 64), close: true})
		return
	}
	body, took, berr := h.readBody(w, r, caller, lim.MaxBodyBytes)
	defer h.bytes.release(caller, took.n, took.total)
	if berr != nil {
		ref := refusal{status: berr.status, reason: berr.reason, message: berr.msg, close: true}
		if berr == errBodyTooLarge {
			ref.data = map[string]int64{"maxBodyBytes": lim.MaxBodyBytes}
		}
		h.refuse(w, r, ref)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.ContentLength = int64(len(body))

	msgs, perr := mcp.Parse(body)
	if perr == nil {
		perr = mcp.CheckHeaders(r.Header, msgs)
	}
	if perr == nil {
		perr = canonicalResources(&msgs)
	}
	if perr != nil {
		writeJSON(w, perr.HTTPStatus, nil, perr.Response())
		return
	}
	x.body = &msgs
	if !h.decide(w, r, lim, msgs, id.User, lim.tier(id)) {
		return
	}
	h.forward(w, r, x)
}

// canonicalResources replaces the uri of each resources/read by its canonical form, the form
// buckets, logs and metrics know it by; a uri with none is invalid params.
func canonicalResources(b *mcp.Body) *mcp.Error {
	for i := range b.Messages {
		m := &b.Messages[i]
		if m.Method != ratelimit.MethodResourcesRead {
			continue
		}
		c, err := ratelimit.CanonicalResourceURI(m.Name)
		if err != nil {
			id := m.ID
			if b.Batch || m.Kind != mcp.KindRequest {
				id = nil
			}
			return &mcp.Error{HTTPStatus: http.StatusBadRequest, Code: mcp.CodeInvalidParams, Message: "Invalid params",
				Detail: "params.uri: " + err.Error(), ID: id}
		}
		m.Name = c
	}
	return nil
}

// refuse answers a request the proxy will not forward: a JSON-RPC error without an id (the
// body was not read), counted by reason.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, ref refusal) {
	h.opts.Metrics.refused.WithLabelValues(ref.reason).Inc()
	hdr := http.Header{}
	if ref.allow != "" {
		hdr.Set("Allow", ref.allow)
	}
	if ref.status == http.StatusTooManyRequests || ref.status == http.StatusServiceUnavailable {
		hdr.Set("Retry-After", "1")
	}
	if ref.close {
		// What is left of the request is not read: the connection cannot carry another.
		hdr.Set("Connection", "close")
	}
	data := ref.data
	if data == nil && ref.detail != "" {
		data = ref.detail
	}
	writeJSON(w, ref.status, hdr, mcp.ErrorResponse(nil, mcp.CodeInvalidRequest, ref.message, data))
}

// hasBody reports whether a request carries a body (a length, or chunked encoding).
func hasBody(r *http.Request) bool { return r.ContentLength != 0 || len(r.TransferEncoding) > 0 }

// tokenIn reports whether tok is one of the comma-separated tokens of list.
func tokenIn(list, tok string) bool {
	for t := range strings.SplitSeq(list, ",") {
		if strings.TrimSpace(t) == tok {
			return true
		}
	}
	return false
}

// truncate bounds a string from a request for logs and answers, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
