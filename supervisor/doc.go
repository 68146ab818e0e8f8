// Package supervisor starts, watches and restarts child processes (the
// storage nodes an agent runs). It depends on the standard library only.
//
// Placeholder doc; see supervisor.go.
package supervisor
