//go:build windows

package diagnose

import "os"

// openNoBlock opens path for reading (Windows has no FIFOs in the file
// system; named pipes live in their own namespace).
func openNoBlock(path string) (*os.File, error) { return os.Open(path) }
