package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sutragrid/sutra/internal/opauth"
	"github.com/sutragrid/sutra/internal/retryinfo"
	gridv1 "github.com/sutragrid/sutra/proto/grid/v1"
)

// Exit codes, documented in usage.
const (
	exitOK           = 0
	exitError        = 1
	exitUsage        = 2
	exitNotFound     = 3
	exitUnavailable  = 4
	exitUnauthorized = 5
)

const usage = `Usage: sutra [global flags] <command> [flags] [args]

Commands:
  status                      cluster health, agent and node counts
  agents [ID]                 list agents (every page), or show one
  agents rm ID [--force]      remove an agent and its node records; refused
                              for a healthy or degraded agent unless --force
                              (a running agent registers again on its next
                              heartbeat: stop sutra-agent first)
  agents revoke ID [--reason TEXT]
                              revoke the agent's certificates at once: its
                              calls are refused, its streams closed, its
                              nodes left running; shown as "revoked"
  agents unrevoke ID          lift a revocation; the agent must enroll again
                              with a new join token (its old certificates
                              stay refused)
  agents pin ID [--storage-server V] [--agent V]
                              pin the agent to exact versions: set-version for
                              it is refused, for every agent and rollouts skip it
  agents unpin ID [--storage-server|--agent]
                              lift its pins (both unless one is named)
  agents set-version [ID] [--storage-server V] [--agent V]
                              set the storage-server and/or sutra-agent version
                              one agent (without ID: every agent, and agents
                              registering later) should run; V is a version
                              like 1.2.3 or "latest"; agents replace their
                              nodes one at a time and update themselves
  nodes [--agent ID]          list storage nodes (every page)
  nodes spawn [--agent ID] [--node-id ID] [--port N] [--wait]
                              ask for a new storage node (placed by the master
                              on the healthy agent with most free capacity
                              unless --agent is given)
  nodes stop ID [--wait]      stop a storage node (its data is kept)
  binaries                    storage-server binaries the master distributes
  binaries yank VERSION [--artifact A] [--rollback]
                              yank a version: never "latest", never a rollout
                              target; lists the agents running it; --rollback
                              moves them to the previous unyanked version
  binaries unyank VERSION [--artifact A]
                              lift a yank
  rollouts [ID]               fleet rollouts (a table; one rollout with its agents)
  rollouts start --version V [--artifact storage-server|sutra-agent]
        [--agents ID,… | --selector key=value,…] [--canary N]
        [--waves 10,50,100] [--max-parallel N] [--rollback-parallel N]
        [--soak 60s] [--healthy-deadline 5m] [--progress-deadline 30m]
        [--max-failures N | --max-failure-ratio 0.1]
        [--on-failure pause|rollback] [--dry-run]
                              roll a version out canary first, then in waves,
                              gated on health; prints the rollout id
  rollouts pause|resume|abort|rollback|retry ID
                              act on a rollout (rollback: every changed agent
                              back to its previous version, no canary/soak)
  events [-f] [--since N] [-n N]
                              the fleet's event log; -f follows new events
  version                     versions of this CLI and of the master
  tokens                      list join tokens (never their secrets)
  tokens create [--ttl 24h] [--uses 1] [--label k=v ...]
                              make a join token for enrolling agents; it is
                              printed once (sutra-agent run --join-token ...)
  tokens rm ID                remove a join token
  release keygen|sign|verify  the offline release signing key: make a key
                              pair, sign binaries (FILE.minisig), check
                              signatures ('sutra release help')

Global flags (also accepted after the command):
  --master HOST:PORT   master gRPC address (env SUTRA_MASTER, default localhost:7000)
  --http URL           master HTTP API (env SUTRA_HTTP, default http://<master host>:7001);
                       https://… (sutra-master --http-tls) verifies the master
                       with --ca-cert and sends the operator token
  -o, --output FORMAT  table (default) or json
  --timeout DURATION   per-request timeout (default 10s)
  --token TOKEN        operator token (env SUTRA_TOKEN; default: the master's
                       <data dir>/admin.token when run on the master host)
  --ca-cert FILE       the master's CA certificate (env SUTRA_CACERT; default:
                       <data dir>/tls/ca.crt); the data dir is SUTRA_DATA_DIR
                       or ./data

Exit codes:
  0  success
  1  error (request rejected, node failed, wait timed out, ...)
  2  usage error (unknown command or flag, bad argument)
  3  not found (unknown agent or node)
  4  master unreachable or unavailable, or rate limiting this client
     (the message says when to retry)
  5  unauthorized (no or wrong operator token, or the master's certificate
     is not signed by the CA given)
`

// cliError carries an exit code and a one-line message.
type cliError struct {
	code int
	msg  string
}

func (e *cliError) Error() string { return e.msg }

func usageErr(format string, args ...any) error {
	return &cliError{code: exitUsage, msg: fmt.Sprintf(format, args...) + " (run 'sutra help')"}
}

