//go:build !unix

package catalog

import "os"

// openNoBlock opens name for reading; outside unix there are no FIFOs to
// block on in a directory of files.
func openNoBlock(root *os.Root, name string) (*os.File, error) { return root.Open(name) }
