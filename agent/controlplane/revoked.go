package controlplane

import (
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// revokedRetry is how often an agent whose certificate an operator revoked
// tries again (and logs one error line): nothing changes until an operator
// lifts the revocation and the agent is enrolled again, so it neither spins
// nor floods its log; its nodes keep running meanwhile.
const revokedRetry = time.Minute

// isRevoked reports whether the master refused a call because this agent's
// certificate was revoked (PERMISSION_DENIED naming the revocation).
func isRevoked(err error) bool {
	return status.Code(err) == codes.PermissionDenied && strings.Contains(status.Convert(err).Message(), "revoked")
}

// revokedMsg is the agent's log line while it is revoked.
const revokedMsg = "the master refused this agent: its certificate was revoked by an operator; nodes keep running; " +
	"to bring it back an operator runs 'sutra agents unrevoke ID' on the master, then this agent must enroll again with a new join token " +
	"(remove its certificate from the data dir and restart it with --join-token); retrying once a minute"
