package binapi

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"aead.dev/minisign"

	"github.com/sutragrid/sutra/internal/httpapi"
	"github.com/sutragrid/sutra/internal/release"
)

// Issue 13: GET|HEAD /binaries/{file}.minisig serves the signature of a
// published, signed binary (with Range and ETag); BinaryInfo.signature names
// it only when the binary is signed; the .minisig of an unsigned or unknown
// binary is a 404 JSON.
func TestSignatureRoute(t *testing.T) {
	const signed, unsigned = "storage-server-1.2.0-linux-x86_64", "storage-server-1.1.0-linux-x86_64"
	data := []byte("signed binary")
	_, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := release.IdentityOfFile(signed)
	sig, _, err := release.Sign(priv, bytes.NewReader(data), id)
	if err != nil {
		t.Fatal(err)
	}
	c := newCatalog(t, map[string][]byte{signed: data, signed + ".minisig": sig, unsigned: []byte("unsigned")})
	srv := newServer(t, c, nil)

	resp, err := http.Get(srv.URL + "/api/binaries")
	if err != nil {
		t.Fatal(err)
	}
	var list []httpapi.BinaryInfo
	err = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %v %+v", err, list)
	}
	for _, b := range list {
		want := ""
		if b.Path == signed {
			want = signed + ".minisig"
		}
		if b.Signature != want {
			t.Errorf("%s: signature %q, want %q", b.Path, b.Signature, want)
		}
	}
	resp, _ = http.Get(srv.URL + "/api/binaries/1.1.0/linux/x86_64")
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(raw), "signature") {
		t.Errorf("unsigned binary info mentions a signature: %s", raw)
	}

	get := func(method, path string, hdr map[string]string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, body
	}
	resp, body := get("GET", "/binaries/"+signed+".minisig", nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, sig) || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || resp.Header.Get("ETag") == "" {
		t.Fatalf("GET .minisig = %d %q %q\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("ETag"), body)
	}
	resp, body = get("HEAD", "/binaries/"+signed+".minisig", nil)
	if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != int64(len(sig)) {
		t.Fatalf("HEAD .minisig = %d, %d bytes, Content-Length %d", resp.StatusCode, len(body), resp.ContentLength)
	}
	resp, body = get("GET", "/binaries/"+signed+".minisig", map[string]string{"Range": "bytes=0-9"})
	if resp.StatusCode != 206 || !bytes.Equal(body, sig[:10]) {
		t.Fatalf("Range = %d %q", resp.StatusCode, body)
	}
	resp, body = get("GET", "/binaries/"+signed+".minisig", map[string]string{"Range": "bytes=-0"})
	if resp.StatusCode != 416 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("Range -0 = %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	for _, p := range []string{"/binaries/" + unsigned + ".minisig", "/binaries/storage-server-9.9.9-linux-x86_64.minisig", "/binaries/.minisig", "/binaries/x.minisig"} {
		resp, body := get("GET", p, nil)
		var e httpapi.Error
		if resp.StatusCode != 404 || json.Unmarshal(body, &e) != nil || e.Error == "" {
			t.Errorf("GET %s = %d %s, want 404 JSON", p, resp.StatusCode, body)
		}
	}
}
