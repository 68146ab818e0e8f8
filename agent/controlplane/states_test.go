package controlplane

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
	"github.com/sutragrid/sutra/supervisor"
)

// supervisorStates reads every constant of type State that package
// supervisor declares, from its source: a state added there is seen here
// without anyone updating a list.
func supervisorStates(t *testing.T) map[supervisor.State]string {
	t.Helper()
	dir := filepath.Join("..", "..", "supervisor")
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	states := map[supervisor.State]string{}
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			for _, d := range f.Decls {
				gd, ok := d.(*ast.GenDecl)
				if !ok || gd.Tok != token.CONST {
					continue
				}
				typed := false // a spec without type and value repeats the previous one
				for _, s := range gd.Specs {
					vs := s.(*ast.ValueSpec)
					if vs.Type != nil || len(vs.Values) > 0 {
						id, ok := vs.Type.(*ast.Ident)
						typed = ok && id.Name == "State"
					}
					if !typed {
						continue
					}
					for i, name := range vs.Names {
						if i >= len(vs.Values) {
							t.Fatalf("supervisor.%s: a State without a string value; teach this test to read it", name.Name)
						}
						lit, ok := vs.Values[i].(*ast.BasicLit)
						if !ok || lit.Kind != token.STRING {
							t.Fatalf("supervisor.%s: a State that is not a string literal; teach this test to read it", name.Name)
						}
						v, err := strconv.Unquote(lit.Value)
						if err != nil {
							t.Fatal(err)
						}
						states[supervisor.State(v)] = name.Name
					}
				}
			}
		}
	}
	if len(states) == 0 {
		t.Fatalf("found no supervisor.State constants in %s", dir)
	}
	return states
}

// Every state the supervisor can give a node has its own wire state, and
// the mapping holds nothing else: adding a supervisor state without mapping
// it fails here instead of reaching the master as UNSPECIFIED.
func TestEverySupervisorStateIsMapped(t *testing.T) {
	if _, err := os.Stat(filepath.Join("..", "..", "supervisor")); err != nil {
		t.Fatal(err)
	}
	states := supervisorStates(t)
	seen := map[gridv1.NodeState]supervisor.State{}
	for s, name := range states {
		got := nodeStateToProto(s)
		if got == gridv1.NodeState_NODE_STATE_UNSPECIFIED {
			t.Errorf("nodeStateToProto(supervisor.%s) = %s: add it to nodeStates (and to the proto's NodeState if it is new)", name, got)
			continue
		}
		if other, dup := seen[got]; dup {
			t.Errorf("supervisor states %q and %q both map to %s", other, s, got)
		}
		seen[got] = s
		if want := "NODE_STATE_" + strings.ToUpper(string(s)); got.String() != want {
			t.Errorf("nodeStateToProto(supervisor.%s) = %s, want %s", name, got, want)
		}
	}
	for s := range nodeStates {
		if _, ok := states[s]; !ok {
			t.Errorf("nodeStates maps %q, which is not a supervisor.State", s)
		}
	}
	for v, name := range gridv1.NodeState_name {
		if st := gridv1.NodeState(v); st != gridv1.NodeState_NODE_STATE_UNSPECIFIED {
			if _, ok := seen[st]; !ok {
				t.Errorf("wire state %s has no supervisor state", name)
			}
		}
	}
}
