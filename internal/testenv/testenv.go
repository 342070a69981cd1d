// Package testenv decides what a test does when a real component it needs is missing: under
// CI (CI=true) it fails, because a skipped test proves nothing; elsewhere it skips with a
// message that says how to get the component.
package testenv

import (
	"os"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing stops the test: a failure under CI, a skip elsewhere.
func Missing(t testing.TB, component, howToGet string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s is required under CI=true but missing: %s", component, howToGet)
	}
	t.Skipf("%s is missing (%s); skipping. Under CI=true this fails.", component, howToGet)
}
