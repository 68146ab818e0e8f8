package config

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
)

// UserDataDir returns the per-user directory for application data, the
// counterpart of os.UserCacheDir for data that must not be thrown away:
// $XDG_DATA_HOME or ~/.local/share on Linux and other Unix systems,
// ~/Library/Application Support on macOS, %LocalAppData% on Windows.
func UserDataDir() (string, error) {
	switch runtime.GOOS {
	case "windows":
		if d := os.Getenv("LocalAppData"); d != "" {
			return d, nil
		}
		return "", errors.New("%LocalAppData% is not set")
	case "darwin", "ios":
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		return filepath.Join(home, "Library", "Application Support"), nil
	default:
		if d := os.Getenv("XDG_DATA_HOME"); d != "" && filepath.IsAbs(d) {
			return d, nil
		}
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		return filepath.Join(home, ".local", "share"), nil
	}
}

// systemDir is the fallback when the user directories are unknown (a service
// started without HOME): /var/cache and /var/lib on Unix, %ProgramData% on Windows.
func systemDir(kind string) string {
	if runtime.GOOS == "windows" {
		if d := os.Getenv("ProgramData"); d != "" {
			return d
		}
		return `C:\ProgramData`
	}
	if kind == "cache" {
		return "/var/cache"
	}
	return "/var/lib"
}
