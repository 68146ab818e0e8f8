package supervisor

import (
	"errors"
	"testing"
)

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		line    string
		want    uint64
		wantErr error
	}{
		{"42 (storage-server) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 8 0 123456 1000 200", 123456, nil},
		{"42 (a) b) c) R 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 8 0 777 1000 200", 777, nil},
		{"42 (zomb) Z 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 8 0 777 1000 200", 0, ErrNoProcess},
		{"42 (short) S 1 2 3", 0, nil},
		{"no parens", 0, nil},
	}
	for _, tt := range tests {
		got, err := parseProcStat(42, []byte(tt.line))
		switch {
		case tt.want != 0 && (err != nil || got != tt.want):
			t.Errorf("parseProcStat(%q) = %d, %v; want %d", tt.line, got, err, tt.want)
		case tt.want == 0 && err == nil:
			t.Errorf("parseProcStat(%q) = %d, nil; want an error", tt.line, got)
		case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
			t.Errorf("parseProcStat(%q) error = %v, want %v", tt.line, err, tt.wantErr)
		}
	}
}

func FuzzParseProcStat(f *testing.F) {
	f.Add([]byte("42 (storage-server) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 8 0 123456 1000 200"))
	f.Add([]byte("1 ()) Z"))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = parseProcStat(1, data) // must not panic
	})
}
