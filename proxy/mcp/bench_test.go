package mcp

import (
	"encoding/json"
	"testing"
)

var benchBody = []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"search_issues",` +
	`"arguments":{"query":"rate limit","labels":["bug","proxy"],"limit":20},"_meta":{"progressToken":"p-42"}}}`)

// BenchmarkParse parses a typical tools/call body.
func BenchmarkParse(b *testing.B) {
	b.SetBytes(int64(len(benchBody)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(benchBody); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnmarshal is the same body decoded by encoding/json into the upstream struct of
// FuzzParse, for comparison.
func BenchmarkUnmarshal(b *testing.B) {
	b.SetBytes(int64(len(benchBody)))
	b.ReportAllocs()
	for b.Loop() {
		var u upstream
		if err := json.Unmarshal(benchBody, &u); err != nil {
			b.Fatal(err)
		}
	}
}
