// Command fileserver is a minimal stand-in for the master's binary
// distribution API, used by bench/fetch.sh when cmd/sutra-master is not built
// yet. It serves the design document's routes for the files named
// storage-server-{version}-{platform}-{arch} in -dir: metadata, latest,
// verify, and downloads through http.ServeContent (Range, If-Range, ETag).
// It is a benchmark fixture, not the master: it loads the directory once.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/sutragrid/sutra/internal/httpapi"
	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/internal/semver"
)

func main() {
	dir := flag.String("dir", "binaries", "directory of storage-server-{version}-{platform}-{arch} files")
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	if err := run(*dir, *addr); err != nil {
		log.Fatal(err)
	}
}

func run(dir, addr string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var bins []httpapi.BinaryInfo
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "storage-server-")
		parts := strings.Split(rest, "-")
		if !ok || len(parts) != 3 {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			return err
		}
		st, _ := e.Info()
		bins = append(bins, httpapi.BinaryInfo{Version: parts[0], Platform: parts[1], Arch: parts[2],
			Checksum: hex.EncodeToString(h.Sum(nil)), SizeBytes: n, Path: e.Name(), UploadedAt: st.ModTime().Unix(), Artifact: "storage-server"})
	}
	find := func(r *http.Request) *httpapi.BinaryInfo {
		var best *httpapi.BinaryInfo
		for i, b := range bins {
			if b.Platform != r.PathValue("platform") || b.Arch != r.PathValue("arch") {
				continue
			}
			v := r.PathValue("version")
			if v == b.Version || v == "latest" && (best == nil || semver.Compare(b.Version, best.Version) > 0) {
				best = &bins[i]
			}
		}
		return best
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/binaries", func(w http.ResponseWriter, r *http.Request) { httpjson.Write(w, 200, bins) })
	mux.HandleFunc("GET /api/binaries/{version}/{platform}/{arch}", func(w http.ResponseWriter, r *http.Request) {
		if b := find(r); b != nil {
			httpjson.Write(w, 200, b)
			return
		}
		httpjson.WriteError(w, 404, "binary not found")
	})
	mux.HandleFunc("POST /api/binaries/{version}/{platform}/{arch}/verify", func(w http.ResponseWriter, r *http.Request) {
		b := find(r)
		if b == nil {
			httpjson.WriteError(w, 404, "binary not found")
			return
		}
		var req httpapi.VerifyRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
			httpjson.WriteError(w, 400, "invalid JSON body")
			return
		}
		valid := strings.EqualFold(req.Checksum, b.Checksum)
		httpjson.Write(w, 200, httpapi.VerifyResponse{Valid: &valid, ExpectedChecksum: b.Checksum})
	})
	mux.HandleFunc("GET /binaries/{name}", func(w http.ResponseWriter, r *http.Request) {
		for _, b := range bins {
			if b.Path == r.PathValue("name") {
				f, err := os.Open(filepath.Join(dir, b.Path))
				if err != nil {
					httpjson.WriteError(w, 404, "binary not found")
					return
				}
				defer f.Close()
				st, _ := f.Stat()
				w.Header().Set("ETag", `"`+b.Checksum+`"`)
				w.Header().Set("Content-Type", "application/octet-stream")
				http.ServeContent(w, r, b.Path, st.ModTime(), f)
				return
			}
		}
		httpjson.WriteError(w, 404, "binary not found")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("http://%s\n", ln.Addr())
	return http.Serve(ln, mux)
}
