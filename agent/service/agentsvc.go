// Package agentsvc installs, controls and runs the Sutra Grid agent as an OS
// service: systemd on Linux, launchd on macOS and the service manager on
// Windows, through github.com/kardianos/service.
//
// The service definitions are ours, not kardianos's defaults, because they
// must suit a supervisor of long-lived storage nodes: restart always after a
// short pause (kardianos's systemd unit waits 120 s), start limits, and stop
// the agent alone so its nodes keep running and are re-adopted by the next
// agent (systemd KillMode=process, launchd AbandonProcessGroup). The systemd
// unit and launchd plist are the readable templates in packaging/templates,
// rendered here with text/template and handed to kardianos as finished text
// (they contain no template actions, so kardianos writes them verbatim).
// Windows is configured through kardianos options plus recovery actions that
// restart the service after every failure.
//
// The service runs "sutra-agent run --config /abs/path --service": the config
// path is stored absolute, and --service tells the agent that a service
// manager restarts it (its nodes are then left running when it exits).
package agentsvc

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kardianos/service"
)

// Service identity and restart policy.
const (
	// Name is the service name: the systemd unit sutra-agent.service, the
	// launchd label and plist /Library/LaunchDaemons/sutra-agent.plist, the
	// Windows service name.
	Name        = "sutra-agent"
	DisplayName = "Sutra Grid agent"
	Description = "Sutra Grid agent: registers with the grid master and supervises storage nodes"

	// ServiceFlag is the flag of "sutra-agent run" that the service
	// definition adds: the agent runs under a service manager that restarts
	// it, so it leaves its nodes running when it exits.
	ServiceFlag = "--service"

	// RestartSec is the pause before the service manager restarts the agent
	// (systemd RestartSec, launchd ThrottleInterval, Windows recovery delay).
	RestartSec = 2
	// StartLimitIntervalSec and StartLimitBurst: systemd stops restarting
	// after StartLimitBurst starts within StartLimitIntervalSec seconds.
	StartLimitIntervalSec = 120
	StartLimitBurst       = 10
	// FailureResetSec is the Windows recovery reset period: failures older
	// than this are forgotten.
	FailureResetSec = 86400
)

// Definition is what the service manager is told to run.
type Definition struct {
	// Executable is the absolute path of the sutra-agent binary.
	Executable string
	// ConfigPath is the absolute path of the agent config file.
	ConfigPath string
	// LogDir is where launchd writes the agent's stdout and stderr
	// (macOS only). Default: /var/log.
	LogDir string
}

// Validate reports every problem with d at once.
func (d Definition) Validate() error {
	var errs []error
	check := func(field, v string) {
		switch {
		case v == "":
			errs = append(errs, fmt.Errorf("%s is empty", field))
		case !isAbs(v):
			errs = append(errs, fmt.Errorf("%s %q is not an absolute path", field, v))
		case strings.ContainsAny(v, "\x00\r\n"):
			errs = append(errs, fmt.Errorf("%s %q contains a line break or NUL", field, v))
		case strings.Contains(v, "{{"):
			// kardianos would read it as a template action.
			errs = append(errs, fmt.Errorf("%s %q contains \"{{\"", field, v))
		}
	}
	check("executable", d.Executable)
	check("config path", d.ConfigPath)
	if d.LogDir != "" {
		check("log dir", d.LogDir)
	}
	return errors.Join(errs...)
}

// Arguments are the command-line arguments the service runs the agent with.
func (d Definition) Arguments() []string {
	return []string{"run", "--config", d.ConfigPath, ServiceFlag}
}

// PreviousExecutable is where a self-update keeps the previous agent binary
// (agent/upgrade: beside the executable, ".previous" before any ".exe").
func (d Definition) PreviousExecutable() string {
	if base, ok := strings.CutSuffix(d.Executable, ".exe"); ok {
		return base + ".previous.exe"
	}
	return d.Executable + ".previous"
}

// CheckArguments are the arguments of the pre-start upgrade check the
// service manager runs from PreviousExecutable before every start.
func (d Definition) CheckArguments() []string {
	return []string{"upgrade-check", "--config", d.ConfigPath}
}

// isAbs accepts absolute paths of every OS the definition may be rendered
// for, so that the definitions of all three can be tested on any machine.
func isAbs(p string) bool {
	if strings.HasPrefix(p, "/") {
		return true
	}
	// C:\ or C:/ and \\server\share.
	if len(p) >= 3 && p[1] == ':' && (p[2] == '\\' || p[2] == '/') {
		return true
	}
	return strings.HasPrefix(p, `\\`) || filepath.IsAbs(p)
}

// Windows service options, set explicitly rather than left to kardianos's
// defaults.
var windowsOptions = service.KeyValue{
	"StartType":              "automatic",
	"DelayedAutoStart":       false,
	"OnFailure":              "restart",
	"OnFailureDelayDuration": strconv.Itoa(RestartSec) + "s",
	"OnFailureResetPeriod":   FailureResetSec,
}

// kardianosConfig builds the kardianos configuration for goos (linux,
// darwin or windows), with our rendered definition for that OS.
func kardianosConfig(goos string, d Definition) (*service.Config, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("service definition: %w", err)
	}
	cfg := &service.Config{
		Name:        Name,
		DisplayName: DisplayName,
		Description: Description,
		Executable:  d.Executable,
		Arguments:   d.Arguments(),
		Option:      service.KeyValue{},
	}
	switch goos {
	case "linux":
		unit, err := renderSystemd(d)
		if err != nil {
			return nil, err
		}
		cfg.Option["SystemdScript"] = unit
	case "darwin":
		plist, err := renderLaunchd(d)
		if err != nil {
			return nil, err
		}
		cfg.Option["LaunchdConfig"] = plist
		// Used by kardianos only with its own plist; ours says the same.
		cfg.Option["KeepAlive"] = true
		cfg.Option["RunAtLoad"] = true
	case "windows":
		for k, v := range windowsOptions {
			cfg.Option[k] = v
		}
	default:
		return nil, fmt.Errorf("no service definition for %s: linux, darwin and windows are supported", goos)
	}
	return cfg, nil
}
