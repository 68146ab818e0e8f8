package binpeers

import (
	"reflect"
	"strings"
	"testing"
)

const fuzzSum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// FuzzDecodeRecord: a stored record is other masters' data; whatever the
// table holds, decoding never panics, and what it accepts is within the
// limits and survives a round trip.
func FuzzDecodeRecord(f *testing.F) {
	for _, s := range []string{
		`{"sha256":"` + fuzzSum + `","size":12,"http_url":"https://m1.example:7001","at":"2026-11-30T00:00:00Z"}`,
		`{"sha256":"` + fuzzSum + `","size":12,"http_url":"","at":"2026-11-30T00:00:00Z"}`,
		`{"sha256":"` + strings.ToUpper(fuzzSum) + `","size":12}`,
		`{"sha256":"` + fuzzSum + `","size":-1}`,
		`{"sha256":"` + fuzzSum + `","size":1e400}`,
		`{"sha256":"` + fuzzSum + `","size":12,"http_url":"javascript:alert(1)"}`,
		`{"sha256":"` + fuzzSum + `","size":12,"http_url":"http://user:pw@evil/"}`,
		`{"sha256":"` + fuzzSum + `","size":12,"http_url":"http://evil/?next=x"}`,
		`{"sha256":"` + fuzzSum + `","size":12,"http_url":"//evil"}`,
		`{"sha256":"` + fuzzSum + `","size":12,"http_url":"http://a\\b"}`,
		`{"sha256":"` + fuzzSum + `","size":12,"extra":1}`,
		`{"sha256":"` + fuzzSum + `","size":12}{}`,
		`null`, `[]`, `"x"`, ``, `{`, strings.Repeat(`[`, 10000),
		`{"sha256":"` + fuzzSum + `","size":12,"at":"not a time"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRecord(data)
		if err != nil {
			if r != (Record{}) {
				t.Fatalf("DecodeRecord error %v with a non-zero record %+v", err, r)
			}
			return
		}
		if !isHexSHA256(r.SHA256) || r.Size < 1 || r.Size > MaxSize || (r.HTTPURL != "" && ValidURL(r.HTTPURL) != nil) {
			t.Fatalf("DecodeRecord(%q) accepted %+v", data, r)
		}
		again, err := DecodeRecord(encode(r))
		if err != nil || !again.At.Equal(r.At) || again.SHA256 != r.SHA256 || again.Size != r.Size || again.HTTPURL != r.HTTPURL {
			t.Fatalf("round trip of %+v = %+v, %v", r, again, err)
		}
	})
}

// FuzzDecodeClaim: the same for a name's claim, and for the keys.
func FuzzDecodeClaim(f *testing.F) {
	for _, s := range []string{
		`{"sha256":"` + fuzzSum + `","size":3,"masters":["a","b"]}`,
		`{"sha256":"` + fuzzSum + `","size":3,"masters":["b","a"]}`,
		`{"sha256":"` + fuzzSum + `","size":3,"masters":["a","a"]}`,
		`{"sha256":"` + fuzzSum + `","size":3,"masters":["a/b"]}`,
		`{"sha256":"` + fuzzSum + `","size":3,"masters":[""]}`,
		`{"sha256":"` + fuzzSum + `","size":3,"masters":null}`,
		`{"sha256":"` + fuzzSum + `","size":3,"masters":[` + strings.Repeat(`"x",`, 100) + `"y"]}`,
	} {
		f.Add([]byte(s), []byte("storage-server-1.2.0-linux-x86_64/a"))
	}
	f.Add([]byte(`{}`), []byte("../../etc/passwd"))
	f.Add([]byte(`{}`), []byte("storage-server-1.2.0-linux-x86_64/"))
	f.Add([]byte(`{}`), []byte("storage-server-1.2.0-linux-x86_64/a\x00b"))
	f.Fuzz(func(t *testing.T, data, key []byte) {
		c, err := DecodeClaim(data)
		if err == nil {
			if !isHexSHA256(c.SHA256) || c.Size < 1 || len(c.Masters) > MaxMasters {
				t.Fatalf("DecodeClaim(%q) accepted %+v", data, c)
			}
			again, err := DecodeClaim(encode(c))
			if err != nil || !reflect.DeepEqual(again.Masters, c.Masters) && len(c.Masters) > 0 {
				t.Fatalf("round trip of %+v = %+v, %v", c, again, err)
			}
		}
		name, id, err := splitKey(key)
		if err != nil {
			return
		}
		if strings.ContainsAny(name, "/\\\x00") || strings.Contains(id, "/") {
			t.Fatalf("splitKey(%q) = %q, %q", key, name, id)
		}
		want := name
		if id != "" {
			want += "/" + id
		}
		if want != string(key) {
			t.Fatalf("splitKey(%q) = %q, %q: does not rebuild the key", key, name, id)
		}
	})
}
