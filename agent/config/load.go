package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/sutragrid/sutra/internal/smallfile"
)

// Env is what Parse needs from the machine. A nil field means "ask the OS";
// tests set every field to stay hermetic.
type Env struct {
	// Getenv reads an environment variable (default os.Getenv).
	Getenv func(string) string
	// Hostname returns the default agent_id (default os.Hostname).
	Hostname func() (string, error)
	// UserCacheDir returns the base of the default cache_dir (default os.UserCacheDir).
	UserCacheDir func() (string, error)
	// UserDataDir returns the base of the default data_path and agent_data_dir
	// (default UserDataDir in this package).
	UserDataDir func() (string, error)
	// HomeDir expands "~/" (default os.UserHomeDir).
	HomeDir func() (string, error)
}

func (e Env) withDefaults() Env {
	if e.Getenv == nil {
		e.Getenv = os.Getenv
	}
	if e.Hostname == nil {
		e.Hostname = os.Hostname
	}
	if e.UserCacheDir == nil {
		e.UserCacheDir = os.UserCacheDir
	}
	if e.UserDataDir == nil {
		e.UserDataDir = UserDataDir
	}
	if e.HomeDir == nil {
		e.HomeDir = os.UserHomeDir
	}
	return e
}

// Environment variables that override the file.
const (
	EnvMaster          = "SUTRA_MASTER"            // agent.master_host
	EnvAgentID         = "SUTRA_AGENT_ID"          // agent.agent_id
	EnvCacheDir        = "SUTRA_CACHE_DIR"         // agent.cache_dir
	EnvMasterBinaryURL = "SUTRA_MASTER_BINARY_URL" // storage.master_binary_url
	EnvJoinToken       = "SUTRA_JOIN_TOKEN"        // agent.join_token
)

// MaxConfigSize bounds agent-config.toml (a real one is a few KB).
const MaxConfigSize = 1 << 20

// Load reads, decodes and validates the file at path, with overrides from the
// process environment. A missing file is an error wrapping fs.ErrNotExist.
func Load(path string) (*Config, error) {
	data, err := smallfile.Read(path, MaxConfigSize) // a FIFO is refused, not waited on
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("config file %s not found (start from configs/agent-config.toml, or pass --config): %w", path, err)
		}
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, Env{})
}

// Defaults returns the configuration of an empty file with overrides from the
// process environment; it is what an agent uses without any config file.
func Defaults() (*Config, error) {
	return Parse("", nil, Env{})
}

// Parse decodes data (the contents of the file called name), applies the
// environment overrides and the defaults, and validates the result. Every
// problem is reported at once; each is a *Problem.
func Parse(name string, data []byte, env Env) (*Config, error) {
	env = env.withDefaults()
	cfg := defaults()
	d := &decoder{name: name, lines: map[string]int{}, envKeys: map[string]string{}}
	if name != "" {
		if abs, err := filepath.Abs(name); err == nil {
			cfg.Path = abs
		}
	}
	if err := d.decode(data, &cfg); err != nil {
		return nil, err
	}
	applyEnv(&cfg, d, env)
	fillDefaults(&cfg, d, env)
	d.validate(&cfg)
	if len(d.problems) > 0 {
		sort.SliceStable(d.problems, func(i, j int) bool {
			return lineOrMax(d.problems[i].Line) < lineOrMax(d.problems[j].Line)
		})
		errs := make([]error, len(d.problems))
		for i, p := range d.problems {
			errs[i] = p
		}
		return nil, errors.Join(errs...)
	}
	return &cfg, nil
}

func lineOrMax(l int) int {
	if l <= 0 {
		return int(^uint(0) >> 1)
	}
	return l
}

type decoder struct {
	name     string
	lines    map[string]int    // dotted key -> line in the file
	envKeys  map[string]string // dotted key -> env var that set it
	set      map[string]bool   // dotted keys present in the file
	problems []*Problem
}

func (d *decoder) problem(key, format string, args ...any) {
	name := d.name
	if name == "" {
		name = "config"
	}
	d.problems = append(d.problems, &Problem{
		File: name, Line: d.lines[key], Env: d.envKeys[key], Key: key,
		Msg: fmt.Sprintf(format, args...),
	})
}

// lineProbe always fails to decode, so that toml reports the position of the
// key it was asked to decode: the only way to learn a key's line from MetaData.
type lineProbe struct{}

var errProbe = errors.New("line probe")

func (lineProbe) UnmarshalTOML(any) error { return errProbe }

func lineOf(md *toml.MetaData, p toml.Primitive) int {
	var probe lineProbe
	var pe toml.ParseError
	if err := md.PrimitiveDecode(p, &probe); errors.As(err, &pe) {
		return pe.Position.Line
	}
	return 0
}

