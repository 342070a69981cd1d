// Package resourceuri gives MCP resource URIs the canonical form that resources/read calls are
// rate limited by.
//
// The official TypeScript MCP SDK server looks a resource up by new URL(uri).toString(), the
// WHATWG URL parser and serialiser, so every spelling that WHATWG parsing maps to one URL reaches
// one resource: "file://localhost/x", "file:/x", "FILE:///x", backslashes, "./" and "x/../"
// segments, "%2e%2e", leading and trailing C0 controls and spaces, tabs and newlines anywhere.
// Canonical applies that same parsing (github.com/nlnwa/whatwg-url, checked against Node 20 by
// this package's differential tests), then merges a little more (see Canonical), so that all
// such spellings share one bucket.
//
// Merging buckets is always safe: two resources that share a bucket only get a stricter limit.
// Splitting one resource over two buckets is the bypass. So where this package cannot tell
// exactly what Node 20 makes of a URI, it refuses the URI rather than guess (see Canonical).
package resourceuri

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	werrors "github.com/nlnwa/whatwg-url/errors"
	wurl "github.com/nlnwa/whatwg-url/url"
)

// MaxLength is the longest resource URI, and the longest canonical form, that Canonical
// accepts, in bytes.
const MaxLength = 4096

// maxRounds bounds the merge(WHATWG(x)) iteration in Canonical. One round is enough for almost
// every URI: a second is needed when a decoded escape changes what the parser sees ("%43|" →
// "C|", a Windows drive letter) or forms a new escape ("%%34%31" → "%41"); nesting deeper than
// this is refused.
const maxRounds = 4

var (
	// ErrInvalid is wrapped by the errors for URIs that are not URLs at all: WHATWG parsing
	// (new URL(uri) in Node) fails, or the URI is too long or not UTF-8.
	ErrInvalid = errors.New("invalid resource URI")
	// ErrUnsupported is wrapped by the errors for URIs that may well be valid URLs but that
	// Canonical cannot canonicalise exactly as Node 20 would, so it refuses them.
	ErrUnsupported = errors.New("unsupported resource URI")
)

// Canonical returns the form resource URIs are matched in, or an error saying why the URI
// cannot be canonicalised safely (the proxy then refuses the call with JSON-RPC -32602).
//
// Canonical(x) is the fixpoint of x ↦ merge(W(x)), where W is WHATWG URL parsing and
// serialisation exactly as new URL(x).toString() in Node 20 (no base URL) and merge decodes
// the percent-escapes of RFC 3986 unreserved characters (ALPHA DIGIT - . _ ~) and upper-cases
// the hex digits of every other escape. For almost every URI the fixpoint is merge(W(x))
// itself; iterating (at most maxRounds times) is what makes Canonical idempotent:
// Canonical(Canonical(x)) == Canonical(x). Decoding '.' is safe here because W has already
// removed the dot segments, including "%2e" ones, before merge runs.
//
// Canonical returns an error wrapping ErrInvalid where Node's new URL(x) throws, and for
// URIs longer than MaxLength bytes or not valid UTF-8. It returns an error wrapping
// ErrUnsupported for valid URLs it cannot canonicalise exactly like Node 20:
//   - a host of a special scheme (http, https, ws, wss, ftp, file) that needs IDNA: non-ASCII,
//     also when percent-encoded, or containing "xn--" (Go's and Node's IDNA tables differ);
//   - a host of a special scheme with a label that the library's IPv4 number parser misreads:
//     a signed number ("+1", "0x-1") or a very long number followed by a non-digit;
//   - a file: URL with a ".." segment and a "letter:" followed by more than a slash in its
//     path: Node 20 never removes a first segment that starts like a Windows drive letter
//     ("file:///u:x/../y" is "file:///u:x/y" in Node 20, "file:///y" by the standard);
//   - a URL of another scheme whose ".." segments leave its path empty: Node 20 serialises
//     "urn://h/.." as "urn://h", the standard as "urn://h/";
//   - a URL whose path has a dot segment and a segment that starts with a dot ("/a/.b/../c"):
//     Node 20 (ada 2.9.2) takes a path whose first "/." is followed by another character
//     for one without dot segments and keeps "/a/.b/../c" as it is;
//   - a URI whose canonical form would be longer than MaxLength, or that does not settle
//     within maxRounds rounds;
//   - a URI with an authority (userinfo, host and port) longer than 256 bytes or with more
//     than 128 slashes and backslashes before its query: limits that keep the worst case of
//     the parser's quadratic corners at about a millisecond.
//
// Error messages are short and safe to send to a client: they quote at most the first few
// bytes of the URI.
func Canonical(uri string) (string, error) {
	if len(uri) > MaxLength {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxLength)
	}
	if !utf8.ValidString(uri) {
		return "", fmt.Errorf("%w: not valid UTF-8", ErrInvalid)
	}
	cur := uri
	for range maxRounds {
		// Every round's input is checked, so the result (the last round's input) passes
		// too: Canonical of a canonical form is that form.
		if len(cur) > MaxLength {
			return "", fmt.Errorf("%w %s: canonical form longer than %d bytes", ErrUnsupported, quote(uri), MaxLength)
		}
		if why := tooComplex(cur); why != "" {
			return "", fmt.Errorf("%w %s: %s", ErrUnsupported, quote(uri), why)
		}
		h, err := whatwg(cur)
		if err != nil {
			return "", fmt.Errorf("%w %s: %s", err.kind, quote(uri), err.why)
		}
		next := merge(h)
		if next == cur {
			return next, nil
		}
		cur = next
	}
	return "", fmt.Errorf("%w %s: does not settle to a canonical form", ErrUnsupported, quote(uri))
}

