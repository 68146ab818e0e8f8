package httpjson

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestWriteErrorIsReadableJSON(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteError(rec, http.StatusBadRequest, `want {"checksum": "<sha256 hex>"}`)
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("status = %d, want 400", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json", ct)
	}
	body := rec.Body.String()
	if strings.Contains(body, `\u003c`) {
		t.Fatalf("body escapes '<' as \\u003c: %s", body)
	}
	var e Error
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error != `want {"checksum": "<sha256 hex>"}` {
		t.Fatalf("decoded %q, %v", e.Error, err)
	}
}
