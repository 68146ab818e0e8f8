package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/term"

	"github.com/sutragrid/sutra/internal/release"
)

// The release side of signed releases (issue 13): the offline signing key's
// commands. Nothing here talks to a master.

const releaseUsage = `Usage:
  sutra release keygen --out DIR [--no-password]
      make a release signing key pair: DIR/sutra-release.key (0600, minisign,
      encrypted with a password read twice from the terminal, or
      SUTRA_RELEASE_PASSWORD; --no-password writes it unencrypted) and
      DIR/sutra-release.pub. An existing key is never overwritten. Keep the
      .key offline; put the printed RW… line in every agent's
      [security] release_public_keys (agent-config.toml).
  sutra release sign --key KEY [--password-file FILE] BINARY...
      write BINARY.minisig beside each binary; BINARY must be named
      {artifact}-{version}-{platform}-{arch}[.exe], which the signature binds
      with the file's SHA-256 and size. The password comes from
      --password-file, SUTRA_RELEASE_PASSWORD or the terminal.
  sutra release sign --key KEY --as NAME [--signature SIG] FILE
  sutra release sign --key KEY --signature DIR/NAME.minisig FILE
      sign one FILE as the binary named NAME (a build output not yet renamed,
      as goreleaser's binary_signs do); the signature goes to SIG
      (default FILE.minisig).
  sutra release verify --pub PUB BINARY...
      check each BINARY against BINARY.minisig with the public key PUB (a .pub
      file or an RW… line; repeat --pub for several keys); prints OK or why
      per file, exits 1 if any fails.
`

// minPassword is the shortest password keygen accepts.
const minPassword = 8

func (c *cli) release(args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(c.stdout, releaseUsage)
		if len(args) == 0 {
			return usageErr("release: give keygen, sign or verify")
		}
		return nil
	}
	switch args[0] {
	case "keygen":
		return c.releaseKeygen(args[1:])
	case "sign":
		return c.releaseSign(args[1:])
	case "verify":
		return c.releaseVerify(args[1:])
	}
	return usageErr("release: unknown command %q (keygen, sign or verify)", args[0])
}

func (c *cli) env(k string) string {
	if c.getenv == nil {
		return ""
	}
	return c.getenv(k)
}

func (c *cli) releaseKeygen(args []string) error {
	fs := c.flagSet("release keygen")
	out := fs.String("out", "", "directory for sutra-release.key and sutra-release.pub")
	noPassword := fs.Bool("no-password", false, "write the private key unencrypted")
	pos, err := c.parse(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(c.stdout, releaseUsage)
		}
		return err
	}
	if err := noArgs("release keygen", pos); err != nil {
		return err
	}
	if *out == "" {
		return usageErr("release keygen: --out DIR is required")
	}
	password := ""
	if !*noPassword {
		password = c.env("SUTRA_RELEASE_PASSWORD")
		if password == "" {
			if password, err = c.promptNewPassword(); err != nil {
				return err
			}
		}
		if len(password) < minPassword {
			return usageErr("release keygen: the password must be at least %d characters (or use --no-password)", minPassword)
		}
	}
	pub, keyPath, pubPath, err := release.WriteKeyPair(*out, password)
	if err != nil {
		return err
	}
	enc := "encrypted with your password"
	if password == "" {
		enc = "NOT encrypted: keep it offline"
	}
	fmt.Fprintf(c.stdout, "private key: %s (%s)\npublic key:  %s\nkey id:      %s\n\n%s\n\n",
		keyPath, enc, pubPath, release.KeyID(pub.ID()), release.PublicKeyLine(pub))
	fmt.Fprintf(c.stdout, "Put that line in every agent's agent-config.toml:\n  [security]\n  release_public_keys = [%q]\n", release.PublicKeyLine(pub))
	return nil
}

