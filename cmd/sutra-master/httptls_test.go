package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

// --private-downloads (flag or SUTRA_PRIVATE_DOWNLOADS) without --http-tls
// is refused with one line before anything starts; the two flags are in
// --help with their environment variables.
func TestPrivateDownloadsNeedHTTPTLS(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--private-downloads"}, nil, "--private-downloads needs --http-tls"},
		{nil, map[string]string{"SUTRA_PRIVATE_DOWNLOADS": "1"}, "SUTRA_PRIVATE_DOWNLOADS needs --http-tls"},
		{[]string{"--http-tls=maybe"}, nil, `--http-tls="maybe": want true or false`},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), append(c.args, "--data-dir", t.TempDir()), &out, &errb, env(c.env))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v %v: err = %v, want one line with %q", c.args, c.env, err, c.want)
		}
	}
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out, &errb, env(nil)); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	for _, want := range []string{"--http-tls [=BOOL]", "env SUTRA_HTTP_TLS", "--private-downloads [=BOOL]", "env SUTRA_PRIVATE_DOWNLOADS"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}
