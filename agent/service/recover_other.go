//go:build !linux

package agentsvc

import "context"

// StartAfterRollback gets the agent's service running again after the
// self-update guard restored the previous binary. Only systemd gives up on a
// crash-looping service for good (its start limit); launchd's KeepAlive keeps
// restarting with a throttle and the Windows recovery actions restart on
// every failure, so there is nothing to do here.
func StartAfterRollback(ctx context.Context) error { return nil }
