// Package platform maps Go's GOOS/GOARCH names to the vocabulary of the
// binary distribution design: platform linux|darwin|windows and arch
// x86_64|aarch64|arm|x86. Master and agent both use it, so the names a binary
// is published under and the names an agent asks for can never drift apart.
package platform

import (
	"fmt"
	"runtime"
	"slices"
)

// Platforms are the operating systems the grid distributes binaries for.
var platforms = []string{"linux", "darwin", "windows"}

// Arches are the CPU architectures the grid distributes binaries for.
var arches = []string{"x86_64", "aarch64", "arm", "x86"}

// Platforms returns the accepted platform names.
func Platforms() []string { return slices.Clone(platforms) }

// Arches returns the accepted architecture names.
func Arches() []string { return slices.Clone(arches) }

// ValidPlatform reports whether p is one of Platforms().
func ValidPlatform(p string) bool { return slices.Contains(platforms, p) }

// ValidArch reports whether a is one of Arches().
func ValidArch(a string) bool { return slices.Contains(arches, a) }

// FromGo maps a GOOS/GOARCH pair to (platform, arch) in the design's vocabulary.
func FromGo(goos, goarch string) (platformName, arch string, err error) {
	switch goos {
	case "linux", "darwin", "windows":
		platformName = goos
	default:
		return "", "", fmt.Errorf("unsupported operating system %q: the grid distributes binaries for linux, darwin and windows", goos)
	}
	switch goarch {
	case "amd64":
		arch = "x86_64"
	case "arm64":
		arch = "aarch64"
	case "386":
		arch = "x86"
	case "arm":
		arch = "arm"
	default:
		return "", "", fmt.Errorf("unsupported architecture %q: the grid distributes binaries for amd64 (x86_64), arm64 (aarch64), 386 (x86) and arm", goarch)
	}
	return platformName, arch, nil
}

// ToGo maps a (platform, arch) pair back to GOOS/GOARCH.
func ToGo(platformName, arch string) (goos, goarch string, err error) {
	if !ValidPlatform(platformName) {
		return "", "", fmt.Errorf("unknown platform %q (accepted: linux, darwin, windows)", platformName)
	}
	switch arch {
	case "x86_64":
		goarch = "amd64"
	case "aarch64":
		goarch = "arm64"
	case "x86":
		goarch = "386"
	case "arm":
		goarch = "arm"
	default:
		return "", "", fmt.Errorf("unknown arch %q (accepted: x86_64, aarch64, arm, x86)", arch)
	}
	return platformName, goarch, nil
}

// Current returns the (platform, arch) of the running binary.
func Current() (platformName, arch string, err error) {
	return FromGo(runtime.GOOS, runtime.GOARCH)
}

// ExeSuffix returns ".exe" for windows and "" otherwise.
func ExeSuffix(platformName string) string {
	if platformName == "windows" {
		return ".exe"
	}
	return ""
}
