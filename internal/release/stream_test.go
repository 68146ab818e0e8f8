package release

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"testing"
)

// The streaming verifier accepts exactly what Keyring.Verify accepts: the
// signed bytes written in any chunking; a changed byte, a missing or extra
// byte, an unknown key and another identity are refused, the last two before
// a byte is written.
func TestStreamVerifier(t *testing.T) {
	k, priv, _ := newKey(t)
	other, _, _ := newKey(t)
	file := make([]byte, 3<<20+17)
	rand.Read(file)
	sig, signed, err := Sign(priv, bytes.NewReader(file), ident)
	if err != nil {
		t.Fatal(err)
	}
	want := ident
	want.SHA256, want.Size = signed.SHA256, signed.Size
	write := func(v *StreamVerifier, data []byte, chunk int) {
		for len(data) > 0 {
			n := min(chunk, len(data))
			if m, err := v.Write(data[:n]); err != nil || m != n {
				t.Fatalf("Write = %d, %v", m, err)
			}
			data = data[n:]
		}
	}
	for _, chunk := range []int{1 << 20, 32 << 10, 4093, len(file)} {
		v, err := k.NewStreamVerifier(sig, want)
		if err != nil {
			t.Fatal(err)
		}
		write(v, file, chunk)
		if got, err := v.Verify(); err != nil || got != signed {
			t.Fatalf("chunk %d: Verify = %+v, %v", chunk, got, err)
		}
	}
	altered := bytes.Clone(file)
	altered[len(altered)/2] ^= 1
	for name, c := range map[string]struct {
		data   []byte
		reason Reason
	}{
		"altered":   {altered, BadSignature},
		"truncated": {file[:len(file)-1], BadSignature},
		"extended":  {append(bytes.Clone(file), 0), BadSignature},
	} {
		v, err := k.NewStreamVerifier(sig, want)
		if err != nil {
			t.Fatal(err)
		}
		write(v, c.data, 64<<10)
		if _, err := v.Verify(); ReasonOf(err) != c.reason {
			t.Errorf("%s: %v, want %s", name, err, c.reason)
		}
	}
	if _, err := other.NewStreamVerifier(sig, want); ReasonOf(err) != UnknownKey {
		t.Errorf("unknown key: %v", err)
	}
	w2 := want
	w2.Version = "1.2.1"
	if _, err := k.NewStreamVerifier(sig, w2); ReasonOf(err) != Mismatch {
		t.Errorf("other version: %v", err)
	}
	w3 := want
	w3.SHA256 = hex.EncodeToString(make([]byte, 32))
	if _, err := k.NewStreamVerifier(sig, w3); ReasonOf(err) != Mismatch {
		t.Errorf("other checksum: %v", err)
	}
	if _, err := k.NewStreamVerifier(nil, want); ReasonOf(err) != Unsigned {
		t.Errorf("no signature: %v", err)
	}
	v, _ := k.NewStreamVerifier(sig, want)
	v.Close() // abandoned: no goroutine left
	if _, err := v.Write([]byte("x")); err == nil {
		t.Error("Write after Close accepted")
	}
}

const benchSize = 200 << 20

func benchFile(b *testing.B) []byte {
	data := make([]byte, benchSize)
	rand.Read(data)
	b.SetBytes(benchSize)
	return data
}

// BenchmarkSHA256_200MB is the baseline: the checksum a fetch computes over
// every byte it downloads anyway.
func BenchmarkSHA256_200MB(b *testing.B) {
	data := benchFile(b)
	for b.Loop() {
		h := sha256.New()
		for p := data; len(p) > 0; p = p[min(len(p), 1<<20):] {
			h.Write(p[:min(len(p), 1<<20)])
		}
		h.Sum(nil)
	}
}

// BenchmarkVerify200MB: Keyring.Verify reading the whole file again after
// the download (SHA-256 and BLAKE2b-512 over every byte, then Ed25519).
func BenchmarkVerify200MB(b *testing.B) {
	k, priv, _ := newKey(b)
	data := benchFile(b)
	sig, _, err := Sign(priv, bytes.NewReader(data), ident)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := k.Verify(bytes.NewReader(data), sig, ident); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSHA256WithStreamVerify200MB: the fetch's own SHA-256 with the
// stream verifier fed the same chunks (BLAKE2b on its own goroutine), as a
// download would; compare with BenchmarkSHA256_200MB for what it adds.
func BenchmarkSHA256WithStreamVerify200MB(b *testing.B) {
	k, priv, _ := newKey(b)
	data := benchFile(b)
	sig, signed, err := Sign(priv, bytes.NewReader(data), ident)
	if err != nil {
		b.Fatal(err)
	}
	want := ident
	want.SHA256, want.Size = signed.SHA256, signed.Size
	for b.Loop() {
		v, err := k.NewStreamVerifier(sig, want)
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		w := io.MultiWriter(h, v)
		for p := data; len(p) > 0; p = p[min(len(p), 1<<20):] {
			w.Write(p[:min(len(p), 1<<20)])
		}
		h.Sum(nil)
		if _, err := v.Verify(); err != nil {
			b.Fatal(err)
		}
	}
}
