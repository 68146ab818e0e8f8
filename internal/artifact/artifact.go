// Package artifact is the file-name grammar of the binaries the grid
// distributes: {artifact}-{version}-{platform}-{arch}[.exe], for example
// storage-server-1.0.0-linux-x86_64 or sutra-agent-2.1.0-rc.1-windows-x86_64.exe.
//
// The master registers a file only when ParseFilename accepts its name, and
// the agent builds the name it asks for with Filename, so both sides share one
// definition. The version is a strict semantic version without a leading "v"
// (see internal/semver); platform and arch use the vocabulary of
// internal/platform and are parsed from the right, so pre-release versions
// that contain dashes (2.1.0-rc-1) are unambiguous. The ".exe" suffix is
// accepted for windows binaries only. Every rejection says why, in words an
// operator can act on.
package artifact

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/sutragrid/sutra/internal/platform"
	"github.com/sutragrid/sutra/internal/semver"
)

// The artifacts the grid distributes.
const (
	// StorageServer is the storage node binary; the design document's
	// /api/binaries routes mean this artifact.
	StorageServer = "storage-server"
	// Agent is the node agent, which updates itself from the master.
	Agent = "sutra-agent"
)

var artifacts = []string{StorageServer, Agent}

// Artifacts returns the known artifact names.
func Artifacts() []string { return slices.Clone(artifacts) }

// Valid reports whether a is a known artifact name.
func Valid(a string) bool { return slices.Contains(artifacts, a) }

// ExeExt is the only file extension the grammar accepts, and only for windows.
const ExeExt = ".exe"

// Name is a parsed binary file name.
type Name struct {
	Artifact string // storage-server | sutra-agent
	Version  string // strict semantic version, e.g. 1.0.0 or 2.1.0-rc.1
	Platform string // linux | darwin | windows
	Arch     string // x86_64 | aarch64 | arm | x86
	Ext      string // "" or ".exe" (windows only)
}

// String returns the file name n was parsed from (Filename plus Ext).
func (n Name) String() string {
	return Filename(n.Artifact, n.Version, n.Platform, n.Arch) + n.Ext
}

// Filename returns the canonical file name {artifact}-{version}-{platform}-{arch},
// without the optional ".exe" (the design document's form).
func Filename(artifact, version, platformName, arch string) string {
	return artifact + "-" + version + "-" + platformName + "-" + arch
}

// ErrInvalidName is wrapped by every ParseFilename error.
var ErrInvalidName = errors.New("not a binary name")

// Pattern is the grammar, for messages.
const Pattern = "{artifact}-{version}-{platform}-{arch}[.exe]"

// ParseFilename parses a file name (a base name, not a path) of the form
// {artifact}-{version}-{platform}-{arch}[.exe].
func ParseFilename(name string) (Name, error) {
	fail := func(format string, args ...any) (Name, error) {
		return Name{}, fmt.Errorf("%w: %q: %s (want %s, e.g. %s)", ErrInvalidName, name,
			fmt.Sprintf(format, args...), Pattern, Filename(StorageServer, "1.0.0", "linux", "x86_64"))
	}
	if name == "" {
		return fail("empty name")
	}
	if strings.ContainsAny(name, "/\\\x00") {
		return fail("contains a path separator or NUL")
	}
	var n Name
	rest := ""
	for _, a := range artifacts {
		if strings.HasPrefix(name, a+"-") {
			n.Artifact, rest = a, name[len(a)+1:]
			break
		}
	}
	if n.Artifact == "" {
		for _, a := range artifacts {
			under := strings.ReplaceAll(a, "-", "_")
			if strings.HasPrefix(name, under) {
				return fail("underscore instead of dash: the name must start with %q, not %q", a+"-", under)
			}
		}
		lower := strings.ToLower(name)
		for _, a := range artifacts {
			if strings.HasPrefix(lower, a+"-") {
				return fail("artifact names are lower case: start with %q", a+"-")
			}
		}
		return fail("unknown artifact: the name must start with one of %s", quoteList(artifacts, "-"))
	}
	if strings.HasSuffix(rest, ExeExt) {
		n.Ext, rest = ExeExt, strings.TrimSuffix(rest, ExeExt)
	}
	// From the right: arch, then platform; whatever is left is the version.
	i := strings.LastIndexByte(rest, '-')
	if i < 0 {
		if platform.ValidPlatform(rest) || platform.ValidArch(rest) {
			return fail("missing version and platform or arch")
		}
		return fail("missing platform and arch after the version")
	}
	n.Arch, rest = rest[i+1:], rest[:i]
	if !platform.ValidArch(n.Arch) {
		if platform.ValidPlatform(n.Arch) {
			return fail("missing arch after platform %q (accepted: %s)", n.Arch, strings.Join(platform.Arches(), ", "))
		}
		return fail("unknown arch %q%s (accepted: %s)", n.Arch, archHint(n.Arch), strings.Join(platform.Arches(), ", "))
	}
	i = strings.LastIndexByte(rest, '-')
	if i < 0 {
		if platform.ValidPlatform(rest) {
			return fail("missing version before %q", rest+"-"+n.Arch)
		}
		if _, err := semver.Parse(rest); err == nil {
			return fail("missing platform between version %q and arch %q", rest, n.Arch)
		}
		return fail("missing version or platform: %q is neither", rest)
	}
	n.Platform, n.Version = rest[i+1:], rest[:i]
	if !platform.ValidPlatform(n.Platform) {
		if _, err := semver.Parse(rest); err == nil && !isLetters(n.Platform) {
			return fail("missing platform between version %q and arch %q", rest, n.Arch)
		}
		return fail("unknown platform %q%s (accepted: %s)", n.Platform, platformHint(n.Platform), strings.Join(platform.Platforms(), ", "))
	}
	if n.Version == "" {
		return fail("missing version")
	}
	if _, err := semver.Parse(n.Version); err != nil {
		if strings.HasPrefix(n.Version, "v") || strings.HasPrefix(n.Version, "V") {
			return fail("version %q has a leading %q: use %q", n.Version, n.Version[:1], n.Version[1:])
		}
		return fail("%v", err)
	}
	if n.Ext != "" && n.Platform != "windows" {
		return fail("the %s suffix is only for windows binaries, not %s", ExeExt, n.Platform)
	}
	return n, nil
}

// Ignored reports whether a directory entry is never a candidate binary and is
// skipped without a log line: hidden files (".name") and files still being
// written by a well-behaved copier (*.partial, *.tmp).
func Ignored(name string) bool {
	return name == "" || strings.HasPrefix(name, ".") ||
		strings.HasSuffix(name, ".partial") || strings.HasSuffix(name, ".tmp")
}

func isLetters(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return s != ""
}

func quoteList(list []string, suffix string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s+suffix)
	}
	return strings.Join(q, ", ")
}

func archHint(a string) string {
	switch strings.ToLower(a) {
	case "amd64", "x64", "x86-64", "x86_64":
		return ` (use "x86_64")`
	case "arm64", "aarch64":
		return ` (use "aarch64")`
	case "386", "i386", "i686", "x86":
		return ` (use "x86")`
	case "armv7", "armv7l", "armhf", "arm":
		return ` (use "arm")`
	}
	return ""
}

func platformHint(p string) string {
	switch strings.ToLower(p) {
	case "macos", "osx", "mac", "apple", "darwin":
		return ` (use "darwin")`
	case "win", "win32", "win64", "windows":
		return ` (use "windows")`
	case "linux", "gnu":
		return ` (use "linux")`
	}
	return ""
}
