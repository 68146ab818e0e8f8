//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxEnviron caps what is read of one process's environment.
const maxEnviron = 1 << 20

// Environment markers the agent gives every node it starts (agent/recover.go).
const (
	envAgentData = "SUTRA_AGENT_DATA"
	envNodeID    = "SUTRA_NODE_ID"
	envVersion   = "SUTRA_NODE_VERSION"
)

// nodeProc is one live storage-server process of the soak.
type nodeProc struct {
	pid       int
	nodeID    string
	version   string
	agentData string // the agent data dir its marker names
}

// scanNodes lists the live (not zombie) processes whose agent marker names
// a directory under root.
func scanNodes(root string) []nodeProc {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []nodeProc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := readLimited(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(env, []byte(envAgentData+"="+root)) {
			continue
		}
		if !procAlive(pid) {
			continue
		}
		m := parseEnviron(env)
		if !strings.HasPrefix(m[envAgentData], root+string(filepath.Separator)) {
			continue
		}
		out = append(out, nodeProc{pid: pid, nodeID: m[envNodeID], version: m[envVersion], agentData: m[envAgentData]})
	}
	return out
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, maxEnviron)
	n, err := f.Read(buf)
	if n > 0 {
		return buf[:n], nil
	}
	return nil, err
}

// parseEnviron splits a /proc/<pid>/environ (NUL-separated KEY=VALUE) into
// a map; entries without '=' or with an empty key are ignored, the first of
// duplicate keys wins (as getenv would find it).
func parseEnviron(b []byte) map[string]string {
	m := map[string]string{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, ok := bytes.Cut(kv, []byte{'='})
		if !ok || len(k) == 0 {
			continue
		}
		if _, dup := m[string(k)]; !dup {
			m[string(k)] = string(v)
		}
	}
	return m
}

// procAlive reports whether pid is a live process (stopped counts; a zombie
// or a dead one does not).
func procAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	st, ok := procState(b)
	return ok && st != 'Z' && st != 'X'
}

// procState is the state letter of a /proc/<pid>/stat line (after the
// command name in parentheses, which may itself hold ") ").
func procState(stat []byte) (byte, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) || stat[i+1] != ' ' {
		return 0, false
	}
	return stat[i+2], true
}

// metricValue is the value of the unlabelled sample name in a Prometheus
// text exposition (false when absent or malformed).
func metricValue(text []byte, name string) (float64, bool) {
	for line := range bytes.SplitSeq(text, []byte{'\n'}) {
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		rest, ok := bytes.CutPrefix(line, []byte(name))
		if !ok || len(rest) == 0 || rest[0] != ' ' {
			continue
		}
		fields := strings.Fields(string(rest))
		if len(fields) == 0 {
			return 0, false
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, false
		}
		return v, true
	}
	return 0, false
}
