package auth

import (
	"net/http"

	"github.com/sutragrid/sutra/internal/httpjson"
	"github.com/sutragrid/sutra/master/pki"
)

// AgentCheck decides whether a verified agent certificate may still be
// used (revocation): nil lets every agent the handshake verified through,
// an error refuses the request with its message.
type AgentCheck func(agentID string) error

// RequireAgentOrOperator guards the binary routes under --private-downloads:
// a request goes through to h only with a verified agent client
// certificate (the TLS handshake checked that it chains to the master's
// client CA and is valid now; it must name an agent, the revocation check
// (SetCertCheck) and check, when not nil, must accept that agent) or with the operator token in
// "Authorization: Bearer …". Anything else is 401 JSON; a certificate that
// names no agent, or an agent check refuses, is 403 JSON. A certificate from
// another CA never gets here: the handshake fails.
func (p *Policy) RequireAgentOrOperator(h http.Handler, check AgentCheck) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
			id, err := pki.AgentIDFromCert(r.TLS.VerifiedChains[0][0])
			if err != nil {
				httpjson.WriteError(w, http.StatusForbidden, "the client certificate does not name an agent: downloads need an agent certificate or the operator token")
				return
			}
			if err := p.CheckAgentCert(id, r.TLS.VerifiedChains[0][0]); err != nil {
				httpjson.WriteError(w, http.StatusForbidden, "agent "+id+" may not download: "+err.Error())
				return
			}
			if check != nil {
				if err := check(id); err != nil {
					httpjson.WriteError(w, http.StatusForbidden, "agent "+id+" may not download: "+err.Error())
					return
				}
			}
			h.ServeHTTP(w, r)
			return
		}
		tok := bearerOf(r.Header.Get("Authorization"))
		if tok != "" && p.checkToken(tok) {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="sutra"`)
		msg := "downloads are private on this master (--private-downloads): present an agent client certificate (agents do once enrolled, over https) or the operator token as 'Authorization: Bearer <token>'"
		if tok != "" {
			msg = "wrong operator token; " + msg
		}
		httpjson.WriteError(w, http.StatusUnauthorized, msg)
	})
}
