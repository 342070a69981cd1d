package ratelimit

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNormalizeResourceURI(t *testing.T) {
	cases := map[string]struct {
		reason string
		in     string
		want   string
	}{
		"AlreadyNormal":     {"A normal URI is unchanged.", "file:///etc/motd", "file:///etc/motd"},
		"SchemeHostCase":    {"Scheme and host are case-insensitive.", "HTTPS://Example.COM/A", "https://example.com/A"},
		"DefaultPort":       {"A default port is dropped.", "http://example.com:80/x", "http://example.com/x"},
		"OtherPortKept":     {"A non-default port stays.", "http://example.com:8080/x", "http://example.com:8080/x"},
		"EmptyHTTPPath":     {"An empty http path is /.", "https://example.com", "https://example.com/"},
		"DotSegments":       {"Dot segments are removed.", "file:///a/b/../c/./d", "file:///a/c/d"},
		"DotDotAboveRoot":   {"'..' above the root stays at the root.", "file:///../../etc/passwd", "file:///etc/passwd"},
		"TrailingDotDot":    {"A trailing '..' keeps the directory form.", "file:///a/b/..", "file:///a/"},
		"UnreservedDecoded": {"Percent-encoded unreserved characters are decoded.", "file:///%7Euser/%61bc", "file:///~user/abc"},
		"HexUpperCased":     {"Other escapes get upper-case hex.", "file:///a%2fb", "file:///a%2Fb"},
		"Opaque":            {"Opaque URIs keep their form, scheme lower-cased.", "URN:isbn:%7e123", "urn:isbn:~123"},
		"Custom":            {"Custom schemes with a path are normalised too.", "db://Main/tables/../users", "db://main/users"},
		"QueryKept":         {"The query is kept, escapes normalised.", "https://e.com/x?a=%7e&b=%2f", "https://e.com/x?a=~&b=%2F"},
		"NoScheme":          {"A relative reference is matched as it is, escapes normalised.", "notes/%7e1", "notes/~1"},
		"Unparsable":        {"A URI that does not parse is matched as it is.", "http://[::1", "http://[::1"},
		"BadHostEscape":     {"An invalid host escape does not parse: matched as it is.", "A000://%70", "A000://%70"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, NormalizeResourceURI(tc.in)); diff != "" {
				t.Errorf("%s\nNormalizeResourceURI(%q): -want +got:\n%s", tc.reason, tc.in, diff)
			}
		})
	}
}

// FuzzNormalizeResourceURI: normalising is idempotent and never panics, so a configured URI
// and a request URI meet in one form.
func FuzzNormalizeResourceURI(f *testing.F) {
	for _, s := range []string{"file:///a/../b", "HTTP://X:80", "urn:a:%7e", "%zz", "a/./b/../c", "http://[::1]:80/%41"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		once := NormalizeResourceURI(s)
		if twice := NormalizeResourceURI(once); twice != once {
			t.Fatalf("not idempotent: %q → %q → %q", s, once, twice)
		}
	})
}
