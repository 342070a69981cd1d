package auth

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
)

// WellKnownPath is where RFC 9728 puts protected resource metadata: the resource
// https://h/mcp has its metadata at https://h/.well-known/oauth-protected-resource/mcp.
const WellKnownPath = "/.well-known/oauth-protected-resource"

// Metadata is the RFC 9728 protected resource metadata document MetadataHandler serves.
type Metadata struct {
	Resource               string   `json:"resource"`
	AuthorizationServers   []string `json:"authorization_servers"`
	BearerMethodsSupported []string `json:"bearer_methods_supported"`
}

// MetadataHandler serves the RFC 9728 protected resource metadata of the MCP endpoint whose
// resource identifier is resource (such as https://mcp.example.com/mcp), naming cfg.Issuer as
// its authorization server. Mount it at WellKnownPath followed by the endpoint's path.
//
// With resource "", each request derives it as challenges do without WithPublicURL: the
// scheme (TLS, else X-Forwarded-Proto http or https, else http), the Host, and the request
// path after WellKnownPath. A proxy built WithPublicURL should pass the resource explicitly,
// the public URL followed by the endpoint path, so that both agree.
//
// It answers GET and HEAD, OPTIONS for CORS preflights (the document is public and browser
// based MCP clients fetch it cross-origin), and 405 to other methods.
func MetadataHandler(cfg v1alpha1.OIDCConfig, resource string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		switch r.Method {
		case http.MethodGet, http.MethodHead:
		case http.MethodOptions:
			h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "*")
			w.WriteHeader(http.StatusNoContent)
			return
		default:
			h.Set("Allow", "GET, HEAD, OPTIONS")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		res := resource
		if res == "" {
			p := "/"
			if r.URL != nil {
				p = r.URL.EscapedPath()
			}
			p = strings.TrimPrefix(p, WellKnownPath)
			res = requestScheme(r) + "://" + requestHost(r) + p
		}
		body, err := json.Marshal(Metadata{
			Resource:               res,
			AuthorizationServers:   []string{cfg.Issuer},
			BearerMethodsSupported: []string{"header"},
		})
		if err != nil {
			http.Error(w, "encoding metadata", http.StatusInternalServerError)
			return
		}
		h.Set("Content-Type", "application/json")
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(append(body, '\n'))
	})
}

// metadataURL is the RFC 9728 metadata URL of the resource r addresses: WellKnownPath
// inserted between the host and the path (the public base URL's path, then the request's).
func metadataURL(base *url.URL, r *http.Request) string {
	p := "/"
	if r.URL != nil {
		p = r.URL.EscapedPath()
	}
	scheme, host := requestScheme(r), requestHost(r)
	if base != nil {
		scheme, host = base.Scheme, base.Host
		p = strings.TrimSuffix(base.EscapedPath(), "/") + p
	}
	if p == "/" {
		p = "" // RFC 9728 section 3.1: no terminating slash after the host
	}
	return scheme + "://" + host + WellKnownPath + p
}

// requestScheme is https for a request that arrived over TLS or whose X-Forwarded-Proto
// (its first value) says https, else http.
//
// X-Forwarded-Proto is believed from anyone, as Host is: both only shape the URL the proxy
// tells that same client where to find metadata, and a client lying about them misleads
// itself. Only the exact values http and https are used, so nothing else reaches the URL.
// A deployment that wants neither believed sets WithPublicURL.
func requestScheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	v, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ",")
	if strings.EqualFold(strings.TrimSpace(v), "https") {
		return "https"
	}
	return "http"
}

// requestHost is the request's Host, or its URL's host, or localhost.
func requestHost(r *http.Request) string {
	if r.Host != "" {
		return r.Host
	}
	if r.URL != nil && r.URL.Host != "" {
		return r.URL.Host
	}
	return "localhost"
}

// headerSafeURL percent-encodes every byte that cannot stand inside a quoted-string
// unescaped: controls, space, non-ASCII, '"' and '\'.
func headerSafeURL(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			const hex = "0123456789ABCDEF"
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// headerSafeText keeps the characters RFC 6750 allows in error_description
// (%x20-21 / %x23-5B / %x5D-7E) and drops the rest.
func headerSafeText(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, s)
}
