// Package httpapi is the HTTP wire contract of the master's port 7001, as the
// design document ../shared/seed/binary-distribution.md defines it: the
// request and response bodies of the binary distribution API (BinaryInfo, the
// verify request and answer), the grid's JSON error body, and the paged
// envelopes of the read-only fleet API. The master serves these types
// (master/binapi, master/fleetapi), the agent reads them (agent/fetch) and
// the sutra CLI reads them through Client; each is declared here once, so a
// change to a field is a compile error everywhere it matters.
//
// The package depends on the standard library only and imports no master or
// agent code. JSON field names are the design document's and are pinned by a
// golden test: fields are only ever added, never renamed or removed.
package httpapi

// Routes of the master's HTTP API that clients build (the master's handlers
// register the same paths with their patterns).
const (
	// BinariesPath lists storage-server binaries: GET answers []BinaryInfo.
	BinariesPath = "/api/binaries"
	// NextPageTokenHeader carries the token of the next page of a fleet list
	// when there is one.
	NextPageTokenHeader = "Next-Page-Token"
)

// BinaryInfo is the master's description of one published binary: an entry
// of GET /api/binaries and the answer of GET
// /api/binaries/{version}/{platform}/{arch}. Field order is the order of the
// JSON object the master writes.
type BinaryInfo struct {
	// Version is the binary's semantic version, e.g. "1.0.0".
	Version string `json:"version"`
	// Platform is linux, darwin or windows.
	Platform string `json:"platform"`
	// Arch is x86_64, aarch64, arm or x86.
	Arch string `json:"arch"`
	// Checksum is the lower-case hex SHA-256 of the file.
	Checksum string `json:"checksum"`
	// SizeBytes is the file's size.
	SizeBytes int64 `json:"size_bytes"`
	// Path is the file name to download under /binaries/.
	Path string `json:"path"`
	// UploadedAt is when the master registered the file, in Unix seconds.
	UploadedAt int64 `json:"uploaded_at"`
	// Artifact names what the binary is (storage-server, sutra-agent); not
	// in the design document, added by this grid. Older masters leave it out.
	Artifact string `json:"artifact"`
	// Signature is the file name of the binary's release signature under
	// /binaries/ ("{path}.minisig", minisign), absent when the binary is
	// unsigned. Not in the design document, added by this grid: agents
	// configured with release public keys verify the binary against it.
	Signature string `json:"signature,omitempty"`
	// Yanked is true when an operator yanked the version (sutra binaries
	// yank): it stays downloadable but is never "latest". Absent otherwise,
	// so the design document's fields are unchanged. Added by this grid.
	Yanked bool `json:"yanked,omitempty"`
}

// VerifyRequest is the body of POST /api/binaries/{version}/{platform}/{arch}/verify.
type VerifyRequest struct {
	// Checksum is the hex SHA-256 the client computed. A missing or empty
	// checksum is refused (400).
	Checksum string `json:"checksum"`
}

// VerifyResponse answers POST .../verify.
type VerifyResponse struct {
	// Valid reports whether the request's checksum is the binary's. The
	// master always sets it; nil after decoding means an answer that is not
	// the contract's.
	Valid *bool `json:"valid"`
	// ExpectedChecksum is the binary's hex SHA-256.
	ExpectedChecksum string `json:"expected_checksum"`
}

// Error is the body of every non-2xx JSON answer: {"error": "..."}, a message
// that says what to do next.
type Error struct {
	Error string `json:"error"`
}

// The fleet API's lists (GET /api/agents, /api/nodes, /api/events) answer a
// bare JSON array without ?page_token, and one of the envelopes below with it.
// The item types are the fleet's (master/fleet), which this package cannot
// import: hence the type parameters.

// AgentsPage is a page of GET /api/agents?page_token=T.
type AgentsPage[A any] struct {
	Agents []A `json:"agents"`
	// NextPageToken is empty on the last page.
	NextPageToken string `json:"next_page_token"`
}

// NodesPage is a page of GET /api/nodes?page_token=T. The token comes first:
// the master has always written this object's keys in sorted order.
type NodesPage[N any] struct {
	// NextPageToken is empty on the last page.
	NextPageToken string `json:"next_page_token"`
	Nodes         []N    `json:"nodes"`
}

// EventsPage is a page of GET /api/events?page_token=T.
type EventsPage[E any] struct {
	Events []E `json:"events"`
	// NextPageToken is empty on the last page.
	NextPageToken string `json:"next_page_token"`
}
