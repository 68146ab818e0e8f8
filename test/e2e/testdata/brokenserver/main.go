// Command brokenserver is a test program for the end-to-end tests: a
// storage-server stand-in that is broken on purpose. It records the time of
// each start in starts.log in its data dir (--data-dir or STORAGE_PATH, so the
// tests can measure the restart backoff from real process starts), prints one
// line to stderr and exits 1 at once, never serving /healthz.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

func main() {
	for _, a := range os.Args[1:] {
		if a == "--version" {
			fmt.Println("1.2.0-broken")
			return
		}
	}
	dir := os.Getenv("STORAGE_PATH")
	for i, a := range os.Args[1:] {
		if a == "--data-dir" && i+2 < len(os.Args) {
			dir = os.Args[i+2]
		}
	}
	if dir != "" {
		if f, err := os.OpenFile(filepath.Join(dir, "starts.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintln(f, time.Now().UnixNano())
			_ = f.Close()
		}
	}
	fmt.Fprintln(os.Stderr, "brokenserver: broken on purpose, exiting at once")
	os.Exit(1)
}
