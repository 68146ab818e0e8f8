// Command brokenagent is a sutra-agent release that passes the self-update's
// "--version" check (it prints its stamped version) but crashes at once when
// it is run for real, like a release built for the wrong libc or with a bad
// init. Build it with
//
//	-ldflags "-X github.com/sutragrid/sutra/internal/version.Version=1.2.0"
package main

import (
	"fmt"
	"os"

	"github.com/sutragrid/sutra/internal/version"
)

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Println(version.Version)
		return
	}
	fmt.Fprintf(os.Stderr, "brokenagent %s: crashing at start-up (args %q)\n", version.Version, os.Args[1:])
	os.Exit(1)
}
