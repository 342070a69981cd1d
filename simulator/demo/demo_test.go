package demo

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestRun checks the demo's decisions: the story is the no-drain sequence, then refill and a
// tool bucket.
func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := Run(t.Context(), &out); err != nil {
		t.Fatalf("Run: %v", err)
	}
	var got []string
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && strings.HasPrefix(f[0], "+") {
			got = append(got, f[1]+" "+f[2]+" "+f[3])
		}
	}
	want := []string{
		"alice echo allowed", "alice echo rejected", "bob echo allowed", "carol echo allowed",
		"dave echo rejected", "dave echo allowed", "alice search allowed", "bob search allowed",
		"carol search rejected", "carol echo allowed",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decisions: -want +got:\n%s\noutput:\n%s", diff, out.String())
	}
}
