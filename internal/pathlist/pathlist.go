// Package pathlist expands command-line paths — files, or folders searched recursively — into
// the files they name, as `operator validate -f` and `simulator run` take them.
package pathlist

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Expand returns the files paths name: a file as it is (whatever its extension), and below a
// folder every file whose extension (case-insensitive) is one of exts, sorted per folder. A
// folder holding none is an error.
func Expand(paths []string, exts ...string) ([]string, error) {
	var out []string
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !info.IsDir() {
			out = append(out, p)
			continue
		}
		var found []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && slices.Contains(exts, strings.ToLower(filepath.Ext(path))) {
				found = append(found, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("%s: no files (*%s)", p, strings.Join(exts, ", *"))
		}
		slices.Sort(found)
		out = append(out, found...)
	}
	return out, nil
}
