// Package httpjson writes JSON responses and the grid's uniform JSON error
// body, {"error": "..."}, so every HTTP API of the master answers alike.
package httpjson

import (
	"encoding/json"
	"net/http"
)

// Error is the body of every non-2xx JSON response.
type Error struct {
	Error string `json:"error"`
}

// Write encodes v as JSON with the given status.
func Write(w http.ResponseWriter, status int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error": "encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// WriteError writes {"error": msg} with the given status.
func WriteError(w http.ResponseWriter, status int, msg string) {
	Write(w, status, Error{Error: msg})
}
