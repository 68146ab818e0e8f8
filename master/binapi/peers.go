package binapi

import (
	"context"
	"net/http"
	"net/url"
	"strings"
)

// Peers finds another master that serves a binary this master does not
// hold (master/binpeers, with several masters each on its own
// BINARIES_DIR).
type Peers interface {
	// Holder returns the base HTTP URL (scheme://host:port) of an alive
	// master, never this one, that publishes name with the checksum the
	// masters agreed on; ok is false when there is none.
	Holder(ctx context.Context, name string) (baseURL string, ok bool)
}

// Redirects. A download of a binary this master does not hold, that
// another master publishes, is answered 307 Temporary Redirect to that
// master's same route, with RedirectedQuery=1 added: a master receiving a
// redirected request for a file it does not hold answers 404 instead of
// redirecting again, so two masters whose views disagree never bounce a
// client between them. A client may also send the RedirectedHeader to ask
// for no redirect.
const (
	RedirectedQuery  = "sutra_redirected"
	RedirectedHeader = "X-Sutra-Redirected"
)

// SetPeers installs the other masters' binaries (nil: none; a download of
// a binary this master does not hold is 404). The master calls it once its
// store is open.
func (a *API) SetPeers(p Peers) {
	if p == nil {
		a.peers.Store(nil)
		return
	}
	a.peers.Store(&p)
}

// redirect answers 307 to a master that holds file (a binary name, or its
// signature name) when this request may be redirected and one exists.
func (a *API) redirect(w http.ResponseWriter, r *http.Request, binary, file string) bool {
	p := a.peers.Load()
	if p == nil || r.URL.Query().Get(RedirectedQuery) != "" || r.Header.Get(RedirectedHeader) != "" {
		return false
	}
	base, ok := (*p).Holder(r.Context(), binary)
	if !ok {
		return false
	}
	loc := strings.TrimRight(base, "/") + "/binaries/" + url.PathEscape(file) + "?" + RedirectedQuery + "=1"
	w.Header().Set("Location", loc)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusTemporaryRedirect)
	a.log.Debug("download redirected to another master", "file", file, "to", base, "remote", r.RemoteAddr)
	return true
}
