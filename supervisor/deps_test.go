package supervisor

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sutragrid/sutra/internal/testutil"
)

// TestStandardLibraryOnly: the supervisor depends on the standard library
// only (STYLE.md), on every platform it builds for, so it can be read and
// tested alone. `go list -deps` names every package the supervisor's
// non-test code imports, directly or not.
func TestStandardLibraryOnly(t *testing.T) {
	goTool, err := exec.LookPath(testutil.GoTool())
	if err != nil {
		t.Skip("no go command to list the dependencies with")
	}
	const self = "github.com/sutragrid/sutra/supervisor"
	for _, goos := range []string{"linux", "darwin", "windows", "freebsd"} {
		t.Run(goos, func(t *testing.T) {
			cmd := exec.Command(goTool, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".")
			cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH=amd64", "CGO_ENABLED=0")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps (GOOS=%s): %v\n%s", goos, err, out)
			}
			for _, p := range strings.Fields(string(out)) {
				if p != self {
					t.Errorf("GOOS=%s: supervisor imports %s, want the standard library only", goos, p)
				}
			}
		})
	}
}
