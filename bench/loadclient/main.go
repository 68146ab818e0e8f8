// Command loadclient downloads one URL with N concurrent clients for a fixed
// duration and prints one line of JSON: bytes received, seconds, MB/s, and
// how many downloads completed, were refused (503) or failed. bench/serve.sh
// uses it to load the master and nginx identically.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

type result struct {
	Clients   int     `json:"clients"`
	Bytes     int64   `json:"bytes"`
	Seconds   float64 `json:"seconds"`
	MBps      float64 `json:"mb_per_s"`
	Completed int64   `json:"completed"`
	Refused   int64   `json:"refused_503"`
	Failed    int64   `json:"failed"`
}

func main() {
	url := flag.String("url", "", "URL to download")
	clients := flag.Int("c", 1, "concurrent downloads")
	dur := flag.Duration("d", 5*time.Second, "how long to keep downloading")
	flag.Parse()
	if *url == "" || *clients < 1 {
		fmt.Fprintln(os.Stderr, "usage: loadclient -url URL [-c N] [-d 5s]")
		os.Exit(2)
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		MaxIdleConns:        *clients,
		MaxIdleConnsPerHost: *clients,
		DisableCompression:  true,
	}
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	var total, completed, refused, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	buf := sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}
	for range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", *url, nil)
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
						time.Sleep(10 * time.Millisecond)
					}
					continue
				}
				if resp.StatusCode == http.StatusServiceUnavailable {
					refused.Add(1)
					resp.Body.Close()
					time.Sleep(50 * time.Millisecond)
					continue
				}
				bp := buf.Get().(*[]byte)
				n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, *bp) // hide ReadFrom: use the big buffer
				buf.Put(bp)
				resp.Body.Close()
				total.Add(n)
				if err == nil && resp.StatusCode == 200 {
					completed.Add(1)
				} else if ctx.Err() == nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	r := result{Clients: *clients, Bytes: total.Load(), Seconds: secs, MBps: float64(total.Load()) / secs / 1e6,
		Completed: completed.Load(), Refused: refused.Load(), Failed: failed.Load()}
	json.NewEncoder(os.Stdout).Encode(r)
}
