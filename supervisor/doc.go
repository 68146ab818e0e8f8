// Package supervisor starts, watches and restarts child processes — the
// storage nodes an agent runs. It knows nothing of gRPC or config files and
// depends on the standard library only.
//
// A Supervisor runs one goroutine per node. The goroutine starts the node in
// a process group of its own (Unix; a job object on Windows), writes its
// stdout and stderr to a size-capped, rotated log file under Options.LogDir,
// probes GET {HealthURL} and feeds what happens (start error, exit,
// unhealthy past the threshold, stop) to a Policy, a pure state machine that
// answers restart-after-delay, give up (StateFailed) or stop. The goroutine
// waits for the delay on a timer. Every decision is logged with slog and
// delivered to Options.OnEvent through a bounded queue and a delivery
// goroutine, so a slow consumer never delays a restart or a stop; Status returns a snapshot (state, pid, restarts, last exit, the
// last lines of the log after a crash).
//
// Identity and trust: a child is tracked by its handle (os/exec Wait), never
// by probing a pid, so pid reuse cannot fool the supervisor. A process that
// is not our child — a node adopted after an agent restart — is identified
// by pid plus start time (ProcessStartTime); the identity is checked every
// Options.PollInterval and again right before any signal is sent, and a
// changed start time means the node exited (the pid now belongs to someone
// else, who is never signalled). AdoptIdentity adopts only on a full match
// that also covers the boot (BootID: Linux start times count from boot, so
// a pid and start time can repeat after a reboot) and the executable
// (ProcessExe). FindMarked finds the processes that carry an environment
// marker (Linux), so that a caller that lost its record can find its own.
//
// Lifetimes: the supervisor's goroutines do not end with any caller's
// context. Stop or StopAll stop nodes (SIGTERM to the group, Options.StopGrace,
// then SIGKILL); Detach leaves them running, for an agent that exits and
// re-adopts its nodes when it comes back.
//
// Files by concern: supervisor.go is the registry (start, adopt, stop,
// list); node.go is one node's lifecycle (its run loop, restart decisions
// through policy.go, stopping); health.go probes; process.go and the
// proc_* and starttime_* files are processes and their identity;
// events.go delivers events; logfile.go rotates logs.
package supervisor
