package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sutragrid/sutra/agent/diagnose"
	agentsvc "github.com/sutragrid/sutra/agent/service"
)

// errProblems: diagnose found something wrong (exit status 1; the list is
// already printed).
var errProblems = errors.New("diagnose found problems (see the list above)")

// cmdDiagnose prints what an operator needs on a broken node, and with
// --bundle writes it with the log tails as a .tar.gz for a bug report.
func cmdDiagnose(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("diagnose", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfgPath := fl.String("config", defaultConfig, "agent config file (resolved exactly as `sutra-agent run` resolves it)")
	bundle := fl.String("bundle", "", "also write the report (text and JSON) and the last 256 KiB of each log file, secrets redacted, to this .tar.gz (mode 0600)")
	output := fl.String("o", "text", "output format: text or json")
	timeout := fl.Duration("timeout", diagnose.DefaultTimeout, "timeout of each network step")
	if err := fl.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fl.Arg(0))
	}
	if *output != "text" && *output != "json" {
		return fmt.Errorf("%w: -o %q: want text or json", errUsage, *output)
	}
	if *timeout <= 0 || *timeout > 5*time.Minute {
		return fmt.Errorf("%w: --timeout %s: want more than 0 and at most 5m", errUsage, *timeout)
	}
	cfg, _, err := setup(*cfgPath, flagSet(fl, "config"), stderr)
	if err != nil {
		return fmt.Errorf("the config does not load, nothing else checked: %w", err)
	}
	rep, err := diagnose.Gather(ctx, diagnose.Options{
		Config:        cfg,
		Timeout:       *timeout,
		ServiceStatus: func(ctx context.Context) (string, error) { return serviceStatus(ctx, *cfgPath) },
	})
	if err != nil {
		return err
	}
	if *output == "json" {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		return err
	}
	if *bundle != "" {
		if err := diagnose.WriteBundle(*bundle, rep, cfg.Agent.AgentDataDir); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "bundle written to %s (attach it to the bug report)\n", *bundle)
	}
	if !rep.OK() {
		return errProblems
	}
	return nil
}

// serviceStatus asks the OS service manager (agent/service) for the agent
// service's state.
func serviceStatus(ctx context.Context, cfgPath string) (string, error) {
	var out, errOut bytes.Buffer
	agentsvc.Command(ctx, []string{"status", "--config", cfgPath}, agentsvc.Options{Stdout: &out, Stderr: &errOut})
	st := strings.TrimSpace(out.String())
	if msg := strings.TrimSpace(errOut.String()); msg != "" {
		return st, errors.New(strings.TrimPrefix(msg, "sutra-agent: "))
	}
	return st, nil
}
