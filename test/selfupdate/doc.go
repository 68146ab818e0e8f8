// Package selfupdate holds the end-to-end test of the agent's health-gated
// self-update with real binaries (Linux only): a real sutra-master serves
// sutra-agent 1.1.0 and a broken 1.2.0 from its BINARIES_DIR, a real
// sutra-agent 1.0.0 runs under a restart loop that stands in for the service
// manager (running the pre-start upgrade-check from the previous binary
// before each start, as the systemd unit does), and the test checks that the
// agent comes back as 1.1.0, rolls back from 1.2.0 although a simulated
// reboot killed the upgrade guard, reports both to the master and never
// retries 1.2.0, while its storage node keeps its pid throughout. The package has no non-test code.
package selfupdate
