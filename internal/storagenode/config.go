package storagenode

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Defaults of the storage-server command line.
const (
	DefaultPort    = 8080
	DefaultBind    = "0.0.0.0"
	DefaultDataDir = "data"
)

// Environment variables read by ParseConfig. Flags win over them.
const (
	EnvPort    = "STORAGE_PORT"
	EnvDataDir = "STORAGE_PATH"
	EnvNodeID  = "NODE_ID"
	EnvBind    = "STORAGE_BIND"
	// EnvRequestTimeout bounds reading one request, body included (Options.RequestTimeout).
	EnvRequestTimeout = "STORAGE_REQUEST_TIMEOUT"
	// EnvFailHealth=1 makes /healthz answer 503 forever (hidden test knob).
	EnvFailHealth = "STORAGE_SERVER_FAIL_HEALTH"
	// EnvCrashAfter=<duration> makes the process exit with status 3 after
	// that long (hidden test knob for supervisors).
	EnvCrashAfter = "STORAGE_SERVER_CRASH_AFTER"
)

// Config is the storage-server command line after flags and environment.
type Config struct {
	Bind        string
	Port        int
	DataDir     string
	NodeID      string
	ShowVersion bool
	FailHealth  bool
	CrashAfter  time.Duration
	// RequestTimeout is Options.RequestTimeout (zero: its default).
	RequestTimeout time.Duration
}

// Addr is the listen address host:port.
func (c Config) Addr() string { return net.JoinHostPort(c.Bind, strconv.Itoa(c.Port)) }

// ErrHelp is returned when -h/--help was asked for (usage already printed).
var ErrHelp = flag.ErrHelp

// ParseConfig reads flags from args (without the program name) and the
// environment through getenv; a flag given on the command line wins over its
// environment variable, which wins over the default. Every problem is
// reported at once.
func ParseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var errs []error
	c := Config{Bind: DefaultBind, Port: DefaultPort, DataDir: DefaultDataDir}
	if h, err := os.Hostname(); err == nil && h != "" {
		c.NodeID = h
	} else {
		c.NodeID = "storage-node"
	}
	if v := getenv(EnvPort); v != "" {
		p, err := parsePort(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvPort, err))
		}
		c.Port = p
	}
	if v := getenv(EnvDataDir); v != "" {
		c.DataDir = v
	}
	if v := getenv(EnvNodeID); v != "" {
		c.NodeID = v
	}
	if v := getenv(EnvBind); v != "" {
		c.Bind = v
	}
	if v := getenv(EnvFailHealth); v != "" && v != "0" && v != "false" {
		c.FailHealth = true
	}
	if v := getenv(EnvCrashAfter); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s=%q: want a positive duration such as 2s", EnvCrashAfter, v))
		}
		c.CrashAfter = d
	}

	requestTimeout := ""
	if v := getenv(EnvRequestTimeout); v != "" {
		requestTimeout = v
	}

	fs := flag.NewFlagSet("storage-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&requestTimeout, "request-timeout", requestTimeout,
		"longest time to receive one request, body included, before answering 408 (env "+EnvRequestTimeout+", default "+DefaultRequestTimeout.String()+")")
	port := fs.String("port", strconv.Itoa(c.Port), "TCP port to listen on (env "+EnvPort+")")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory of the database (env "+EnvDataDir+")")
	fs.StringVar(&c.NodeID, "node-id", c.NodeID, "node id reported by /healthz (env "+EnvNodeID+")")
	fs.StringVar(&c.Bind, "bind", c.Bind, "address to listen on (env "+EnvBind+")")
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: storage-server [--port N] [--data-dir DIR] [--node-id ID] [--bind ADDR] [--request-timeout D] [--version]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q (flags only; see --help)", fs.Args()))
	}
	portSet := false
	fs.Visit(func(f *flag.Flag) { portSet = portSet || f.Name == "port" })
	if portSet {
		p, err := parsePort(*port)
		if err != nil {
			errs = append(errs, fmt.Errorf("--port: %w", err))
		}
		c.Port = p
	}
	if requestTimeout != "" {
		d, err := time.ParseDuration(requestTimeout)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("request timeout %q (--request-timeout or %s): want a positive duration such as 30s", requestTimeout, EnvRequestTimeout))
		}
		c.RequestTimeout = d
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is empty (set --data-dir or "+EnvDataDir+")"))
	}
	if strings.TrimSpace(c.NodeID) == "" {
		errs = append(errs, errors.New("node id is empty (set --node-id or "+EnvNodeID+")"))
	}
	return c, errors.Join(errs...)
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || p < 0 || p > 65535 {
		return 0, fmt.Errorf("port %q: want a number from 0 to 65535", s)
	}
	return p, nil
}
