package controlplane_test

import (
	"testing"

	"github.com/sutragrid/sutra/agent/upgrade"
	"github.com/sutragrid/sutra/internal/limits"
)

// Every upgrade phase the agent reports is one the master accepts.
func TestUpgradePhasesAreKnownToTheMaster(t *testing.T) {
	for _, p := range []upgrade.Phase{upgrade.PhaseRequested, upgrade.PhaseDownloading, upgrade.PhaseVerifying, upgrade.PhaseApplying,
		upgrade.PhaseWatching, upgrade.PhaseCommitted, upgrade.PhaseRolledBack, upgrade.PhaseFailed} {
		if !limits.UpgradePhase(string(p)) {
			t.Errorf("upgrade phase %q is not in limits.UpgradePhases: the master would refuse it", p)
		}
	}
}
