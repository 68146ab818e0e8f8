package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/sutragrid/sutra/agent/cache"
	"github.com/sutragrid/sutra/internal/httpapi"
)

// partialState is the file beside a partial download (written by the cache,
// cache.PartialStateSuffix) that records what it is a prefix of, so that a
// later attempt can resume it safely.
type partialState struct {
	URL      string `json:"url"`
	Checksum string `json:"checksum"`
	Size     int64  `json:"size_bytes"`
	// Validator is the ETag (or Last-Modified) of the response the prefix
	// came from, sent back in If-Range.
	Validator string `json:"validator"`
}

// resumable marks an interrupted body: continuing with Range can succeed.
type resumable struct{ err error }

func (r resumable) Error() string { return r.err.Error() }
func (r resumable) Unwrap() error { return r.err }

// localErr marks a failure of the local disk (ErrCacheDir).
// The hashing pipeline: chunks of hashChunk bytes, hashPipeDepth in flight.
const (
	hashChunk     = 1 << 20
	hashPipeDepth = 4
)

// localErr describes a failure of the local disk. Lack of space says so
// plainly, naming the directory to free space in.
func localErr(op, path string, err error) error {
	if isNoSpace(err) {
		return fmt.Errorf("%w: no space left on device in %s: free space there (or set agent.cache_dir / SUTRA_CACHE_DIR to a larger disk); %s %s: %w",
			ErrCacheDir, filepath.Dir(path), op, path, err)
	}
	return fmt.Errorf("%w: %s %s (free space, fix permissions, or set agent.cache_dir / SUTRA_CACHE_DIR): %w", ErrCacheDir, op, path, err)
}

// download brings the version's partial download to info.SizeBytes bytes from
// source and returns the SHA-256 of its content, computed while writing. An
// existing partial for the same checksum and URL is hashed once and resumed.
// The partial is deleted on every failure except an interruption that a later
// attempt can resume (network, stall, cancellation); in particular a partial
// that failed to write (no space left) never stays behind filling the disk.
func (f *Fetcher) download(ctx context.Context, info httpapi.BinaryInfo, source string, ss *streamSig) (sum string, err error) {
	partial := f.cache.PartialPath(info.Version)
	st, _ := readState(f.cache, info.Version)
	want := partialState{URL: source, Checksum: info.Checksum, Size: info.SizeBytes}
	resume := st.URL == want.URL && st.Checksum == want.Checksum && st.Size == want.Size && st.Validator != ""
	file, err := f.cache.OpenPartial(info.Version, resume)
	if err != nil {
		return "", localErr("open", partial, err)
	}
	defer func() {
		file.Close()
		var r resumable
		if err != nil && !errors.As(err, &r) && !errors.Is(err, ErrUnavailable) && ctx.Err() == nil {
			f.discard(info.Version) // closed first: Windows cannot remove an open file
		}
	}()
	d := &dl{f: f, file: file, h: sha256.New(), info: info, source: source, partial: partial, ss: ss}
	if err := ss.start(); err != nil {
		return "", err
	}

	fi, err := file.Stat()
	if err != nil {
		return "", localErr("stat", partial, err)
	}
	if fi.Size() > 0 && resume && fi.Size() <= info.SizeBytes {
		// Hash the prefix we already have, once, then continue after it.
		n, err := io.CopyBuffer(io.MultiWriter(d.h, ss), io.NewSectionReader(file, 0, fi.Size()), f.buf)
		if err != nil {
			return "", localErr("read", partial, err)
		}
		d.offset = n
		d.state = st
		f.log.Info("resuming download", "artifact", f.opts.Artifact, "version", info.Version,
			"from_bytes", n, "size", info.SizeBytes)
	} else {
		if fi.Size() > 0 {
			f.log.Info("discarding a partial download that cannot be resumed", "path", partial)
			if err := d.reset(); err != nil {
				return "", err
			}
		}
		d.state = want
	}
	if _, err := file.Seek(d.offset, io.SeekStart); err != nil {
		return "", localErr("seek", partial, err)
	}
	d.prog = newProgress(f.log, f.opts.ProgressBar, f.opts.Artifact, info.Version, info.SizeBytes, d.offset)

	noProgress := 0
	for d.offset < info.SizeBytes {
		before := d.offset
		err := d.get(ctx)
		if err == nil {
			continue
		}
		var r resumable
		if !errors.As(err, &r) || ctx.Err() != nil {
			d.prog.stop()
			return "", err
		}
		if d.offset > before {
			noProgress = 0
		} else {
			noProgress++
		}
		if noProgress > f.opts.MaxResumes {
			d.prog.stop()
			// Kept (resumable) for the next attempt.
			return "", fmt.Errorf("%s: no progress after %d resumes: %w", source, f.opts.MaxResumes, err)
		}
		f.log.Warn("download interrupted; resuming", "artifact", f.opts.Artifact, "version", info.Version,
			"at_bytes", d.offset, "size", info.SizeBytes, "err", err)
		if noProgress > 0 {
			t := time.NewTimer(f.backoff(noProgress - 1))
			select {
			case <-ctx.Done():
				t.Stop()
				d.prog.stop()
				return "", context.Cause(ctx)
			case <-t.C:
			}
		}
	}
	d.prog.done()
	return hex.EncodeToString(d.h.Sum(nil)), nil
}

