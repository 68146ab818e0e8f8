// Package releases is the release metadata an operator sets on published
// binaries: which versions are yanked. A yanked version stays published
// (an agent pinned to it can still fetch it) but is never "latest" and
// cannot be a rollout target.
//
// The yank list lives in the store's releases table, one record per
// artifact and version, written durably before Yank or Unyank returns,
// and is held in memory so Yanked answers without I/O on every request.
package releases

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sutragrid/sutra/internal/artifact"
	"github.com/sutragrid/sutra/internal/semver"
	"github.com/sutragrid/sutra/master/store"
)

// Limits of what an operator can grow.
const (
	// MaxYanked caps the yank list.
	MaxYanked = 10_000
	// MaxVersionLen and MaxActorLen cap those fields.
	MaxVersionLen = 128
	MaxActorLen   = 256
)

// Errors callers act on.
var (
	// ErrInvalid wraps every validation error (InvalidArgument on the wire).
	ErrInvalid = errors.New("invalid release request")
	// ErrFull: the yank list holds MaxYanked versions.
	ErrFull = errors.New("yank list full")
)

// Yank is one yanked version.
type Yank struct {
	Artifact string    `json:"artifact"`
	Version  string    `json:"version"`
	By       string    `json:"by,omitempty"`
	At       time.Time `json:"at"`
}

// Releases is the persisted yank list. It is safe for concurrent use.
type Releases struct {
	st     store.Store
	mu     sync.RWMutex
	yanked map[string]Yank // key(artifact, version)
	now    func() time.Time
}

func key(artifactName, version string) string { return artifactName + "/" + version }

// Validate checks an artifact and a version as a yank or unyank request
// carries them.
func Validate(artifactName, version string) error {
	var errs []error
	if !artifact.Valid(artifactName) {
		errs = append(errs, fmt.Errorf("%w: artifact %.64q (want one of %s)", ErrInvalid, artifactName, strings.Join(artifact.Artifacts(), ", ")))
	}
	if len(version) > MaxVersionLen {
		errs = append(errs, fmt.Errorf("%w: version of %d characters (at most %d)", ErrInvalid, len(version), MaxVersionLen))
	} else if _, err := semver.Parse(version); err != nil {
		errs = append(errs, fmt.Errorf("%w: version %q is not a semantic version like 1.2.3: %v", ErrInvalid, version, err))
	}
	return errors.Join(errs...)
}

// Open loads the yank list from st.
func Open(ctx context.Context, st store.Store) (*Releases, error) {
	if st == nil {
		return nil, errors.New("releases: no store")
	}
	r := &Releases{st: st, yanked: make(map[string]Yank), now: time.Now}
	err := st.Scan(ctx, store.TableReleases, func(k, v []byte) error {
		var y Yank
		if err := json.Unmarshal(v, &y); err != nil {
			return fmt.Errorf("release record %q: %w", k, err)
		}
		if Validate(y.Artifact, y.Version) != nil || string(k) != key(y.Artifact, y.Version) {
			return fmt.Errorf("release record %q: invalid artifact or version", k)
		}
		r.yanked[string(k)] = y
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("releases: load: %w", err)
	}
	return r, nil
}

// Yank marks artifact's version yanked, durably, and returns the record
// (the earlier one when it was already yanked).
func (r *Releases) Yank(ctx context.Context, artifactName, version, actor string) (Yank, error) {
	if err := Validate(artifactName, version); err != nil {
		return Yank{}, err
	}
	if len(actor) > MaxActorLen {
		actor = actor[:MaxActorLen]
	}
	k := key(artifactName, version)
	r.mu.Lock()
	defer r.mu.Unlock()
	if y, ok := r.yanked[k]; ok {
		return y, nil
	}
	if len(r.yanked) >= MaxYanked {
		return Yank{}, fmt.Errorf("%w: %d versions are yanked; unyank some first", ErrFull, MaxYanked)
	}
	y := Yank{Artifact: artifactName, Version: version, By: actor, At: r.now().UTC()}
	v, err := json.Marshal(y)
	if err != nil {
		return Yank{}, err
	}
	// The durable write first, then the memory it stands for.
	if err := r.st.Apply(ctx, []store.Op{store.Put(store.TableReleases, []byte(k), v)}); err != nil {
		return Yank{}, fmt.Errorf("yank %s %s: %w", artifactName, version, err)
	}
	r.yanked[k] = y
	return y, nil
}

// Unyank lifts a yank; it reports whether the version was yanked.
func (r *Releases) Unyank(ctx context.Context, artifactName, version string) (bool, error) {
	if err := Validate(artifactName, version); err != nil {
		return false, err
	}
	k := key(artifactName, version)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.yanked[k]; !ok {
		return false, nil
	}
	if err := r.st.Apply(ctx, []store.Op{store.Delete(store.TableReleases, []byte(k))}); err != nil {
		return false, fmt.Errorf("unyank %s %s: %w", artifactName, version, err)
	}
	delete(r.yanked, k)
	return true, nil
}

// Yanked reports whether artifact's version is yanked, from memory.
func (r *Releases) Yanked(artifactName, version string) bool {
	r.mu.RLock()
	_, ok := r.yanked[key(artifactName, version)]
	r.mu.RUnlock()
	return ok
}

// List returns the yanked versions by artifact, then version descending.
func (r *Releases) List() []Yank {
	r.mu.RLock()
	out := make([]Yank, 0, len(r.yanked))
	for _, y := range r.yanked {
		out = append(out, y)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b Yank) int {
		return cmp.Or(cmp.Compare(a.Artifact, b.Artifact), semver.Compare(b.Version, a.Version), cmp.Compare(b.Version, a.Version))
	})
	return out
}
