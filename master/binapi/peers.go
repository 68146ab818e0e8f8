package binapi

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/sutragrid/sutra/internal/artifact"
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
// master's same route, and so are the info and verify routes of an exact
// version this master does not hold ("latest" is always this master's
// own). The Location carries RedirectedQuery=1: a master receiving a
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
	a.redirectTo(w, r, strings.TrimRight(base, "/")+"/binaries/"+url.PathEscape(file))
	return true
}

// redirectVersion answers 307 to a master that holds the exact version
// (the info and verify routes, whose path parameters resolve validated)
// when this master does not: an agent resolving a version its master lacks
// gets the metadata, the verification and the file from the same holder.
func (a *API) redirectVersion(w http.ResponseWriter, r *http.Request, artifactName, version, plat, arch string) bool {
	p := a.peers.Load()
	if p == nil || r.URL.Query().Get(RedirectedQuery) != "" || r.Header.Get(RedirectedHeader) != "" {
		return false
	}
	name := artifact.Filename(artifactName, version, plat, arch)
	base, ok := (*p).Holder(r.Context(), name)
	if !ok && plat == "windows" {
		base, ok = (*p).Holder(r.Context(), name+".exe")
	}
	if !ok {
		return false
	}
	a.redirectTo(w, r, strings.TrimRight(base, "/")+r.URL.EscapedPath())
	return true
}

func (a *API) redirectTo(w http.ResponseWriter, r *http.Request, target string) {
	loc := target + "?" + RedirectedQuery + "=1"
	w.Header().Set("Location", loc)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusTemporaryRedirect)
	a.log.Debug("redirected to another master", "to", loc, "remote", r.RemoteAddr)
}