// section describes a known table: its struct and its fields by key.
type section struct {
	name   string
	fields map[string]reflect.Value
	keys   []string // accepted keys, in declaration order
}

func sectionOf(name string, ptr any) section {
	s := section{name: name, fields: map[string]reflect.Value{}}
	rv := reflect.ValueOf(ptr).Elem()
	for i := range rv.NumField() {
		tag := rv.Type().Field(i).Tag.Get("toml")
		if tag == "" || tag == "-" {
			continue
		}
		s.fields[tag] = rv.Field(i)
		s.keys = append(s.keys, tag)
	}
	return s
}

func (d *decoder) decode(data []byte, cfg *Config) error {
	d.set = map[string]bool{}
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return &Problem{File: d.name, Line: pe.Position.Line, Msg: "invalid TOML: " + pe.Message}
		}
		return &Problem{File: d.name, Msg: "invalid TOML: " + err.Error()}
	}
	sections := map[string]section{
		"agent":      sectionOf("agent", &cfg.Agent),
		"storage":    sectionOf("storage", &cfg.Storage),
		"monitoring": sectionOf("monitoring", &cfg.Monitoring),
		"logging":    sectionOf("logging", &cfg.Logging),
		"security":   sectionOf("security", &cfg.Security),
	}
	tables := map[string]map[string]toml.Primitive{}

	for _, k := range md.Keys() {
		key := k.String()
		switch len(k) {
		case 1:
			p := top[k[0]]
			d.lines[key] = lineOf(&md, p)
			if k[0] == "version" {
				d.set[key] = true
				d.decodeValue(&md, k, p, reflect.ValueOf(&cfg.Version).Elem())
				continue
			}
			if _, ok := sections[k[0]]; !ok {
				d.problem(key, "unknown key (accepted top-level keys: version, [agent], [storage], [monitoring], [logging], [security])")
				continue
			}
			var t map[string]toml.Primitive
			if typ := md.Type(k...); typ != "Hash" {
				d.problem(key, "wrong type: got %s, want a table ([%s])", typeName(typ), key)
				continue
			}
			if err := md.PrimitiveDecode(p, &t); err != nil {
				d.problem(key, "wrong type: got %s, want a table ([%s])", typeName(md.Type(k...)), key)
				continue
			}
			tables[k[0]] = t
		case 2:
			s, ok := sections[k[0]]
			t, isTable := tables[k[0]]
			if !ok || !isTable {
				continue // parent already reported
			}
			p := t[k[1]]
			d.lines[key] = lineOf(&md, p)
			field, ok := s.fields[k[1]]
			if !ok {
				d.problem(key, "unknown key (accepted in [%s]: %s)", s.name, strings.Join(s.keys, ", "))
				continue
			}
			d.set[key] = true
			d.decodeValue(&md, k, p, field)
		default:
			// Keys below agent.labels are decoded with the labels table;
			// anything else deeper sits under a key already reported.
		}
	}
	return nil
}

// decodeValue decodes one known key into its field, reporting a type mismatch
// with the key's line.
func (d *decoder) decodeValue(md *toml.MetaData, k toml.Key, p toml.Primitive, field reflect.Value) {
	key := k.String()
	got := md.Type(k...)
	want, ok := wantType(field.Type())
	if ok && got != want {
		d.problem(key, "wrong type: got %s, want %s", typeName(got), typeName(want))
		return
	}
	// Decode into a fresh value so that a failed decode leaves the default.
	tmp := reflect.New(field.Type())
	if err := md.PrimitiveDecode(p, tmp.Interface()); err != nil {
		msg := err.Error()
		var pe toml.ParseError
		if errors.As(err, &pe) {
			msg = pe.Message
		} else if i := strings.LastIndex(msg, "): "); i >= 0 {
			msg = msg[i+3:]
		}
		if field.Type() == reflect.TypeFor[map[string]string]() {
			msg = "want a table of strings, e.g. { zone = \"eu-1\" }"
		}
		d.problem(key, "%s", msg)
		return
	}
	field.Set(tmp.Elem())
}

func wantType(t reflect.Type) (string, bool) {
	switch t.Kind() {
	case reflect.String:
		return "String", true
	case reflect.Int:
		return "Integer", true
	case reflect.Bool:
		return "Bool", true
	case reflect.Pointer:
		return wantType(t.Elem())
	case reflect.Map:
		return "Hash", true
	case reflect.Slice:
		return "Array", true
	}
	return "", false
}

func typeName(t string) string {
	switch t {
	case "String":
		return "string"
	case "Integer":
		return "integer"
	case "Float":
		return "float"
	case "Bool":
		return "boolean"
	case "Datetime":
		return "datetime"
	case "Array":
		return "array"
	case "Hash":
		return "table"
	case "ArrayHash":
		return "array of tables"
	case "":
		return "nothing"
	}
	return strings.ToLower(t)
}