// globals are the flags every command accepts.
type globals struct {
	master  string
	http    string
	output  string
	timeout time.Duration
	token   string
	caCert  string
	dataDir string
}

type cli struct {
	g      globals
	stdout io.Writer
	stderr io.Writer
	conn   *grpc.ClientConn
	grid   gridv1.GridMasterClient
	getenv func(string) string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	c := &cli{stdout: stdout, stderr: stderr, getenv: getenv}
	c.g.master = getenv("SUTRA_MASTER")
	if c.g.master == "" {
		c.g.master = "localhost:7000"
	}
	c.g.http = getenv("SUTRA_HTTP")
	c.g.token = getenv("SUTRA_TOKEN")
	c.g.caCert = getenv("SUTRA_CACERT")
	c.g.dataDir = getenv("SUTRA_DATA_DIR")
	if c.g.dataDir == "" {
		c.g.dataDir = "data"
	}
	c.g.output = "table"
	c.g.timeout = 10 * time.Second

	err := c.dispatch(ctx, args)
	if c.conn != nil {
		_ = c.conn.Close()
	}
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	var ce *cliError
	if !errors.As(err, &ce) {
		ce = &cliError{code: exitError, msg: err.Error()}
	}
	fmt.Fprintln(stderr, "sutra: "+strings.ReplaceAll(ce.msg, "\n", " "))
	return ce.code
}

// flagSet returns a FlagSet holding the global flags plus the command's.
func (c *cli) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.g.master, "master", c.g.master, "master gRPC address")
	fs.StringVar(&c.g.http, "http", c.g.http, "master HTTP API URL")
	fs.StringVar(&c.g.output, "o", c.g.output, "output format: table or json")
	fs.StringVar(&c.g.output, "output", c.g.output, "output format: table or json")
	fs.DurationVar(&c.g.timeout, "timeout", c.g.timeout, "per-request timeout")
	fs.StringVar(&c.g.token, "token", c.g.token, "operator token")
	fs.StringVar(&c.g.caCert, "ca-cert", c.g.caCert, "the master's CA certificate file")
	return fs
}

// parse parses flags anywhere among the positional arguments.
func (c *cli) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageErr("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	switch c.g.output {
	case "table", "json":
	default:
		return nil, usageErr("output format %q is not supported: use -o table or -o json", c.g.output)
	}
	if c.g.timeout <= 0 {
		return nil, usageErr("--timeout must be positive")
	}
	return pos, nil
}

func (c *cli) dispatch(ctx context.Context, args []string) error {
	fs := c.flagSet("sutra")
	// Global flags before the command.
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(c.stdout, usage)
			return flag.ErrHelp
		}
		return usageErr("%v", err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(c.stderr, usage)
		return &cliError{code: exitUsage, msg: "no command given (run 'sutra help')"}
	}
	cmd, rest := rest[0], rest[1:]
	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprint(c.stdout, usage)
		return nil
	case "status":
		return c.status(ctx, rest)
	case "agents":
		if len(rest) > 0 && rest[0] == "set-version" {
			return c.setVersion(ctx, rest[1:])
		}
		if len(rest) > 0 && rest[0] == "rm" {
			return c.removeAgent(ctx, rest[1:])
		}
		if len(rest) > 0 && rest[0] == "revoke" {
			return c.revokeAgent(ctx, rest[1:])
		}
		if len(rest) > 0 && rest[0] == "unrevoke" {
			return c.unrevokeAgent(ctx, rest[1:])
		}
		if len(rest) > 0 && rest[0] == "pin" {
			return c.pinAgent(ctx, rest[1:])
		}
		if len(rest) > 0 && rest[0] == "unpin" {
			return c.unpinAgent(ctx, rest[1:])
		}
		return c.agents(ctx, rest)
	case "nodes":
		if len(rest) > 0 {
			switch rest[0] {
			case "spawn":
				return c.spawn(ctx, rest[1:])
			case "stop":
				return c.stop(ctx, rest[1:])
			}
		}
		return c.nodes(ctx, rest)
	case "binaries":
		if len(rest) > 0 && rest[0] == "yank" {
			return c.yank(ctx, rest[1:])
		}
		if len(rest) > 0 && rest[0] == "unyank" {
			return c.unyank(ctx, rest[1:])
		}
		return c.binaries(ctx, rest)
	case "release":
		return c.release(rest)
	case "rollouts":
		return c.rollouts(ctx, rest)
	case "events":
		return c.events(ctx, rest)
	case "version":
		return c.version(ctx, rest)
	case "tokens":
		if len(rest) > 0 {
			switch rest[0] {
			case "create":
				return c.createToken(ctx, rest[1:])
			case "rm":
				return c.removeToken(ctx, rest[1:])
			}
		}
		return c.tokens(ctx, rest)
	}
	return usageErr("unknown command %q", cmd)
}

