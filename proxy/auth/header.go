package auth

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tollgate-dev/tollgate/api/v1alpha1"
	"github.com/tollgate-dev/tollgate/proxy/ratelimit"
)

// MaxUserIDLength bounds a user id, from an identity header or a token claim, in bytes.
const MaxUserIDLength = 1024

// header trusts an identity header set by an authenticating gateway.
type header struct {
	name    string         // canonical form
	trusted []netip.Prefix // nil: from anywhere
}

// newHeader builds the header authenticator from a config ProxyAuth.Validate accepted.
func newHeader(cfg v1alpha1.HeaderAuth) *header {
	h := &header{name: http.CanonicalHeaderKey(cfg.Name)}
	for _, s := range cfg.TrustedProxies {
		if p, err := netip.ParsePrefix(s); err == nil {
			h.trusted = append(h.trusted, p.Masked())
		}
	}
	return h
}

// Authenticate returns the header's value as the user id. Absent (or empty, from a trusted
// peer) it returns an anonymous identity: the proxy answers 401 itself where a per-user limit
// applies. With trustedProxies set, a request carrying the header from a peer outside them is
// refused, never silently trusted nor silently treated as anonymous: that is a
// misconfiguration or an attack to surface.
//
// An identified caller's attributes are the request's headers: the gateway that set the
// identity header is trusted for the headers beside it (a tier header such as X-Plan) by the
// same rule. The proxy refuses a repeated tier header before this runs.
func (h *header) Authenticate(r *http.Request) (Identity, error) {
	vals := r.Header.Values(h.name)
	if len(vals) == 0 {
		return Identity{}, nil
	}
	if h.trusted != nil && !h.fromTrusted(r.RemoteAddr) {
		return Identity{}, &Error{Status: http.StatusUnauthorized, Message: "identity header from an untrusted address"}
	}
	if len(vals) > 1 {
		return Identity{}, &Error{Status: http.StatusUnauthorized, Message: "identity header sent more than once"}
	}
	v := vals[0]
	if v == "" {
		return Identity{}, nil
	}
	if msg := checkUserID(v); msg != "" {
		return Identity{}, &Error{Status: http.StatusBadRequest, Message: "identity header " + msg}
	}
	return Identity{User: v, Attributes: ratelimit.Attributes{Header: r.Header}}, nil
}

func (h *header) Required() bool                      { return false }
func (h *header) Challenge(*http.Request) http.Header { return http.Header{} }
func (h *header) IdentityHeaders() []string           { return []string{h.name} }

// fromTrusted reports whether the peer address (never X-Forwarded-For, which the peer writes)
// is inside a trusted CIDR. An IPv4-mapped IPv6 peer matches IPv4 CIDRs; a zone is ignored.
func (h *header) fromTrusted(remoteAddr string) bool {
	var addr netip.Addr
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		addr = ap.Addr()
	} else if a, err := netip.ParseAddr(remoteAddr); err == nil {
		addr = a
	} else {
		return false
	}
	addr = addr.WithZone("").Unmap()
	for _, p := range h.trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// checkUserID returns why s cannot be a user id, as a predicate ("contains ..."), or "".
func checkUserID(s string) string {
	switch {
	case len(s) > MaxUserIDLength:
		return fmt.Sprintf("is longer than %d bytes", MaxUserIDLength)
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.ContainsFunc(s, unicode.IsControl):
		return "contains control characters"
	}
	return ""
}
