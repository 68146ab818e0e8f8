// Package packaging holds the service definitions of the Sutra Grid agent as
// readable template files, embedded so that "sutra-agent service install"
// renders exactly what is reviewed here.
//
//	templates/sutra-agent.service.tmpl  systemd unit (Linux)
//	templates/sutra-agent.plist.tmpl    launchd daemon (macOS)
//
// The templates are Go text/template files; agent/service renders them with
// its own data and function map (systemdExec, xml) and golden-tests the
// result for every OS. The files under systemd/ are what the .deb/.rpm
// packages install; a test checks that systemd/sutra-agent.service equals the
// template rendered for the package layout (/usr/bin, /etc/sutra).
//
// Windows has no definition file: the service manager is configured through
// its API (see windows/README.md).
package packaging

import _ "embed"

// SystemdAgentUnit is the text/template source of the agent's systemd unit.
//
//go:embed templates/sutra-agent.service.tmpl
var SystemdAgentUnit string

// LaunchdAgentPlist is the text/template source of the agent's launchd plist.
//
//go:embed templates/sutra-agent.plist.tmpl
var LaunchdAgentPlist string
