package httpapi

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

type fakeAgent struct {
	ID string `json:"agent_id"`
}

func ptr[T any](v T) *T { return &v }

// The contract's values as the master writes them (two-space indent), pinned
// by testdata/*.golden: a renamed, removed or reordered field fails here.
func TestGolden(t *testing.T) {
	for _, c := range []struct {
		name string
		v    any
	}{
		{"binary_list", []BinaryInfo{{
			Version: "1.0.0", Platform: "linux", Arch: "x86_64", Checksum: "a1b2c3d4e5f6", SizeBytes: 19345678,
			Path: "storage-server-1.0.0-linux-x86_64", UploadedAt: 1729218000, Artifact: "storage-server",
		}}},
		{"binary_signed", BinaryInfo{
			Version: "1.2.0", Platform: "linux", Arch: "x86_64", Checksum: "a1b2c3d4e5f6", SizeBytes: 19345678,
			Path: "storage-server-1.2.0-linux-x86_64", UploadedAt: 1729218000, Artifact: "storage-server",
			Signature: "storage-server-1.2.0-linux-x86_64.minisig",
		}},
		{"verify_request", VerifyRequest{Checksum: "a1b2c3d4e5f6"}},
		{"verify_response", VerifyResponse{Valid: ptr(true), ExpectedChecksum: "a1b2c3d4e5f6"}},
		{"error", Error{Error: "no storage-server 9.9.9 for linux/x86_64"}},
		{"agents_page", AgentsPage[fakeAgent]{Agents: []fakeAgent{{ID: "a1"}}, NextPageToken: "tok"}},
		{"nodes_page", NodesPage[fakeAgent]{NextPageToken: ""}},
		{"events_page", EventsPage[fakeAgent]{Events: []fakeAgent{}, NextPageToken: "t2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := json.MarshalIndent(c.v, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s encodes as\n%s\nwant (%s)\n%s", c.name, got, path, want)
			}
		})
	}
}

// The examples of the design document (../shared/seed/binary-distribution.md),
// verbatim: every field they name is a field of the contract, and the values
// survive a round trip.
func TestDesignDocumentExamples(t *testing.T) {
	const list = `[
  {
    "version": "1.0.0",
    "platform": "linux",
    "arch": "x86_64",
    "checksum": "a1b2c3d4e5f6...",
    "size_bytes": 19345678,
    "path": "storage-server-1.0.0-linux-x86_64",
    "uploaded_at": 1729218000
  },
  {
    "version": "1.0.0",
    "platform": "darwin",
    "arch": "aarch64",
    "checksum": "f6e5d4c3b2a1...",
    "size_bytes": 20123456,
    "path": "storage-server-1.0.0-darwin-aarch64",
    "uploaded_at": 1729218100
  }
]`
	var bins []BinaryInfo
	strictDecode(t, list, &bins)
	want := []BinaryInfo{
		{Version: "1.0.0", Platform: "linux", Arch: "x86_64", Checksum: "a1b2c3d4e5f6...", SizeBytes: 19345678, Path: "storage-server-1.0.0-linux-x86_64", UploadedAt: 1729218000},
		{Version: "1.0.0", Platform: "darwin", Arch: "aarch64", Checksum: "f6e5d4c3b2a1...", SizeBytes: 20123456, Path: "storage-server-1.0.0-darwin-aarch64", UploadedAt: 1729218100},
	}
	if !reflect.DeepEqual(bins, want) {
		t.Errorf("design document list decodes as %+v, want %+v", bins, want)
	}
	roundTrip(t, bins)

	var req VerifyRequest
	strictDecode(t, `{"checksum": "a1b2c3d4e5f6..."}`, &req)
	if req.Checksum != "a1b2c3d4e5f6..." {
		t.Errorf("verify request checksum = %q", req.Checksum)
	}
	roundTrip(t, req)

	var resp VerifyResponse
	strictDecode(t, `{
  "valid": true,
  "expected_checksum": "a1b2c3d4e5f6..."
}`, &resp)
	if resp.Valid == nil || !*resp.Valid || resp.ExpectedChecksum != "a1b2c3d4e5f6..." {
		t.Errorf("verify response = %+v", resp)
	}
	roundTrip(t, resp)
}

// A verify answer without "valid" is told apart from "valid": false.
func TestVerifyResponseMissingValid(t *testing.T) {
	var r VerifyResponse
	if err := json.Unmarshal([]byte(`{"expected_checksum": "ab"}`), &r); err != nil || r.Valid != nil {
		t.Errorf("decode without valid = %+v, %v; want Valid nil", r, err)
	}
	if err := json.Unmarshal([]byte(`{"valid": false}`), &r); err != nil || r.Valid == nil || *r.Valid {
		t.Errorf("decode valid false = %+v, %v; want Valid false", r, err)
	}
}

func TestErrorMessage(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{`{"error": "unknown platform \"x\""}`, `unknown platform "x"`},
		{`{"error": 5}`, ""},
		{`<html>Bad Gateway</html>`, ""},
		{``, ""},
		{`{}`, ""},
	} {
		if got := ErrorMessage([]byte(c.body)); got != c.want {
			t.Errorf("ErrorMessage(%s) = %q, want %q", c.body, got, c.want)
		}
	}
}

func strictDecode(t *testing.T, s string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode design document example into %T: %v", v, err)
	}
}

func roundTrip[T any](t *testing.T, v T) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var back T
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, v) {
		t.Errorf("round trip of %T: %+v (%v), want %+v", v, back, err, v)
	}
}
