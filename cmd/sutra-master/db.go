package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"

	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/master"
	"github.com/sutragrid/sutra/master/store"
)

// dbCommands are the subcommands that work on the fleet database.
var dbCommands = map[string]string{
	"backup":    "backup FILE: write a consistent copy of grid.db to FILE (asks the running master, or copies the file when no master runs)",
	"restore":   "restore FILE: replace grid.db with the backup FILE (master stopped; the old file is kept as grid.db.<time>.old)",
	"reset-db":  "reset-db: move grid.db aside so that the next start begins an empty fleet (master stopped)",
	"accept-db": "accept-db: accept a grid.db that is older than the last state this data dir saw (put back on purpose)",
}

// runDB runs one of dbCommands.
func runDB(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("sutra-master "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "data directory holding grid.db (env SUTRA_DATA_DIR, default "+master.DefaultDataDir+")")
	var masterURL, httpPort *string
	if cmd == "backup" {
		httpPort = fs.String("http-port", "", "HTTP port of the running master (env HTTP_PORT, default "+strconv.Itoa(master.DefaultHTTPPort)+")")
		masterURL = fs.String("master", "", "URL of the running master's HTTP API (default http://127.0.0.1:HTTP_PORT); it must be on this host")
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sutra-master %s\n\n", dbCommands[cmd])
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	wantArgs := 0
	if cmd == "backup" || cmd == "restore" {
		wantArgs = 1
	}
	if fs.NArg() != wantArgs {
		fs.Usage()
		return errUsage
	}
	pick := func(v, env, def string) string {
		if v != "" {
			return v
		}
		if e := getenv(env); e != "" {
			return e
		}
		return def
	}
	dir := pick(*dataDir, "SUTRA_DATA_DIR", master.DefaultDataDir)
	opts := store.Options{Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	switch cmd {
	case "backup":
		url := *masterURL
		if url == "" {
			url = "http://127.0.0.1:" + pick(*httpPort, "HTTP_PORT", strconv.Itoa(master.DefaultHTTPPort))
		}
		return backup(ctx, filepath.Join(dir, store.FileName), url, fs.Arg(0), stdout)
	case "restore":
		info, moved, err := store.Restore(dir, fs.Arg(0), opts)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "restored %s into %s (%d bytes, transaction %d)\n", fs.Arg(0), filepath.Join(dir, store.FileName), info.Size, info.TxID)
		if moved != "" {
			fmt.Fprintf(stdout, "the previous database is kept as %s\n", moved)
		}
	case "reset-db":
		moved, err := store.Reset(dir)
		if err != nil {
			return err
		}
		if moved != "" {
			fmt.Fprintf(stdout, "moved the fleet database to %s\n", moved)
		}
		fmt.Fprintf(stdout, "the next start of sutra-master on %s begins an empty fleet\n", dir)
	case "accept-db":
		if err := store.Accept(dir, opts); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "accepted %s as this data directory's fleet database\n", filepath.Join(dir, store.FileName))
	}
	return nil
}

// backup copies the database offline when no master holds it, and asks the
// running master for a consistent copy otherwise.
func backup(ctx context.Context, dbPath, url, dst string, stdout io.Writer) error {
	_, statErr := os.Stat(dbPath)
	if statErr == nil {
		info, err := store.BackupFile(dbPath, dst)
		if err == nil {
			fmt.Fprintf(stdout, "backup written to %s (%d bytes, transaction %d; copied from %s, no master running)\n", dst, info.Size, info.TxID, dbPath)
			return nil
		}
		if !errors.Is(err, store.ErrLocked) {
			return err
		}
	}
	info, err := store.SaveBackup(dst, func(w io.Writer) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+store.BackupPath, nil)
		if err != nil {
			return err
		}
		// The backup route needs the operator token, which the master
		// keeps next to its database.
		if tok, err := opauth.ReadToken(filepath.Join(filepath.Dir(dbPath), opauth.TokenFile)); err == nil {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			if statErr != nil {
				return fmt.Errorf("no master answers (%w) and there is no %s: set --data-dir or --master", err, dbPath)
			}
			return fmt.Errorf("ask the running master: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			var e struct{ Error string }
			_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
			return fmt.Errorf("master at %s answered %s: %s", url, resp.Status, e.Error)
		}
		n, err := io.Copy(w, resp.Body)
		if err != nil {
			return fmt.Errorf("download from %s: %w", url, err)
		}
		if resp.ContentLength >= 0 && n != resp.ContentLength {
			return fmt.Errorf("download from %s: got %d of %d bytes", url, n, resp.ContentLength)
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backup written to %s (%d bytes, transaction %d; from the master at %s)\n", dst, info.Size, info.TxID, url)
	return nil
}