// Limits on the shape of a URI. The WHATWG library takes time quadratic in the length of a
// host or of userinfo, and in the number of path segments times the path's length (about
// 35 ms for a 4 KB opaque host, 4 ms for 4000 empty segments, on the machines here); these
// keep every URI under MaxLength at about a millisecond at worst.
const (
	// maxAuthority bounds userinfo, host and port together, in bytes.
	maxAuthority = 256
	// maxSlashes bounds the slashes and backslashes before the query.
	maxSlashes = 128
)

// tooComplex says why s is over the limits above, or returns "". It looks at s as the WHATWG
// parser would and errs on the side of a longer authority.
func tooComplex(s string) string {
	s = beforeQuery(s)
	if strings.Count(s, "/")+strings.Count(s, "\\") > maxSlashes {
		return fmt.Sprintf("more than %d slashes", maxSlashes)
	}
	if len(authorityOf(s)) > maxAuthority {
		return fmt.Sprintf("authority longer than %d bytes", maxAuthority)
	}
	return ""
}

// authorityOf returns what the WHATWG parser would read as the authority of s (a string from
// beforeQuery), or "" where it reads none.
func authorityOf(s string) string {
	i := strings.IndexByte(s, ':')
	if i <= 0 || !isAlpha(s[0]) {
		return ""
	}
	scheme := strings.ToLower(s[:i])
	if strings.TrimLeft(scheme, "abcdefghijklmnopqrstuvwxyz0123456789+-.") != "" {
		return ""
	}
	rest, ends := s[i+1:], "/"
	switch scheme {
	case "http", "https", "ws", "wss", "ftp":
		rest, ends = strings.TrimLeft(rest, "/\\"), "/\\"
	case "file":
		if len(rest) < 2 || !isSlash(rest[0]) || !isSlash(rest[1]) {
			return ""
		}
		rest, ends = rest[2:], "/\\"
	default:
		var ok bool
		if rest, ok = strings.CutPrefix(rest, "//"); !ok {
			return ""
		}
	}
	if j := strings.IndexAny(rest, ends); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

// refusal is why whatwg gives no URL: kind is ErrInvalid or ErrUnsupported.
type refusal struct {
	kind error
	why  string
}

// whatwg is W: new URL(s).toString() as Node 20 computes it, or a refusal where the parser
// fails or where Node 20 might disagree with the library.
func whatwg(s string) (href string, r *refusal) {
	defer func() {
		if p := recover(); p != nil {
			href, r = "", &refusal{ErrUnsupported, "URL parser failed"}
		}
	}()
	var idnaHost, misreadNumber, brackets bool
	p := wurl.NewParser(wurl.WithPreParseHostFunc(func(u *wurl.Url, host string) string {
		// The library trims every leading '[' and trailing ']' of an IPv6 host; the
		// standard's IPv6 parser fails on any bracket inside.
		if strings.HasPrefix(host, "[") && (strings.Count(host, "[") != 1 || strings.Count(host, "]") != 1) {
			brackets = true
		}
		if u.IsSpecialScheme() {
			idnaHost = idnaHost || needsIDNA(host)
			misreadNumber = misreadNumber || hasMisreadNumber(host)
		}
		return host
	}))
	u, err := p.Parse(s)
	switch {
	case brackets:
		return "", &refusal{ErrInvalid, "not a valid URL: invalid IPv6 address"}
	case idnaHost:
		return "", &refusal{ErrUnsupported, "internationalised host names are not supported"}
	case misreadNumber:
		return "", &refusal{ErrUnsupported, "number-like host label"}
	case err != nil:
		return "", &refusal{ErrInvalid, parseFailure(err)}
	}
	seg := dotSegmentsOf(s)
	switch {
	case seg.doubleDot && u.Scheme() == "file" && hasDriveLetterLike(s):
		return "", &refusal{ErrUnsupported, `".." segment beside a drive letter`}
	case seg.doubleDot && !u.IsSpecialScheme() && u.Pathname() == "/":
		return "", &refusal{ErrUnsupported, `".." segments empty the path`}
	case seg.dotNamed && (seg.dot || seg.doubleDot) && strings.HasPrefix(u.Pathname(), "/"):
		return "", &refusal{ErrUnsupported, `dot segment beside a ".name" segment`}
	}
	return u.Href(false), nil
}

// needsIDNA reports whether a host of a special URL, as the parser has it before host
// parsing (percent-escapes still in), would need IDNA processing beyond ASCII lower-casing.
func needsIDNA(host string) bool {
	d := percentDecode(host)
	for i := 0; i < len(d); i++ {
		if d[i] >= utf8.RuneSelf {
			return true
		}
	}
	return strings.Contains(strings.ToLower(d), "xn--")
}

// hasMisreadNumber reports whether a host of a special URL (before host parsing) has a
// dot-separated part that the library's IPv4 number parser (strconv.ParseInt, after a "0x"
// or "0" prefix) reads unlike the standard's: a sign ("+1", "0x-1": a number to ParseInt, a
// domain label to the standard: "http://+0/" is host "+0" in Node, 0.0.0.0 in the library),
// or so many digits before a non-digit that ParseInt reports overflow before it reaches the
// non-digit ("20000000000000000000a": a domain label to the standard, a failure in the
// library).
func hasMisreadNumber(host string) bool {
	for _, part := range strings.Split(strings.ToLower(percentDecode(host)), ".") {
		digits := "0123456789"
		switch {
		case strings.HasPrefix(part, "0x"):
			part, digits = part[2:], "0123456789abcdef"
		case strings.HasPrefix(part, "0"):
			part, digits = part[1:], "01234567"
		}
		if part == "" {
			continue
		}
		if part[0] == '+' || part[0] == '-' {
			part = part[1:]
			if part != "" && strings.Trim(part, digits) == "" {
				return true
			}
		}
		run := len(part) - len(strings.TrimLeft(part, digits))
		if run > 15 && run < len(part) {
			return true
		}
	}
	return false
}

// beforeQuery is s as the WHATWG parser reads it (C0 controls and spaces trimmed from both
// ends, tabs and newlines removed) up to its first '?' or '#': scheme, authority and path.
func beforeQuery(s string) string {
	s = strings.TrimFunc(s, func(r rune) bool { return r <= 0x20 })
	s = strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return -1
		}
		return r
	}, s)
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	return s
}

