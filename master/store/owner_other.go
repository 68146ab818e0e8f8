//go:build !unix

package store

// chownLike is a no-op where files have no Unix owner.
func chownLike(path, ref string) {}
