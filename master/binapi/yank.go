package binapi

// Yanker tells which versions an operator yanked (master/releases): they
// stay downloadable but are never "latest".
type Yanker interface {
	Yanked(artifactName, version string) bool
}

// SetYanked installs the yank list; the master calls it once its store is
// open, after the API may already serve (nothing is yanked until then).
func (a *API) SetYanked(y Yanker) {
	if y == nil {
		a.yanked.Store(nil)
		return
	}
	a.yanked.Store(&y)
}

func (a *API) isYanked(artifactName, version string) bool {
	y := a.yanked.Load()
	return y != nil && (*y).Yanked(artifactName, version)
}

// yankedFunc is the skip function of catalog.LatestExcept (nil: none).
func (a *API) yankedFunc() func(artifactName, version string) bool {
	y := a.yanked.Load()
	if y == nil {
		return nil
	}
	return (*y).Yanked
}