func (c *cli) releaseSign(args []string) error {
	fs := c.flagSet("release sign")
	keyPath := fs.String("key", "", "the private key (sutra-release.key)")
	pwFile := fs.String("password-file", "", "file holding the key's password (first line)")
	as := fs.String("as", "", "sign the one FILE as the binary named NAME ({artifact}-{version}-{platform}-{arch}[.exe])")
	output := fs.String("signature", "", "where to write the one FILE's signature (default FILE.minisig); without --as its name NAME.minisig gives NAME")
	files, err := c.parse(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(c.stdout, releaseUsage)
		}
		return err
	}
	if *keyPath == "" {
		return usageErr("release sign: --key KEY is required")
	}
	if len(files) == 0 {
		return usageErr("release sign: name the binaries to sign")
	}
	if *output != "" && *as == "" {
		// The signature's own name says which binary it is for (goreleaser's
		// binary_signs name it {artifact}-{version}-{platform}-{arch}[.exe].minisig).
		base := filepath.Base(*output)
		if !strings.HasSuffix(base, release.SignatureSuffix) {
			return usageErr("release sign: --signature %s: without --as it must be named NAME%s", *output, release.SignatureSuffix)
		}
		*as = strings.TrimSuffix(base, release.SignatureSuffix)
	}
	if *as != "" && len(files) != 1 {
		return usageErr("release sign: --as and --signature name one binary, got %d files", len(files))
	}
	names := files
	if *as != "" {
		names = []string{*as}
	}
	// Check every name before asking for a password or signing anything.
	for _, n := range names {
		if _, err := release.IdentityOfFile(n); err != nil {
			return usageErr("release sign: %v", err)
		}
	}
	key, err := release.LoadPrivateKey(*keyPath, func() (string, error) {
		if *pwFile != "" {
			return readPasswordFile(*pwFile)
		}
		if pw := c.env("SUTRA_RELEASE_PASSWORD"); pw != "" {
			return pw, nil
		}
		return c.promptPassword("password for " + filepath.Base(*keyPath) + ": ")
	})
	if err != nil {
		return err
	}
	for _, f := range files {
		var (
			sigPath string
			id      release.Identity
		)
		if *as == "" {
			sigPath, id, err = release.SignFile(key, f)
		} else {
			out := *output
			if out == "" {
				out = f + release.SignatureSuffix
			}
			sigPath, id, err = release.SignFileAs(key, f, *as, out)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "%s: %s sha256:%s size:%d key %s\n", sigPath, id, id.SHA256, id.Size, release.KeyID(key.ID()))
	}
	return nil
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func (c *cli) releaseVerify(args []string) error {
	fs := c.flagSet("release verify")
	var pubs stringList
	fs.Var(&pubs, "pub", "public key: a .pub file or an RW… line (repeatable)")
	files, err := c.parse(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(c.stdout, releaseUsage)
		}
		return err
	}
	if len(pubs) == 0 {
		return usageErr("release verify: --pub PUB is required")
	}
	if len(files) == 0 {
		return usageErr("release verify: name the binaries to verify")
	}
	var texts []string
	for _, p := range pubs {
		if _, err := os.Stat(p); err != nil && strings.HasPrefix(p, "RW") {
			texts = append(texts, p) // not a file: a key line
			continue
		}
		_, line, err := release.ReadPublicKeyFile(p)
		if err != nil {
			return usageErr("release verify: --pub %s: %v", p, err)
		}
		texts = append(texts, line)
	}
	k, err := release.ParseKeys(texts)
	if err != nil {
		return usageErr("release verify: %v", err)
	}
	failed := 0
	for _, f := range files {
		id, err := release.VerifyFile(k, f)
		if err != nil {
			failed++
			fmt.Fprintf(c.stdout, "FAIL %s: %v\n", f, err)
			continue
		}
		fmt.Fprintf(c.stdout, "OK   %s: %s sha256:%s size:%d\n", f, id, id.SHA256, id.Size)
	}
	if failed > 0 {
		return &cliError{code: exitError, msg: fmt.Sprintf("%d of %d files failed verification", failed, len(files))}
	}
	return nil
}

func readPasswordFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	line, err := bufio.NewReader(io.LimitReader(f, 4096)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", fmt.Errorf("%s holds no password", path)
	}
	return pw, nil
}

// promptPassword reads a password from the terminal without echo.
func (c *cli) promptPassword(prompt string) (string, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", errors.New("no terminal to read the password from: set SUTRA_RELEASE_PASSWORD (or --password-file for sign)")
	}
	fmt.Fprint(c.stderr, prompt)
	pw, err := term.ReadPassword(fd)
	fmt.Fprintln(c.stderr)
	if err != nil {
		return "", err
	}
	return string(pw), nil
}

func (c *cli) promptNewPassword() (string, error) {
	pw, err := c.promptPassword("password for the new release key: ")
	if err != nil {
		return "", err
	}
	again, err := c.promptPassword("the same password again: ")
	if err != nil {
		return "", err
	}
	if pw != again {
		return "", errors.New("the two passwords differ")
	}
	return pw, nil
}