// dotSegments says which kinds of segment s has before its query, splitting at slashes and
// backslashes.
type dotSegments struct {
	// dot is a segment WHATWG reads as ".": "." or "%2e" in any case.
	dot bool
	// doubleDot is a segment WHATWG reads as "..": "..", ".%2e", "%2e." or "%2e%2e".
	doubleDot bool
	// dotNamed is a segment that starts with '.' and is neither: ".b", "...".
	dotNamed bool
}

func dotSegmentsOf(s string) dotSegments {
	var d dotSegments
	for _, seg := range strings.FieldsFunc(beforeQuery(s), func(r rune) bool { return r == '/' || r == '\\' }) {
		switch strings.ToLower(seg) {
		case ".", "%2e":
			d.dot = true
		case "..", ".%2e", "%2e.", "%2e%2e":
			d.doubleDot = true
		default:
			if seg[0] == '.' {
				d.dotNamed = true
			}
		}
	}
	return d
}

// hasDriveLetterLike reports whether s, after its scheme and before its query, has an ASCII
// letter followed by ':' and then by anything but a slash or backslash: a segment that Node 20
// takes for a Windows drive letter though it is longer ("u:x"). A drive letter alone ("C:")
// is kept by the standard and by Node alike.
func hasDriveLetterLike(s string) bool {
	s = beforeQuery(s)
	if i := strings.IndexByte(s, ':'); i >= 0 {
		s = s[i+1:] // past the scheme
	}
	for i := 1; i+1 < len(s); i++ {
		if s[i] == ':' && isAlpha(s[i-1]) && s[i+1] != '/' && s[i+1] != '\\' {
			return true
		}
	}
	return false
}

