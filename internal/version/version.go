// Package version holds the build version of every Sutra Grid binary.
//
// The value is stamped at link time:
//
//	go build -ldflags "-X github.com/sutragrid/sutra/internal/version.Version=1.2.3"
//
// Unstamped builds report "0.0.0-dev".
package version

// Version is the semantic version of this build, without a leading "v".
// It is a variable only so that the linker can set it; nothing assigns it at run time.
var Version = "0.0.0-dev"
