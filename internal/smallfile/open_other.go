//go:build !unix

package smallfile

import "os"

// openNoBlock opens path for reading (named pipes there are not paths a
// plain open blocks on; Read checks the handle's type).
func openNoBlock(path string) (*os.File, error) { return os.Open(path) }
