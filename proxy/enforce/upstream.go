package enforce

import (
	"context"
	"errors"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/tollgate-dev/tollgate/proxy/mcp"
)

// NewTransport is a transport for one upstream host: keep-alive connections enough for the
// proxy's concurrency (the default of 2 idle connections per host churns under load), and a
// bound on the wait for response headers (the proxy then answers 504).
func NewTransport(responseHeaderTimeout time.Duration) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 1024
	t.IdleConnTimeout = 90 * time.Second
	t.ResponseHeaderTimeout = responseHeaderTimeout
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

// exchange is what the request path learned of a request, for the upstream side: the route's
// path to forward under, the caller, and the parsed body (to answer a JSON-RPC error when the
// upstream fails). It travels in the request's context.
type exchange struct {
	path string // escaped path the upstream receives
	user string
	body *mcp.Body // nil when not parsed
}

type exchangeKey struct{}

func exchangeOf(r *http.Request) *exchange {
	x, _ := r.Context().Value(exchangeKey{}).(*exchange)
	return x
}

// forward sends r to the upstream under x.path.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, x *exchange) {
	h.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), exchangeKey{}, x)))
}

func (h *Handler) newReverseProxy() *httputil.ReverseProxy {
	up := h.opts.Upstream
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = up.Scheme
			pr.Out.URL.Host = up.Host
			pr.Out.Host = up.Host
			// The path the proxy matched is the path the upstream routes: the endpoint's
			// configured path, whatever spelling the client used, or a cleaned pass-through
			// path.
			if x := exchangeOf(pr.In); x != nil {
				p, err := url.PathUnescape(x.path)
				if err == nil {
					pr.Out.URL.Path, pr.Out.URL.RawPath = p, x.path
				}
			}
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
		Transport:      h.opts.Transport,
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.upstreamError,
	}
}

// modifyResponse counts the response and, for an event stream opened with GET, reads its
// first event: a legacy HTTP+SSE endpoint announcement (sse.go).
func (h *Handler) modifyResponse(resp *http.Response) error {
	h.opts.Metrics.upstreamResponse(resp.StatusCode)
	if resp.Request.Method != http.MethodGet || resp.StatusCode != http.StatusOK {
		return nil
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/event-stream" {
		return nil
	}
	x := exchangeOf(resp.Request)
	if x == nil {
		return nil
	}
	base := *resp.Request.URL
	resp.Body = newSSEWatch(resp.Body, &base, h.routes, h.sessions, x.user, func(path string, err error) {
		if err != nil {
			h.opts.Log.Warn("legacy SSE endpoint not learned", "path", truncate(path, maxLoggedName), "err", err)
			return
		}
		h.opts.Log.Debug("legacy SSE message endpoint", "path", truncate(path, maxLoggedName))
	})
	return nil
}

// upstreamError answers when the upstream could not be reached or did not answer in time:
// 504 after the response-header timeout, else 502, with a JSON-RPC error echoing the
// request's id when its body was parsed.
func (h *Handler) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		h.opts.Metrics.upstream.WithLabelValues("error").Inc()
		return // the client went away
	}
	status, msg, label := http.StatusBadGateway, "Upstream unreachable", "error"
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		status, msg, label = http.StatusGatewayTimeout, "Upstream timeout", "timeout"
	}
	h.opts.Metrics.upstream.WithLabelValues(label).Inc()
	h.opts.Log.Warn(msg, "err", err)
	body := mcp.Body{}
	if x := exchangeOf(r); x != nil && x.body != nil {
		body = *x.body
	}
	writeJSON(w, status, nil, errorBody(body, mcp.CodeInternalError, msg, nil))
}