// dl is one download in progress.
type dl struct {
	f       *Fetcher
	file    *os.File
	h       hash.Hash
	info    httpapi.BinaryInfo
	source  string
	partial string
	offset  int64
	state   partialState
	prog    *progress
	ss      *streamSig // fed the same bytes as h (nil: no signature check)
}

func (d *dl) reset() error {
	if err := d.file.Truncate(0); err != nil {
		return localErr("truncate", d.partial, err)
	}
	if _, err := d.file.Seek(0, io.SeekStart); err != nil {
		return localErr("seek", d.partial, err)
	}
	d.h.Reset()
	if err := d.ss.start(); err != nil {
		return err
	}
	d.offset = 0
	if d.prog != nil {
		d.prog.restart()
	}
	return nil
}

// get runs one GET from d.offset and streams the body into the partial file.
// It returns nil when the body ended at a coherent point (possibly before
// the end: the caller loops), a resumable error for an interrupted body.
func (d *dl) get(ctx context.Context) error {
	f := d.f
	reqCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := retryablehttp.NewRequestWithContext(reqCtx, http.MethodGet, d.source, nil)
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	req.Header.Set("Accept", "application/octet-stream")
	req.Header.Set("User-Agent", userAgent())
	if d.offset > 0 && d.state.Validator == "" {
		// Without a validator a resumed prefix could belong to another file.
		if err := d.reset(); err != nil {
			return err
		}
	}
	if d.offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", d.offset))
		req.Header.Set("If-Range", d.state.Validator)
	}
	resp, err := f.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("GET %s: %w: %w", d.source, ErrUnavailable, err)
	}
	defer resp.Body.Close()

	if (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent) && isHTML(resp.Header.Get("Content-Type")) {
		return fmt.Errorf("GET %s: %w: an HTML page (Content-Type %s) instead of the binary (is a proxy or login page in front of master_binary_url?)",
			d.source, ErrBadResponse, resp.Header.Get("Content-Type"))
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if d.offset > 0 {
			f.log.Info("server sent the whole file instead of the rest; restarting from zero", "url", d.source)
			if err := d.reset(); err != nil {
				return err
			}
		}
		if resp.ContentLength >= 0 && resp.ContentLength != d.info.SizeBytes {
			return fmt.Errorf("GET %s: %w: Content-Length %d, the master's metadata says size_bytes %d",
				d.source, ErrBadResponse, resp.ContentLength, d.info.SizeBytes)
		}
	case http.StatusPartialContent:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != d.offset || total != d.info.SizeBytes {
			f.log.Warn("unusable Content-Range; restarting from zero", "url", d.source,
				"content_range", resp.Header.Get("Content-Range"), "offset", d.offset)
			if err := d.reset(); err != nil {
				return err
			}
			return resumable{fmt.Errorf("GET %s: Content-Range %q does not continue at %d", d.source, resp.Header.Get("Content-Range"), start)}
		}
		if resp.ContentLength >= 0 && resp.ContentLength != d.info.SizeBytes-d.offset {
			return fmt.Errorf("GET %s: %w: Content-Length %d for the remaining %d bytes",
				d.source, ErrBadResponse, resp.ContentLength, d.info.SizeBytes-d.offset)
		}
	case http.StatusRequestedRangeNotSatisfiable:
		if err := d.reset(); err != nil {
			return err
		}
		return resumable{fmt.Errorf("GET %s: %s; restarting from zero", d.source, resp.Status)}
	default:
		return statusError(http.MethodGet, d.source, resp)
	}
	if v := validator(resp.Header); v != d.state.Validator || d.offset == 0 {
		d.state.Validator = v
		if err := d.saveState(); err != nil {
			return err
		}
	}

	stall := f.opts.StallTimeout
	timer := time.AfterFunc(stall, func() { cancel(ErrStalled) })
	defer timer.Stop()
	// Hash on a second goroutine while the next chunk arrives: one pass over
	// the bytes, and the network, the disk and SHA-256 overlap. The hash is
	// complete when this function returns (the deferred wait).
	free := make(chan []byte, hashPipeDepth)
	for range hashPipeDepth {
		free <- make([]byte, hashChunk)
	}
	work := make(chan []byte, hashPipeDepth)
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for b := range work {
			d.h.Write(b)
			_, _ = d.ss.Write(b)
			free <- b[:cap(b)]
		}
	}()
	defer func() { close(work); <-hashed }()
	for {
		buf := <-free
		// Ask for one byte more than remains, to notice an over-long body.
		want := min(int64(len(buf)), d.info.SizeBytes-d.offset+1)
		n, rerr := io.ReadAtLeast(resp.Body, buf[:want], int(min(want, hashChunk/4)))
		if rerr == io.ErrUnexpectedEOF {
			rerr = io.EOF
		}
		if n > 0 {
			timer.Reset(stall)
			if d.offset+int64(n) > d.info.SizeBytes {
				free <- buf
				return fmt.Errorf("GET %s: %w: body is longer than size_bytes %d", d.source, ErrBadResponse, d.info.SizeBytes)
			}
			if _, err := d.file.Write(buf[:n]); err != nil {
				free <- buf
				return localErr("write", d.partial, err)
			}
			work <- buf[:n]
			d.offset += int64(n)
			d.prog.update(d.offset)
			if d.f.limiter != nil {
				// Waiting on the rate limit is not a stall.
				timer.Stop()
				if err := d.f.throttle(ctx, n); err != nil {
					return context.Cause(ctx)
				}
				timer.Reset(stall)
			}
		} else {
			free <- buf
		}
		if rerr == io.EOF {
			if d.offset < d.info.SizeBytes {
				return resumable{fmt.Errorf("GET %s: body ended at %d of %d bytes", d.source, d.offset, d.info.SizeBytes)}
			}
			return nil
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			if errors.Is(context.Cause(reqCtx), ErrStalled) {
				return resumable{fmt.Errorf("GET %s: no data for %s at %d of %d bytes: %w", d.source, stall, d.offset, d.info.SizeBytes, ErrStalled)}
			}
			return resumable{fmt.Errorf("GET %s: read body at %d of %d bytes: %w", d.source, d.offset, d.info.SizeBytes, rerr)}
		}
	}
}

func (d *dl) saveState() error {
	data, err := json.Marshal(d.state)
	if err != nil {
		return err
	}
	if err := d.f.cache.WritePartialState(d.info.Version, data); err != nil {
		return localErr("write", d.partial+cache.PartialStateSuffix, err)
	}
	return nil
}

func readState(c *cache.Cache, version string) (partialState, error) {
	var st partialState
	data, err := c.ReadPartialState(version)
	if err != nil {
		return st, err
	}
	err = json.Unmarshal(data, &st)
	return st, err
}

// validator returns what to send in If-Range: a strong ETag, else
// Last-Modified, else "" (then a resume restarts from zero).
func validator(h http.Header) string {
	if et := h.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
		return et
	}
	return h.Get("Last-Modified")
}

// parseContentRange parses "bytes start-end/total".
func parseContentRange(s string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	total, err3 := strconv.ParseInt(tot, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || start < 0 || end < start || end >= total {
		return 0, 0, false
	}
	if end != total-1 {
		return 0, 0, false // we always ask for the rest of the file
	}
	return start, total, true
}
