package mcp

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzUnquote checks strings are decoded exactly as encoding/json decodes them.
func FuzzUnquote(f *testing.F) {
	for _, s := range []string{`"a"`, `"\u0074ools\/call"`, `"\ud83d\ude00"`, `"\ud800\ud800\udc00"`, `"\udc00x"`, `"\ud800\\u0041"`, `"\b\f\n\r\t\"\\"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want string
		if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' || !utf8.Valid(b) || json.Unmarshal(b, &want) != nil {
			return
		}
		s := scanner{b: b, maxDepth: 1}
		typ, ok := s.value()
		if !ok || typ != '"' || s.i != len(b) {
			t.Fatalf("scanner rejects %q, a JSON string", b)
		}
		if got := string(s.decode(span{typ, 0, len(b)})); got != want {
			t.Fatalf("decode(%q) = %q, encoding/json %q", b, got, want)
		}
	})
}
