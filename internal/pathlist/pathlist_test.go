package pathlist

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestExpand(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"b.yaml", "a.YML", "sub/c.yaml", "notes.txt"} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Expand([]string{filepath.Join(dir, "notes.txt"), dir}, ".yaml", ".yml")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "notes.txt"), filepath.Join(dir, "a.YML"), filepath.Join(dir, "b.yaml"), filepath.Join(dir, "sub/c.yaml")}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("a named file as it is, then the folder's matching files sorted: -want +got:\n%s", diff)
	}
	if _, err := Expand([]string{filepath.Join(dir, "sub")}, ".json"); err == nil {
		t.Error("a folder without matching files must be an error")
	}
}
