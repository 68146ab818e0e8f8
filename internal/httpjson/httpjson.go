// Package httpjson writes JSON responses and the grid's uniform JSON error
// body, {"error": "..."} (httpapi.Error), so every HTTP API of the master
// answers alike.
package httpjson

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/sutragrid/sutra/internal/httpapi"
)

// Error is the body of every non-2xx JSON response, the contract's
// httpapi.Error.
type Error = httpapi.Error

// Write encodes v as JSON with the given status.
func Write(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // messages quote <placeholders> for people to read
	enc.SetIndent("", "  ")
	var body []byte
	if err := enc.Encode(v); err != nil {
		status, body = http.StatusInternalServerError, []byte("{\"error\": \"encode response\"}\n")
	} else {
		body = buf.Bytes()
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// WriteError writes {"error": msg} with the given status.
func WriteError(w http.ResponseWriter, status int, msg string) {
	Write(w, status, Error{Error: msg})
}
