package pebble

import (
	"go/build"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestStorageImportsNoCompute enforces the layering: pebble stores,
// blockhash computes, rpc moves data. pebble (and what it imports from this
// module) reaches neither blockhash nor rpc, and blockhash reaches neither
// pebble nor rpc. Test files are not counted.
func TestStorageImportsNoCompute(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	const mod = "github.com/dmsync/dmsync/"
	rules := map[string][]string{
		"pebble":    {"blockhash", "rpc"},
		"blockhash": {"pebble", "rpc"},
	}
	for pkg, banned := range rules {
		seen := map[string]bool{}
		var walk func(p string, path []string)
		walk = func(p string, path []string) {
			if seen[p] {
				return
			}
			seen[p] = true
			bp, err := build.Import(mod+p, root, 0)
			if err != nil {
				t.Fatalf("import %s: %v", p, err)
			}
			for _, imp := range bp.Imports {
				rel, ok := strings.CutPrefix(imp, mod)
				if !ok {
					continue
				}
				for _, b := range banned {
					if rel == b || strings.HasPrefix(rel, b+"/") {
						t.Errorf("%s imports %s (via %s): the storage and compute layers stay apart", pkg, rel, strings.Join(append(path, p), " -> "))
					}
				}
				walk(rel, append(path, p))
			}
		}
		walk(pkg, nil)
	}
}
