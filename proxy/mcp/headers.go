package mcp

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// Headers MCP 2026-07-28 clients send on every POST, mirroring the body.
const (
	HeaderMethod = "Mcp-Method" // the message's method
	HeaderName   = "Mcp-Name"   // params.name or params.uri of tools/call, prompts/get, resources/read
)

// CheckHeaders checks the Mcp-Method and Mcp-Name headers of a POST against its parsed body,
// which is the truth. Absent headers are fine (clients of older revisions send none). When
// present:
//   - Mcp-Method must equal the method of the single message (a response has none, so
//     Mcp-Method on a response is a mismatch);
//   - Mcp-Name must equal the Name of a limited message. On other messages it is not checked:
//     clients also send it for methods such as resources/subscribe, whose params the proxy
//     does not read, and the proxy's decisions never depend on it;
//   - a value of the form "=?base64?<standard base64>?=" (markers in lower case, as MCP
//     specifies) is compared decoded; invalid base64 in that form is a mismatch;
//   - either header sent more than once, or either header on a batch, is a mismatch.
//
// A mismatch is an Error with code CodeHeaderMismatch and HTTP status 400, echoing the id of a
// request.
func CheckHeaders(h http.Header, b Body) *Error {
	methods := headerValues(h, HeaderMethod)
	names := headerValues(h, HeaderName)
	if len(methods) == 0 && len(names) == 0 {
		return nil
	}
	if b.Batch {
		return headerMismatch(nil, "Mcp-Method and Mcp-Name headers are not allowed on a batch")
	}
	if len(b.Messages) != 1 {
		return headerMismatch(nil, "no message to compare Mcp-Method and Mcp-Name headers with")
	}
	m := b.Messages[0]
	var id json.RawMessage
	if m.Kind == KindRequest {
		id = m.ID
	}
	if len(methods) > 1 {
		return headerMismatch(id, "Mcp-Method header sent more than once")
	}
	if len(names) > 1 {
		return headerMismatch(id, "Mcp-Name header sent more than once")
	}
	if len(methods) == 1 {
		v, ok := decodeHeader(methods[0])
		switch {
		case !ok:
			return headerMismatch(id, "Mcp-Method header has invalid base64")
		case m.Kind == KindResponse:
			return headerMismatch(id, "Mcp-Method header on a response")
		case v != m.Method:
			return headerMismatch(id, "Mcp-Method header "+quote([]byte(v))+" does not match method "+quote([]byte(m.Method)))
		}
	}
	if len(names) == 1 && m.Limited {
		v, ok := decodeHeader(names[0])
		switch {
		case !ok:
			return headerMismatch(id, "Mcp-Name header has invalid base64")
		case v != m.Name:
			return headerMismatch(id, "Mcp-Name header "+quote([]byte(v))+" does not match "+strconv.Quote(nameField(m.Method))+" "+quote([]byte(m.Name)))
		}
	}
	return nil
}

// nameField is where the Name of a limited message comes from: params.name or params.uri.
func nameField(method string) string { return "params." + paramKeys[nameKey(method)] }

// headerValues returns every value of the header name, whatever the case of its key in h (a
// server's http.Header is canonical, one built by hand may not be).
func headerValues(h http.Header, name string) []string {
	vs := h[name]
	for k, v := range h {
		if k != name && strings.EqualFold(k, name) {
			vs = append(vs[:len(vs):len(vs)], v...)
		}
	}
	return vs
}

// decodeHeader decodes a header value of the form =?base64?...?=; other values are literal.
func decodeHeader(v string) (string, bool) {
	const prefix, suffix = "=?base64?", "?="
	if len(v) < len(prefix)+len(suffix) || !strings.HasPrefix(v, prefix) || !strings.HasSuffix(v, suffix) {
		return v, true
	}
	d, err := base64.StdEncoding.Strict().DecodeString(v[len(prefix) : len(v)-len(suffix)])
	if err != nil {
		return "", false
	}
	return string(d), true
}
