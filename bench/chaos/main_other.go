//go:build !linux

// Command chaos is the grid's chaos soak; it runs on Linux only (it reads
// /proc and sends SIGSTOP/SIGKILL to the processes it started).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "chaos: runs on Linux only")
	os.Exit(2)
}
