//go:build !unix

package binapi

import "errors"

func mkfifo(string) error { return errors.New("FIFOs are unix only") }
