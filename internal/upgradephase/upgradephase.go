// Package upgradephase is the one definition of an agent self-update's
// phases and of the moves between them. The agent (package agent/upgrade)
// records its progress in these phases and checks every state change against
// Transitions; the master (through internal/limits) accepts exactly these
// names in a heartbeat. It imports nothing, so both sides can use it.
//
// One upgrade attempt runs
//
//	requested → downloading → verifying → applying → watching → committed
//	                                                  ↘          ↘ rolled_back
//	                                                   rolled_back (the pre-start check)
//
// and any step may end in failed (the old binary keeps running, or a rollback
// could not restore it). Committed, rolled_back and failed end an attempt;
// the next attempt starts again at requested.
package upgradephase

import (
	"errors"
	"fmt"
)

// Phase is a step of a self-update, as the agent records it and the master
// shows it.
type Phase string

// The phases, in order.
const (
	// None: no upgrade was ever started (the agent sends no status).
	None        Phase = ""
	Requested   Phase = "requested"
	Downloading Phase = "downloading"
	Verifying   Phase = "verifying"
	Applying    Phase = "applying"
	Watching    Phase = "watching"
	Committed   Phase = "committed"
	RolledBack  Phase = "rolled_back"
	Failed      Phase = "failed"
)

// All are the phases an agent reports, in order (None is not one).
var All = []Phase{Requested, Downloading, Verifying, Applying, Watching, Committed, RolledBack, Failed}

// Transitions is the table of legal phase changes: from → the phases it may
// move to. Writing a state that keeps its phase is not a transition and is
// always allowed (a boot counted, a guard pid recorded).
var Transitions = map[Phase][]Phase{
	None:        {Requested},
	Requested:   {Downloading, Failed},
	Downloading: {Verifying, Failed},
	Verifying:   {Applying, Failed},
	// Applying → watching: the new binary is installed (by Apply, or
	// recorded by Begin when the old agent stopped before it could);
	// → rolled_back: the pre-start check restored the previous binary;
	// → failed: not installed, or the restore failed.
	Applying: {Watching, RolledBack, Failed},
	// Watching → rolled_back by Begin, Watch, the guard or the pre-start
	// check; → failed when that restore failed.
	Watching:   {Committed, RolledBack, Failed},
	Committed:  {Requested},
	RolledBack: {Requested},
	Failed:     {Requested},
}

// ErrIllegal is wrapped by Check's error.
var ErrIllegal = errors.New("illegal upgrade phase transition")

// Valid reports whether p is a phase an agent may report (not None).
func Valid(p Phase) bool {
	for _, q := range All {
		if p == q {
			return true
		}
	}
	return false
}

// Active reports whether p is an upgrade in progress.
func (p Phase) Active() bool {
	switch p {
	case Requested, Downloading, Verifying, Applying, Watching:
		return true
	}
	return false
}

// Terminal reports whether p ends an upgrade attempt.
func (p Phase) Terminal() bool {
	return p == Committed || p == RolledBack || p == Failed
}

// Allowed reports whether a state in phase from may be written as phase to.
func Allowed(from, to Phase) bool {
	if from == to {
		return from == None || Valid(from)
	}
	for _, q := range Transitions[from] {
		if q == to {
			return true
		}
	}
	return false
}

// Check returns nil when from → to is allowed, else an error wrapping
// ErrIllegal that names both phases.
func Check(from, to Phase) error {
	if Allowed(from, to) {
		return nil
	}
	return fmt.Errorf("%w: %s → %s", ErrIllegal, name(from), name(to))
}

func name(p Phase) string {
	switch {
	case p == None:
		return "none"
	case Valid(p):
		return string(p)
	}
	return fmt.Sprintf("%.32q", string(p))
}
