package ratelimit

import (
	"net/url"
	"strings"
)

// NormalizeResourceURI returns the form of a resource URI that resources[] entries are matched
// in (RFC 3986 §6.2.2, syntax-based normalisation): scheme and host in lower case, a default
// port dropped, percent-encodings of unreserved characters decoded and the others in upper
// case, dot segments removed, an empty http(s) path made "/". Two spellings of one resource
// therefore share one bucket; a URI that does not parse is matched as it is. Normalising can
// only merge buckets, never split one, so it can make a limit stricter but never a way
// around it.
func NormalizeResourceURI(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return uri
	}
	if u.Scheme == "" {
		return normalizePercent(uri)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if u.Opaque != "" {
		u.Opaque = normalizePercent(u.Opaque)
		u.RawQuery = normalizePercent(u.RawQuery)
		return u.String()
	}
	host := strings.ToLower(u.Host)
	switch {
	case u.Scheme == "http" && strings.HasSuffix(host, ":80"):
		host = strings.TrimSuffix(host, ":80")
	case u.Scheme == "https" && strings.HasSuffix(host, ":443"):
		host = strings.TrimSuffix(host, ":443")
	}
	u.Host = host
	p := removeDotSegments(normalizePercent(u.EscapedPath()))
	if p == "" && (u.Scheme == "http" || u.Scheme == "https") {
		p = "/"
	}
	out := u.Scheme + ":"
	if u.Host != "" || u.User != nil || strings.HasPrefix(uri[len(u.Scheme)+1:], "//") {
		out += "//"
		if u.User != nil {
			out += u.User.String() + "@"
		}
		out += u.Host
	} else if strings.HasPrefix(p, "//") {
		p = "/." + p // without an authority, a path starting "//" would read as one (RFC 3986 §5.2.4)
	}
	out += p
	if u.ForceQuery || u.RawQuery != "" {
		out += "?" + normalizePercent(u.RawQuery)
	}
	if u.Fragment != "" {
		out += "#" + normalizePercent(u.EscapedFragment())
	}
	return out
}

// normalizePercent decodes percent-encoded unreserved characters and upper-cases the hex
// digits of the rest; malformed escapes are left as they are.
func normalizePercent(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			c := unhex(s[i+1])<<4 | unhex(s[i+2])
			if isUnreserved(c) {
				b.WriteByte(c)
			} else {
				b.WriteByte('%')
				b.WriteString(strings.ToUpper(s[i+1 : i+3]))
			}
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeDotSegments is RFC 3986 §5.2.4.
func removeDotSegments(p string) string {
	if !strings.Contains(p, ".") {
		return p
	}
	var out []string
	segs := strings.Split(p, "/")
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 || (len(out) == 1 && out[0] != "") {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	r := strings.Join(out, "/")
	if strings.HasPrefix(p, "/") && !strings.HasPrefix(r, "/") {
		r = "/" + r
	}
	return r
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
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
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// CanonicalResourceURI is a placeholder until the WHATWG canonicaliser lands.
func CanonicalResourceURI(uri string) (string, error) { return NormalizeResourceURI(uri), nil }