// parseFailure says briefly why the WHATWG parser failed, without the URI (the library's
// own messages quote it whole).
func parseFailure(err error) string {
	if why, ok := failures[werrors.Type(err)]; ok {
		return "not a valid URL: " + why
	}
	return "not a valid URL"
}

// failures are short reasons for the parser's failures.
var failures = map[werrors.ErrorType]string{
	werrors.MissingSchemeNonRelativeURL: "no scheme",
	werrors.HostMissing:                 "no host",
	werrors.HostInvalidCodePoint:        "invalid host",
	werrors.DomainInvalidCodePoint:      "invalid host",
	werrors.DomainToASCII:               "invalid host",
	werrors.IPv4TooManyParts:            "invalid IPv4 address",
	werrors.IPv4NonNumericPart:          "invalid IPv4 address",
	werrors.IPv4OutOfRangePart:          "invalid IPv4 address",
	werrors.IPv4EmptyPart:               "invalid IPv4 address",
	werrors.IPv6Unclosed:                "invalid IPv6 address",
	werrors.IPv6InvalidCompression:      "invalid IPv6 address",
	werrors.IPv6TooManyPieces:           "invalid IPv6 address",
	werrors.IPv6MultipleCompression:     "invalid IPv6 address",
	werrors.IPv6InvalidCodePoint:        "invalid IPv6 address",
	werrors.IPv6TooFewPieces:            "invalid IPv6 address",
	werrors.IPv4InIPv6TooManyPieces:     "invalid IPv6 address",
	werrors.IPv4InIPv6InvalidCodePoint:  "invalid IPv6 address",
	werrors.IPv4InIPv6OutOfRangePart:    "invalid IPv6 address",
	werrors.IPv4InIPv6TooFewParts:       "invalid IPv6 address",
	werrors.PortOutOfRange:              "invalid port",
	werrors.PortInvalid:                 "invalid port",
	werrors.InvalidCredentials:          "credentials without a host",
}

// merge decodes percent-escapes of RFC 3986 unreserved characters and upper-cases the hex
// digits of the others; a '%' that starts no escape is kept as it is (WHATWG keeps it too).
func merge(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			c := unhex(s[i+1])<<4 | unhex(s[i+2])
			if isUnreserved(c) {
				b.WriteByte(c)
			} else {
				b.WriteByte('%')
				b.WriteByte(upperHex(s[i+1]))
				b.WriteByte(upperHex(s[i+2]))
			}
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// percentDecode decodes every well-formed percent-escape of s.
func percentDecode(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// quote returns s quoted for an error message, Go-escaped, cut so that the quote is at most
// 36 bytes long (and marked "…" where cut).
func quote(s string) string {
	const max = 36
	if q := strconv.Quote(s); len(q) <= max {
		return q
	}
	cut := min(len(s), max)
	for {
		for cut > 0 && cut < len(s) && !utf8.RuneStart(s[cut]) {
			cut--
		}
		if q := strconv.Quote(s[:cut]); len(q) <= max || cut == 0 {
			return q + "…"
		}
		cut--
	}
}

func isSlash(c byte) bool { return c == '/' || c == '\\' }

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

func isUnreserved(c byte) bool {
	return isAlpha(c) || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}
