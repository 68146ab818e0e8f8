package agentsvc

import (
	"encoding/xml"
	"fmt"
	"sort"
	"strings"
	"text/template"

	"github.com/sutragrid/sutra/packaging"
)

// templateData is what the packaging templates see.
type templateData struct {
	Name, Description     string
	Executable            string
	Arguments             []string
	Previous              string
	CheckArguments        []string
	LogDir                string
	RestartSec            int
	StartLimitIntervalSec int
	StartLimitBurst       int
}

func newTemplateData(d Definition) templateData {
	logDir := d.LogDir
	if logDir == "" {
		logDir = "/var/log"
	}
	return templateData{
		Name:                  Name,
		Description:           Description,
		Executable:            d.Executable,
		Arguments:             d.Arguments(),
		Previous:              d.PreviousExecutable(),
		CheckArguments:        d.CheckArguments(),
		LogDir:                logDir,
		RestartSec:            RestartSec,
		StartLimitIntervalSec: StartLimitIntervalSec,
		StartLimitBurst:       StartLimitBurst,
	}
}

var funcs = template.FuncMap{
	"systemdExec": systemdExec,
	"xml":         xmlEscape,
}

var (
	systemdTemplate = template.Must(template.New("sutra-agent.service").Funcs(funcs).Option("missingkey=error").Parse(packaging.SystemdAgentUnit))
	launchdTemplate = template.Must(template.New("sutra-agent.plist").Funcs(funcs).Option("missingkey=error").Parse(packaging.LaunchdAgentPlist))
)

// renderSystemd renders the systemd unit for d.
func renderSystemd(d Definition) (string, error) {
	return render(systemdTemplate, d)
}

// renderLaunchd renders the launchd plist for d.
func renderLaunchd(d Definition) (string, error) {
	return render(launchdTemplate, d)
}

func render(t *template.Template, d Definition) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("service definition: %w", err)
	}
	var b strings.Builder
	if err := t.Execute(&b, newTemplateData(d)); err != nil {
		return "", fmt.Errorf("render %s: %w", t.Name(), err)
	}
	out := b.String()
	if strings.Contains(out, "{{") {
		// kardianos renders the text once more with its own engine.
		return "", fmt.Errorf("render %s: output contains \"{{\"", t.Name())
	}
	return out, nil
}

// systemdExec renders an ExecStart= command line: each word quoted when it
// needs to be, with systemd's specifier (%) and variable ($) characters
// doubled so they reach the agent literally.
func systemdExec(exe string, args []string) (string, error) {
	words := make([]string, 0, 1+len(args))
	for _, w := range append([]string{exe}, args...) {
		q, err := systemdQuote(w)
		if err != nil {
			return "", err
		}
		words = append(words, q)
	}
	return strings.Join(words, " "), nil
}

func systemdQuote(s string) (string, error) {
	if strings.ContainsAny(s, "\x00\r\n") {
		return "", fmt.Errorf("systemd command line word %q contains a line break or NUL", s)
	}
	s = strings.NewReplacer("%", "%%", "$", "$$").Replace(s)
	if s != "" && s != ";" && !strings.ContainsAny(s, " \t\"'\\") {
		return s, nil
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`, nil
}

func xmlEscape(s string) (string, error) {
	var b strings.Builder
	if err := xml.EscapeText(&b, []byte(s)); err != nil {
		return "", err
	}
	return b.String(), nil
}

// describeWindows renders, one setting a line, how the Windows service is
// configured: the options kardianos passes to the service manager (there is
// no definition file on Windows). Tests golden it.
func describeWindows(d Definition) (string, error) {
	cfg, err := kardianosConfig("windows", d)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Name: %s\n", cfg.Name)
	fmt.Fprintf(&b, "DisplayName: %s\n", cfg.DisplayName)
	fmt.Fprintf(&b, "Description: %s\n", cfg.Description)
	fmt.Fprintf(&b, "BinaryPathName: %s\n", windowsCommandLine(cfg.Executable, cfg.Arguments))
	keys := make([]string, 0, len(cfg.Option))
	for k := range cfg.Option {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "Option %s: %v\n", k, cfg.Option[k])
	}
	fmt.Fprintf(&b, "RecoveryActionsOnNonCrashFailures: true\n")
	return b.String(), nil
}

// windowsCommandLine joins exe and args as golang.org/x/sys/windows/svc/mgr
// does (syscall.EscapeArg on each word).
func windowsCommandLine(exe string, args []string) string {
	words := []string{escapeArg(exe)}
	for _, a := range args {
		words = append(words, escapeArg(a))
	}
	return strings.Join(words, " ")
}

// escapeArg is syscall.EscapeArg (Windows command-line quoting), available
// on every OS.
func escapeArg(s string) string {
	if s == "" {
		return `""`
	}
	needsBackslash := strings.ContainsAny(s, `"\`)
	hasSpace := strings.ContainsAny(s, " \t")
	if !needsBackslash && !hasSpace {
		return s
	}
	if !needsBackslash {
		return `"` + s + `"`
	}
	var b strings.Builder
	if hasSpace {
		b.WriteByte('"')
	}
	slashes := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		default:
			slashes = 0
		case '\\':
			slashes++
		case '"':
			for ; slashes > 0; slashes-- {
				b.WriteByte('\\')
			}
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	if hasSpace {
		for ; slashes > 0; slashes-- {
			b.WriteByte('\\')
		}
		b.WriteByte('"')
	}
	return b.String()
}
