// Package cleanpath gives request paths the form the proxy matches them in: the form that
// merges every spelling an upstream framework could route to one handler (see Clean). The
// proxy's routes (proxy/route) and the validation of configured paths (api/v1alpha1) use it.
package cleanpath

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// MaxDecodeRounds bounds how many times Clean percent-decodes a path: a path still holding
// escapes after that many rounds is refused rather than guessed at.
const MaxDecodeRounds = 3

// MaxPathLength bounds an escaped request path, in bytes.
const MaxPathLength = 4096

// ErrBadPath is the error of a path the proxy refuses to route (400).
var ErrBadPath = errors.New("malformed request path")

// Clean returns the form a request path is matched in, from its escaped form (as
// url.URL.EscapedPath gives it): percent-escapes decoded (repeatedly, up to MaxDecodeRounds),
// anything from a "#" on dropped, backslashes read as slashes, ";" parameters removed from
// each segment, empty segments
// (repeated and trailing slashes) dropped, and "." and ".." segments resolved, never above
// the root. The result starts with "/" and has no trailing slash (but for "/" itself). Case
// is kept: the endpoint is compared case-insensitively, pass-through rules are not.
//
// A path with a control character (once decoded), still encoded after MaxDecodeRounds, or
// longer than MaxPathLength is refused with an error wrapping ErrBadPath.
func Clean(escaped string) (string, error) {
	if len(escaped) > MaxPathLength {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrBadPath, MaxPathLength)
	}
	if isClean(escaped) {
		return escaped, nil // the common case, on every request: no allocation
	}
	return clean(escaped)
}

// clean is Clean without its fast path.
func clean(escaped string) (string, error) {
	p := escaped
	for round := 0; strings.IndexByte(p, '%') >= 0 && hasEscape(p); round++ {
		if round == MaxDecodeRounds {
			return "", fmt.Errorf("%w: percent-encoded more than %d times", ErrBadPath, MaxDecodeRounds)
		}
		d, err := url.PathUnescape(p)
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrBadPath, err)
		}
		p = d
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("%w: control character in path", ErrBadPath)
		}
	}
	// A request target has no fragment, but servers such as Node's cut one off (Go's keeps
	// it in the path): "/mcp#x" reaches Express's /mcp handler.
	if i := strings.IndexByte(p, '#'); i >= 0 {
		p = p[:i]
	}
	p = strings.ReplaceAll(p, `\`, "/")
	segs := strings.Split(p, "/")
	out := make([]string, 0, len(segs))
	for _, s := range segs {
		if i := strings.IndexByte(s, ';'); i >= 0 {
			s = s[:i]
		}
		switch s {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
		}
	}
	c := "/" + strings.Join(out, "/")
	if len(c) > MaxPathLength { // the leading "/" can make it one byte longer than its input
		return "", fmt.Errorf("%w: longer than %d bytes", ErrBadPath, MaxPathLength)
	}
	return c, nil
}

// isClean reports whether p is already in clean form: it starts with "/", has no escape,
// backslash, ';', '#' or control character, no empty segment (but for "/" itself), and no "."
// or ".." segment.
func isClean(p string) bool {
	if p == "/" {
		return true
	}
	if len(p) < 2 || p[0] != '/' || p[len(p)-1] == '/' {
		return false
	}
	segStart := 1
	for i := 1; i <= len(p); i++ {
		if i < len(p) {
			switch c := p[i]; {
			case c == '%' || c == '\\' || c == ';' || c == '#' || c < 0x20 || c == 0x7f:
				return false
			case c != '/':
				continue
			}
		}
		switch p[segStart:i] {
		case "", ".", "..":
			return false
		}
		segStart = i + 1
	}
	return true
}

// hasEscape reports whether p holds a well-formed percent-escape.
func hasEscape(p string) bool {
	for i := 0; i+2 < len(p); i++ {
		if p[i] == '%' && isHex(p[i+1]) && isHex(p[i+2]) {
			return true
		}
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// Escape is the escaped form of a cleaned path, as it is sent upstream.
func Escape(clean string) string { return (&url.URL{Path: clean}).EscapedPath() }
