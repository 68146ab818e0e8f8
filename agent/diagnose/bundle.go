package diagnose

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sutragrid/sutra/internal/atomicfile"
)

// Bundle limits.
const (
	// MaxLogTail is how much of the end of each log file a bundle holds.
	MaxLogTail = 256 << 10
	// MaxBundle caps the bundle's content (before compression).
	MaxBundle = 16 << 20
)

// Bundle file names.
const (
	BundleText = "report.txt"
	BundleJSON = "report.json"
	BundleLogs = "logs/"
)

// WriteBundle writes the report (text and JSON) and the last MaxLogTail
// bytes of every log file in {agent_data_dir}/logs, with every known
// secret redacted, as a .tar.gz at path: written to a temporary file,
// fsynced and renamed (mode 0600: it names hosts and paths). Files that are
// not regular (a FIFO) are skipped and named in report.txt's note; the
// whole content stays under MaxBundle.
func WriteBundle(path string, r *Report, agentDataDir string) error {
	var txt, js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	var notes []string
	logDir := filepath.Join(agentDataDir, "logs")
	type logFile struct {
		name string
		data []byte
	}
	var logs []logFile
	budget := int64(MaxBundle) - 2*int64(js.Len()) - 256<<10 // report.txt is smaller than report.json
	if ents, err := os.ReadDir(logDir); err == nil {
		sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
		for _, e := range ents {
			if e.IsDir() {
				continue
			}
			p := filepath.Join(logDir, e.Name())
			if !e.Type().IsRegular() {
				notes = append(notes, fmt.Sprintf("skipped %s: not a regular file (%s)", p, e.Type()))
				continue
			}
			data, _, err := tailFile(p, MaxLogTail)
			if err != nil {
				notes = append(notes, fmt.Sprintf("skipped %s: %v", p, err))
				continue
			}
			if int64(len(data)) > budget {
				notes = append(notes, fmt.Sprintf("skipped %s: the bundle is full (%d bytes at most)", p, MaxBundle))
				continue
			}
			budget -= int64(len(data))
			logs = append(logs, logFile{name: e.Name(), data: []byte(RedactText(string(data), r.secrets))})
		}
	} else if !os.IsNotExist(err) {
		notes = append(notes, fmt.Sprintf("log directory %s: %v", logDir, err))
	}
	if err := r.WriteText(&txt); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	if len(notes) > 0 {
		fmt.Fprintf(&txt, "\nbundle notes:\n- %s\n", strings.Join(notes, "\n- "))
	}

	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	now := time.Now()
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: now, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add(BundleText, []byte(RedactText(txt.String(), r.secrets))); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	if err := add(BundleJSON, []byte(RedactText(js.String(), r.secrets))); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	for _, l := range logs {
		if err := add(BundleLogs+l.name, l.data); err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	if err := atomicfile.Write(path, out.Bytes(), 0o600); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	return nil
}
