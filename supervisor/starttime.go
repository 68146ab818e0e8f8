package supervisor

import "errors"

// ErrNoProcess reports that a pid names no live process (it exited, is a
// zombie waiting to be reaped, or never existed).
var ErrNoProcess = errors.New("no such process")

// ErrUnsupported reports that this platform cannot identify processes by
// start time, so adoption is not possible.
var ErrUnsupported = errors.New("process start time is not supported on this platform")
