package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/sutragrid/sutra/internal/atomicfile"
)

// CacheFile is the name of the checksum cache in Options.DataDir.
const CacheFile = "binary-checksums.json"

const cacheVersion = 1

// record is what the cache remembers about one file: its identity when it was
// hashed, the checksum, and when it was first registered.
type record struct {
	Size       int64  `json:"size"`
	MTimeNS    int64  `json:"mtime_ns"`
	CTimeNS    int64  `json:"ctime_ns,omitempty"` // absent in caches written before it existed: re-hashed once
	Dev        uint64 `json:"dev"`
	Ino        uint64 `json:"ino"`
	SHA256     string `json:"sha256"`
	UploadedAt int64  `json:"uploaded_at"`
}

type cacheDoc struct {
	Version int               `json:"version"`
	Files   map[string]record `json:"files"`
}

func (r record) id() fileID {
	return fileID{size: r.Size, mtimeNS: r.MTimeNS, ctimeNS: r.CTimeNS, dev: r.Dev, ino: r.Ino}
}

func newRecord(b Binary) record {
	return record{Size: b.id.size, MTimeNS: b.id.mtimeNS, CTimeNS: b.id.ctimeNS, Dev: b.id.dev, Ino: b.id.ino,
		SHA256: b.SHA256, UploadedAt: b.UploadedAt.Unix()}
}

// loadCache reads the cache; a missing file is an empty cache, and an
// unreadable one is reported so the caller can log it and re-hash.
func loadCache(path string) (map[string]record, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]record{}, nil
	}
	if err != nil {
		return map[string]record{}, fmt.Errorf("read checksum cache: %w", err)
	}
	var doc cacheDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return map[string]record{}, fmt.Errorf("checksum cache %s is corrupt (it will be rebuilt): %w", path, err)
	}
	if doc.Version != cacheVersion {
		return map[string]record{}, fmt.Errorf("checksum cache %s has version %d, want %d (it will be rebuilt)", path, doc.Version, cacheVersion)
	}
	out := make(map[string]record, len(doc.Files))
	for name, r := range doc.Files {
		if filepath.Base(name) != name || !isHexSHA256(r.SHA256) {
			continue
		}
		out[name] = r
	}
	return out, nil
}

func saveCache(path string, files map[string]record) error {
	data, err := json.MarshalIndent(cacheDoc{Version: cacheVersion, Files: files}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode checksum cache: %w", err)
	}
	if err := atomicfile.Write(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("save checksum cache: %w", err)
	}
	return nil
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func unixTime(sec int64) time.Time { return time.Unix(sec, 0) }
