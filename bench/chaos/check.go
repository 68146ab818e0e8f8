//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
)

// observation is one look at the fleet: what keeps it from having
// converged, and the duplicates and orphans among that.
type observation struct {
	problems   []string
	duplicates []string // node ids served by more than one process
	orphans    []string // processes no live agent owns, or of no desired node
}

func (o observation) converged() bool { return len(o.problems) == 0 }

func (o *observation) add(format string, args ...any) {
	o.problems = append(o.problems, fmt.Sprintf(format, args...))
}

// wantVersion resolves an agent's desired storage-server version.
func wantVersion(v string) string {
	if v == "" || v == "latest" {
		return vNew
	}
	return v
}

// observe checks, once: every agent runs and is healthy in the master's
// view; every desired node of the model is listed desired and running on
// its agent's desired version, with the pid of the one live process that
// serves it, which carries its live agent's marker and answers /version
// with that version; no other node is listed or runs.
func (c *chaos) observe(ctx context.Context) observation {
	var ob observation
	g := c.g
	// Faults run one at a time and restart what they kill before the
	// checks: a process found dead here died by itself.
	for _, p := range g.procs() {
		if !p.alive() && p.starts() > 0 {
			c.unexpectedExit(p)
			ob.add("%s exited by itself (%s); restarted", p.name, p.exitStatus())
		}
	}
	var as []apiAgent
	if err := g.api("/api/agents?limit=1000", &as); err != nil {
		ob.add("GET /api/agents: %v", err)
		return ob
	}
	want := map[string]string{}
	for _, a := range as {
		want[a.ID] = wantVersion(a.Desired.StorageServerVersion)
		if g.agentByID(a.ID) != nil && a.Health != "healthy" {
			ob.add("%s is %s in /api/agents", a.ID, a.Health)
		}
	}
	var ns []apiNode
	if err := g.api("/api/nodes?limit=1000", &ns); err != nil {
		ob.add("GET /api/nodes: %v", err)
		return ob
	}
	listed := map[string]apiNode{}
	for _, n := range ns {
		listed[n.ID] = n
		if c.m.get(n.ID) == nil {
			ob.add("/api/nodes lists node %s (desired %v) that is not desired", n.ID, n.Desired)
		}
	}
	procs := scanNodes(g.root)
	byNode := map[string][]nodeProc{}
	owner := map[string]*agent{}
	for _, a := range g.agents {
		if abs, err := filepath.Abs(a.stateDir); err == nil {
			owner[abs] = a
		}
	}
	for _, p := range procs {
		byNode[p.nodeID] = append(byNode[p.nodeID], p)
		a := owner[p.agentData]
		switch {
		case a == nil || !a.alive():
			ob.orphans = append(ob.orphans, fmt.Sprintf("pid %d node %s: its agent (%s) does not run", p.pid, p.nodeID, p.agentData))
		case c.m.get(p.nodeID) == nil:
			ob.orphans = append(ob.orphans, fmt.Sprintf("pid %d node %s of %s: the node is not desired", p.pid, p.nodeID, a.id))
		}
	}
	for _, o := range ob.orphans {
		ob.add("orphan: %s", o)
	}
	for _, n := range c.m.list() {
		w := want[n.agentID]
		ln, ok := listed[n.id]
		switch {
		case !ok:
			ob.add("node %s is not in /api/nodes", n.id)
		case !ln.Desired || ln.AgentID != n.agentID:
			ob.add("node %s in /api/nodes: desired %v agent %s, want desired on %s", n.id, ln.Desired, ln.AgentID, n.agentID)
		case ln.Status == nil || ln.Status.State != "running" || ln.Status.PID == 0 || ln.Status.Endpoint == "":
			ob.add("node %s is not running in /api/nodes: %s", n.id, describe(ln))
		case ln.Status.Version != w:
			ob.add("node %s runs %s in /api/nodes, its agent %s wants %s", n.id, ln.Status.Version, n.agentID, w)
		}
		if ok && ln.Status != nil && ln.Status.Endpoint != "" {
			n.setEndpoint(ln.Status.Endpoint)
		}
		ps := byNode[n.id]
		switch {
		case len(ps) == 0:
			ob.add("node %s: no process serves it", n.id)
			continue
		case len(ps) > 1:
			var pids []string
			for _, p := range ps {
				pids = append(pids, fmt.Sprint(p.pid))
			}
			ob.duplicates = append(ob.duplicates, n.id)
			ob.add("duplicate: node %s is served by processes %s", n.id, strings.Join(pids, ", "))
			continue
		}
		p := ps[0]
		if ok && ln.Status != nil && ln.Status.PID != p.pid {
			ob.add("node %s: /api/nodes says pid %d, the process is %d", n.id, ln.Status.PID, p.pid)
		}
		if a := owner[p.agentData]; a == nil || a.id != n.agentID {
			ob.add("node %s: process %d is marked by %s, want %s's", n.id, p.pid, p.agentData, n.agentID)
		}
		if p.version != w {
			ob.add("node %s: process %d runs %s, want %s", n.id, p.pid, p.version, w)
		}
		if ep := n.ep(); ep != "" {
			if v, err := c.nodeVersion(ep); err != nil || v != w {
				ob.add("node %s: GET %s/version = %q %v, want %s", n.id, ep, v, err, w)
			}
		}
	}
	sort.Strings(ob.duplicates)
	sort.Strings(ob.orphans)
	return ob
}

func describe(n apiNode) string {
	if n.Status == nil {
		return "no status"
	}
	return fmt.Sprintf("state %s pid %d endpoint %s version %s", n.Status.State, n.Status.PID, n.Status.Endpoint, n.Status.Version)
}

func (c *chaos) nodeVersion(ep string) (string, error) {
	code, b, err := c.g.get("http://"+ep+"/version", false)
	if err != nil {
		return "", err
	}
	if code != 200 {
		return "", fmt.Errorf("status %d", code)
	}
	var v struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return "", err
	}
	return v.Version, nil
}

// usage is one process's goroutines and open fds, from its /metrics.
type usage struct {
	goroutines, fds float64
	starts          int // the process incarnation it was read from
}

// usages reads every master's and agent's /metrics.
func (c *chaos) usages() map[string]usage {
	out := map[string]usage{}
	read := func(name, url string, auth bool, starts int) {
		code, b, err := c.g.get(url, auth)
		if err != nil || code != 200 {
			return
		}
		gr, ok1 := metricValue(b, "go_goroutines")
		fd, ok2 := metricValue(b, "process_open_fds")
		if ok1 && ok2 {
			out[name] = usage{goroutines: gr, fds: fd, starts: starts}
		}
	}
	for _, m := range c.g.masters {
		read(m.name, m.httpURL()+"/metrics", true, m.starts())
	}
	for _, a := range c.g.agents {
		read(a.id, "http://"+a.metricsAddr+"/metrics", false, a.starts())
	}
	return out
}
