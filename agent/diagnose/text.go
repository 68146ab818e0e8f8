package diagnose

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report section by section for a terminal, ending
// with the problems found.
func (r *Report) WriteText(w io.Writer) error {
	b := bufio.NewWriter(w)
	p := func(format string, a ...any) { fmt.Fprintf(b, format+"\n", a...) }
	sec := func(title string) { p("\n== %s ==", title) }
	ok := func(v bool) string {
		if v {
			return "OK"
		}
		return "FAIL"
	}

	p("sutra-agent diagnose  %s", r.Generated.Format(time.RFC3339))

	sec("configuration in effect (secrets redacted)")
	if r.Config.File != "" {
		p("file: %s", r.Config.File)
	} else {
		p("file: none (built-in defaults and SUTRA_* environment variables)")
	}
	for _, s := range r.Config.Settings {
		p("  %-42s %s", s.Key, s.Value)
	}

	sec("master reachability")
	for _, c := range r.Master {
		p("%-4s %-30s %s", c.Name, c.Addr, ok(c.OK))
		for _, s := range c.Steps {
			p("       %s", s)
		}
		if c.Error != "" {
			p("       error: %s", c.Error)
		}
	}

	sec("certificate")
	c := r.Cert
	p("dir: %s", c.Dir)
	if c.Present {
		p("  subject:     %s", c.Subject)
		p("  SANs:        %s", strings.Join(append(append([]string{}, c.URIs...), c.DNSNames...), ", "))
		p("  serial:      %s", c.Serial)
		p("  valid:       %s .. %s (%s)", c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), c.TimeLeft)
		p("  renewal due: %s", c.RenewalDue.UTC().Format(time.RFC3339))
		p("  key mode:    %s", c.KeyMode)
		p("  issued by the pinned CA: %v", c.IssuedByCA)
	}
	if c.CAFP != "" {
		p("  pinned CA:   %s  sha256 %s (until %s)", c.CASubject, c.CAFP, c.CANotAfter.UTC().Format(time.RFC3339))
	}
	for _, m := range r.Master {
		if m.ServerCA != "" {
			p("  master (%s) verified by CA sha256 %s", m.Name, m.ServerCA)
		}
	}
	p("  join token:  %s", c.JoinToken)
	if c.TokenPin != "" {
		p("  token pins CA sha256 %s", c.TokenPin)
	}
	if c.Error != "" {
		p("  error: %s", c.Error)
	}

	sec("binary cache")
	if len(r.Cache) == 0 {
		p("(empty)")
	}
	for _, e := range r.Cache {
		p("%s %s  %s  sha256 %s  checksum %s  signature %s", e.Artifact, e.Version, humanBytes(uint64(max64(e.Size, 0))), e.Checksum, ok(e.Verified), e.Signature)
		if e.Error != "" {
			p("    error: %s", e.Error)
		}
	}

	sec("nodes")
	if len(r.Nodes) == 0 {
		p("(none recorded)")
	}
	for _, n := range r.Nodes {
		p("%s", n.String())
		if n.ExeMatches != nil {
			p("    executable matches the record: %v", *n.ExeMatches)
		}
		if n.BootID != "" {
			p("    boot id %s (now %s)", n.BootID, n.BootNow)
		}
		p("    log %s", n.LogFile)
		if n.LogError != "" {
			p("    log error: %s", n.LogError)
		}
		for _, l := range n.LastLines {
			p("    | %s", l)
		}
	}

	sec("agent self-update and log")
	u := r.Upgrade
	p("phase: %s", u.Phase)
	if u.ToVersion != "" {
		p("  %s -> %s  %s", u.FromVersion, u.ToVersion, u.Message)
	}
	if len(u.Failed) > 0 {
		p("  failed versions: %s", strings.Join(u.Failed, ", "))
	}
	if u.Error != "" {
		p("  error: %s", u.Error)
	}
	p("agent log %s:", u.AgentLogFile)
	for _, l := range u.AgentLog {
		p("    | %s", l)
	}

	sec("service manager")
	p("state: %s", r.Service.State)
	if r.Service.Error != "" {
		p("  %s", r.Service.Error)
	}
	keys := make([]string, 0, len(r.Service.Systemd))
	for k := range r.Service.Systemd {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p("  %s=%s", k, r.Service.Systemd[k])
	}

	sec("host")
	h := r.Host
	p("hostname %s  %s/%s (%s)  agent %s  %s", h.Hostname, h.OS, h.Arch, h.Platform, h.AgentVersion, h.GoVersion)
	for _, d := range h.Disks {
		if d.Error != "" {
			p("  %-15s %s: %s", d.Role, d.Dir, d.Error)
			continue
		}
		p("  %-15s %s: %s free of %s", d.Role, d.Dir, humanBytes(d.FreeBytes), humanBytes(d.TotalBytes))
	}

	if len(r.Warnings) > 0 {
		sec("warnings")
		for _, w := range r.Warnings {
			p("- %s", w)
		}
	}
	if len(r.Problems) == 0 {
		p("\nno problems found")
	} else {
		p("\nproblems:")
		for _, pr := range r.Problems {
			p("- %s", pr)
		}
	}
	return b.Flush()
}
