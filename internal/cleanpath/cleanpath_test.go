package cleanpath

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestClean(t *testing.T) {
	cases := map[string]struct {
		reason string
		in     string
		want   string
		err    bool
	}{
		"Plain":           {reason: "A clean path is unchanged.", in: "/mcp", want: "/mcp"},
		"Root":            {reason: "The root is /.", in: "/", want: "/"},
		"Empty":           {reason: "An empty path is the root.", in: "", want: "/"},
		"TrailingSlash":   {reason: "Express ignores a trailing slash.", in: "/mcp/", want: "/mcp"},
		"TrailingSlashes": {reason: "Any number of them.", in: "/mcp///", want: "/mcp"},
		"RepeatedSlashes": {reason: "Empty segments are dropped.", in: "//a///mcp", want: "/a/mcp"},
		"DotSegments":     {reason: "Dot segments are resolved.", in: "/x/../a/./mcp", want: "/a/mcp"},
		"AboveRoot":       {reason: "'..' never climbs above the root.", in: "/../../mcp", want: "/mcp"},
		"Escapes":         {reason: "Go's ServeMux and ASGI servers decode escapes.", in: "/%6d%63%70", want: "/mcp"},
		"EscapedSlash":    {reason: "An escaped slash is a slash once decoded.", in: "/a%2Fmcp", want: "/a/mcp"},
		"EscapedDots":     {reason: "Escaped dot segments are dot segments.", in: "/x/%2e%2E/mcp", want: "/mcp"},
		"DoubleEscape":    {reason: "Escapes are decoded repeatedly.", in: "/x/%252e%252e/mcp", want: "/mcp"},
		"Backslash":       {reason: "A backslash is a slash (WHATWG, Windows servers).", in: `/x\..\mcp`, want: "/mcp"},
		"Params":          {reason: "';' parameters are dropped from each segment (Tomcat).", in: "/mcp;jsessionid=1", want: "/mcp"},
		"ParamsInside":    {reason: "From every segment.", in: "/a;x/mcp;y/", want: "/a/mcp"},
		"Fragment":        {reason: "Node cuts a fragment off the request target.", in: "/mcp%23x", want: "/mcp"},
		"CaseKept":        {reason: "Case is kept; the endpoint compares folded.", in: "/MCP", want: "/MCP"},
		"PercentLiteral":  {reason: "A '%' that starts no escape stays.", in: "/100%25", want: "/100%"},
		"Control":         {reason: "A control character is refused.", in: "/mcp%00", err: true},
		"Tab":             {reason: "Tab too.", in: "/mc%09p", err: true},
		"TripleEscape":    {reason: "Four rounds of escapes are refused, not guessed at.", in: "/%2525252e", err: true},
		"TooLong":         {reason: "Paths are bounded.", in: "/" + strings.Repeat("a", MaxPathLength), err: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := Clean(tc.in)
			if (err != nil) != tc.err {
				t.Fatalf("%s\nClean(%q): error %v, want error %v", tc.reason, tc.in, err, tc.err)
			}
			if err != nil {
				if !errors.Is(err, ErrBadPath) {
					t.Errorf("%s\nClean(%q): error %v does not wrap ErrBadPath", tc.reason, tc.in, err)
				}
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%s\nClean(%q): -want +got:\n%s", tc.reason, tc.in, diff)
			}
		})
	}
}

// FuzzClean: cleaning is idempotent, and the fast path agrees with the full algorithm.
func FuzzClean(f *testing.F) {
	for _, s := range []string{"/mcp", "/MCP/", "//a/./b/../mcp", "/%6d%63%70", "/a;x/b", `/x\\y`, "/mcp%2F", "/100%25", "/%2525", "/mcp#x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		c, err := Clean(p)
		if err != nil {
			return
		}
		if again, err := Clean(c); err != nil || again != c {
			t.Fatalf("not idempotent: %q → %q → %q (%v)", p, c, again, err)
		}
		if isClean(p) {
			if slow, err := clean(p); err != nil || slow != p {
				t.Fatalf("the fast path keeps %q, the full algorithm gives %q (%v)", p, slow, err)
			}
		}
	})
}
