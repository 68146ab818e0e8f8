package archtest

import (
	"fmt"
	"go/build/constraint"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/sutragrid/sutra"

// testutil is the module-relative path of the shared test helpers.
const testutil = "internal/testutil"

// goFile is one parsed Go file: the package directory (module-relative,
// slash-separated), whether it is a test file, and its imports.
type goFile struct {
	dir, name string
	test      bool
	imports   []string
}

// moduleRoot is the directory holding go.mod above the working directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// parseModule reads the imports of every Go file of the module, whatever
// its build tags (a dependency behind a tag is still a dependency), except
// files excluded from every build (//go:build ignore) and testdata.
func parseModule(t *testing.T) []goFile {
	t.Helper()
	root := moduleRoot(t)
	var files []goFile
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil && p != root {
				return filepath.SkipDir // another module
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return fmt.Errorf("parse %s: %w", p, err)
		}
		for _, cg := range f.Comments {
			for _, c := range cg.List {
				if expr, err := constraint.Parse(c.Text); err == nil && expr.String() == "ignore" {
					return nil // a generator or example run with go run, in no build
				}
			}
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		gf := goFile{dir: filepath.ToSlash(rel), name: name, test: strings.HasSuffix(name, "_test.go")}
		for _, imp := range f.Imports {
			s, _ := strconv.Unquote(imp.Path.Value)
			gf.imports = append(gf.imports, s)
		}
		files = append(files, gf)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 50 {
		t.Fatalf("found only %d Go files under %s: the walk is wrong", len(files), root)
	}
	return files
}

// local is imp's module-relative path ("master/fleet"), or "", false for
// an import outside the module.
func local(imp string) (string, bool) {
	if imp == module {
		return ".", true
	}
	rest, ok := strings.CutPrefix(imp, module+"/")
	return rest, ok
}

// under reports whether dir is top or inside it.
func under(dir, top string) bool { return dir == top || strings.HasPrefix(dir, top+"/") }

func stdlib(imp string) bool { return !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") }

// rule is one constraint on the imports of one file; it returns why imp is
// not allowed in f, or "".
type rule struct {
	name  string
	check func(f goFile, imp string) string
}

// backends are the children that implement their parent's interface.
var backends = map[string]string{"master/store/etcdstore": "master/store"}

var rules = []rule{
	{"no package imports its parent", func(f goFile, imp string) string {
		l, ok := local(imp)
		if !ok || l == "." || l == f.dir {
			return ""
		}
		// A test-support child (like net/http/httptest) exists to exercise
		// its parent: master/store/storetest runs the store contract.
		if f.dir == l+"/"+path.Base(l)+"test" {
			return ""
		}
		// A backend implementing its parent's interface, like image/png
		// for image: master/store/etcdstore is a store.Store.
		if backends[f.dir] == l {
			return ""
		}
		if strings.HasPrefix(f.dir, l+"/") {
			return "a child imports its parent: the parent composes its children and hands each what it needs (constructor arguments, small interfaces)"
		}
		return ""
	}},
	{"agent and master never import each other", func(f goFile, imp string) string {
		l, ok := local(imp)
		if !ok {
			return ""
		}
		if (under(f.dir, "agent") && under(l, "master")) || (under(f.dir, "master") && under(l, "agent")) {
			return "agent and master share code only through internal/"
		}
		return ""
	}},
	{"supervisor depends on the standard library only", func(f goFile, imp string) string {
		if !under(f.dir, "supervisor") {
			return ""
		}
		if l, ok := local(imp); ok && under(l, "supervisor") {
			return "" // its own packages (and its external tests)
		}
		if l, ok := local(imp); ok && l == testutil && f.test {
			return "" // the shared test helpers, themselves standard library only
		}
		if !stdlib(imp) {
			return "supervisor must stay readable and testable alone"
		}
		return ""
	}},
	{"internal imports neither side", func(f goFile, imp string) string {
		if !under(f.dir, "internal") {
			return ""
		}
		l, ok := local(imp)
		if !ok {
			return ""
		}
		for _, up := range []string{"agent", "master", "supervisor", "cmd", "bench", "test"} {
			if under(l, up) {
				return "internal/ is what both sides share; it cannot depend on " + up + "/"
			}
		}
		return ""
	}},
	{"only test files import internal/testutil", func(f goFile, imp string) string {
		if l, ok := local(imp); ok && l == testutil && !f.test {
			return "internal/testutil is test-only: import it from _test.go files"
		}
		return ""
	}},
	{"internal/testutil depends on the standard library only", func(f goFile, imp string) string {
		if f.dir == testutil && !stdlib(imp) {
			return "supervisor's tests use it, and supervisor stays on the standard library"
		}
		return ""
	}},
	{"one adapter package per side imports the protobuf code", func(f goFile, imp string) string {
		l, ok := local(imp)
		if !ok || !under(l, "proto") || f.test {
			return ""
		}
		switch {
		case under(f.dir, "master") && f.dir != "master/grpcapi":
			return "only master/grpcapi converts between protobuf and the master's types"
		case under(f.dir, "agent") && f.dir != "agent/controlplane":
			return "only agent/controlplane converts between protobuf and the agent's types"
		}
		return ""
	}},
}

// Issue 11 item 2: the import graph runs cmd/ -> agent|master ->
// supervisor|internal with no import back up and no child importing its
// parent. Test files count too, except for the protobuf rule (tests may
// drive the gRPC API directly). Issue 11 item 7: internal/testutil is
// imported from test files only, and stays on the standard library.
func TestImportGraph(t *testing.T) {
	files := parseModule(t)
	for _, r := range rules {
		t.Run(strings.ReplaceAll(r.name, " ", "_"), func(t *testing.T) {
			var bad []string
			for _, f := range files {
				for _, imp := range f.imports {
					if why := r.check(f, imp); why != "" {
						bad = append(bad, fmt.Sprintf("%s imports %s: %s", path.Join(f.dir, f.name), imp, why))
					}
				}
			}
			slices.Sort(bad)
			for _, b := range slices.Compact(bad) {
				t.Error(b)
			}
		})
	}
}

// The rules themselves, on the cases they exist for (the first one is the
// import this issue removed: master/controlplane used package master as a
// service locator).
func TestRulesCatch(t *testing.T) {
	for _, tt := range []struct {
		dir, file, imp string
		want           bool
	}{
		{"master/controlplane", "controlplane.go", module + "/master", true},
		{"master/fleetapi", "fuzz_test.go", module + "/master", true},
		{"agent/upgrade", "upgrade.go", module + "/agent", true},
		{"agent/fetch", "fetch.go", module + "/master/binapi", true},
		{"master/binapi", "binapi.go", module + "/agent/fetch", true},
		{"supervisor", "supervisor.go", module + "/internal/platform", true},
		{"supervisor", "supervisor.go", "golang.org/x/sys/unix", true},
		{"internal/httpapi", "client.go", module + "/master/fleet", true},
		{"master/fleet", "fleet.go", module + "/proto/grid/v1", true},
		{"agent", "agent.go", module + "/proto/grid/v1", true},
		{"master", "master.go", module + "/internal/testutil", true},
		{"internal/testutil", "net.go", module + "/internal/platform", true},
		{"internal/testutil", "net.go", "golang.org/x/sys/unix", true},
		{"supervisor", "supervisor.go", module + "/internal/testutil", true},

		{"master/store/storetest", "storetest.go", module + "/master/store", false},
		{"master/store/bolttest", "bolt.go", module + "/master/store", true},
		{"master/store/etcdstore", "store.go", module + "/master/store", false},
		{"master/store/etcdstore", "store.go", module + "/master", true},
		{"master", "master.go", module + "/master/controlplane", false},
		{"master/controlplane", "controlplane.go", module + "/master/fleet", false},
		{"agent", "agent.go", module + "/supervisor", false},
		{"agent/controlplane", "convert.go", module + "/supervisor", false},
		{"supervisor", "supervisor.go", "os/exec", false},
		{"master/grpcapi", "grpcapi.go", module + "/proto/grid/v1", false},
		{"master", "grpcserver_test.go", module + "/proto/grid/v1", false},
		{"cmd/sutra-master", "main.go", module + "/master", false},
		{"master", "master_test.go", module + "/internal/testutil", false},
		{"supervisor", "supervisor_test.go", module + "/internal/testutil", false},
		{"internal/testutil", "net.go", "net", false},
	} {
		f := goFile{dir: tt.dir, name: tt.file, test: strings.HasSuffix(tt.file, "_test.go")}
		var broke []string
		for _, r := range rules {
			if r.check(f, tt.imp) != "" {
				broke = append(broke, r.name)
			}
		}
		if got := len(broke) > 0; got != tt.want {
			t.Errorf("%s/%s importing %s: broken rules %q, want broken = %v", tt.dir, tt.file, tt.imp, broke, tt.want)
		}
	}
}