// client dials the master lazily (grpc.NewClient does not connect).
func (c *cli) client() (gridv1.GridMasterClient, error) {
	if c.grid != nil {
		return c.grid, nil
	}
	if _, _, err := net.SplitHostPort(c.g.master); err != nil {
		return nil, usageErr("master address %q is not host:port: set --master or SUTRA_MASTER", c.g.master)
	}
	creds, err := c.credentials()
	if err != nil {
		return nil, err
	}
	conn, err := creds.Dial(c.g.master)
	if err != nil {
		return nil, usageErr("master address %q: %v", c.g.master, err)
	}
	c.conn, c.grid = conn, gridv1.NewGridMasterClient(conn)
	return c.grid, nil
}

// hintAuth says where the operator's credentials come from.
const hintAuth = "set --token/SUTRA_TOKEN and --ca-cert/SUTRA_CACERT, or run sutra in the master's directory (it reads data/admin.token and data/tls/ca.crt, or those in SUTRA_DATA_DIR)"

// credentials are the operator token and the master's CA: the flags or
// environment, else the files in the master's data dir.
func (c *cli) credentials() (opauth.Credentials, error) {
	var creds opauth.Credentials
	caPath := c.g.caCert
	if caPath == "" {
		caPath = filepath.Join(c.g.dataDir, filepath.FromSlash(opauth.CAFile))
	}
	roots, err := opauth.ReadCA(caPath)
	if err != nil {
		return creds, &cliError{code: exitUnauthorized, msg: fmt.Sprintf("no CA certificate to verify the master with (%v): %s", err, hintAuth)}
	}
	creds.Roots = roots
	creds.Token = c.g.token
	if creds.Token == "" {
		tok, err := opauth.ReadToken(filepath.Join(c.g.dataDir, opauth.TokenFile))
		if err != nil {
			return creds, &cliError{code: exitUnauthorized, msg: fmt.Sprintf("no operator token (%v): %s", err, hintAuth)}
		}
		creds.Token = tok
	}
	return creds, nil
}

// call runs one RPC with the request timeout.
func (c *cli) call(ctx context.Context, fn func(ctx context.Context, g gridv1.GridMasterClient) error) error {
	g, err := c.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.g.timeout)
	defer cancel()
	return c.rpcErr(fn(ctx, g))
}

// rpcErr turns a gRPC error into a one-line CLI error with an exit code.
func (c *cli) rpcErr(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unauthenticated, codes.PermissionDenied:
		return &cliError{code: exitUnauthorized, msg: fmt.Sprintf("unauthorized: %s (%s)", st.Message(), hintAuth)}
	case codes.Unavailable:
		if m := st.Message(); strings.Contains(m, "certificate") || strings.Contains(m, "handshake") {
			return &cliError{code: exitUnauthorized, msg: fmt.Sprintf("the master at %s is not the one the CA certificate names (%s): check --ca-cert/SUTRA_CACERT", c.g.master, m)}
		}
		if m := st.Message(); strings.Contains(m, "connection") || strings.Contains(m, "dial") || strings.Contains(m, "transport") || strings.Contains(m, "resolver") {
			return &cliError{code: exitUnavailable, msg: fmt.Sprintf("cannot reach master at %s: is sutra-master running? (set --master or SUTRA_MASTER)", c.g.master)}
		}
		return &cliError{code: exitUnavailable, msg: fmt.Sprintf("master at %s is unavailable: %s", c.g.master, st.Message())}
	case codes.DeadlineExceeded:
		return &cliError{code: exitUnavailable, msg: fmt.Sprintf("master at %s did not answer within %s: is it overloaded or unreachable? (raise --timeout, check --master)", c.g.master, c.g.timeout)}
	case codes.Canceled:
		return &cliError{code: exitError, msg: "interrupted"}
	case codes.NotFound:
		return &cliError{code: exitNotFound, msg: st.Message()}
	case codes.InvalidArgument:
		return &cliError{code: exitUsage, msg: st.Message()}
	case codes.Unimplemented:
		return &cliError{code: exitError, msg: fmt.Sprintf("the master at %s does not support this request (%s): upgrade sutra-master", c.g.master, st.Message())}
	case codes.ResourceExhausted:
		if d, ok := retryinfo.Requested(err); ok {
			why, _, _ := strings.Cut(st.Message(), "; retry in ")
			return &cliError{code: exitUnavailable, msg: fmt.Sprintf("the master at %s is rate limiting this client: retry in %s (%s)", c.g.master, retryinfo.Round(d), why)}
		}
	}
	return &cliError{code: exitError, msg: st.Message()}
}

func noArgs(cmd string, pos []string) error {
	if len(pos) > 0 {
		return usageErr("%s takes no arguments, got %q", cmd, strings.Join(pos, " "))
	}
	return nil
}
