package diagnose

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/sutragrid/sutra/agent/config"
)

// Redacted replaces a secret value.
const Redacted = "<redacted>"

// Setting is one key of the configuration in effect.
type Setting struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// ConfigReport is the configuration in effect, secrets redacted.
type ConfigReport struct {
	// File is the config file read ("" when built from defaults).
	File     string    `json:"file"`
	Settings []Setting `json:"settings"`
}

// IsSecretKey reports whether a config key (or label) name is token-,
// key-, password- or secret-like: its value is never shown. Public keys
// (release_public_keys) are not secret.
func IsSecretKey(name string) bool {
	n := strings.ToLower(name)
	if strings.Contains(n, "public") {
		return false
	}
	for _, w := range []string{"token", "password", "passwd", "passphrase", "secret", "key", "credential", "private", "auth"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// looksSecret reports whether a value is secret whatever its key: a join
// token or PEM private key material.
func looksSecret(v string) bool {
	return strings.Contains(v, "SUTRA1.") || strings.Contains(v, "PRIVATE KEY")
}

// RedactText returns s with every occurrence of every non-empty secret
// replaced by Redacted. The result never contains a secret: when the
// replacement itself would form one (a secret that overlaps the marker),
// the whole text is withheld.
func RedactText(s string, secrets []string) string {
	var live []string
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			live = append(live, sec)
		}
	}
	if len(live) == 0 {
		return s
	}
	// Mark every byte covered by an occurrence of any secret, then replace
	// each marked run by the marker: overlapping secrets are all covered.
	mask := make([]bool, len(s))
	for _, sec := range live {
		for i := 0; ; {
			j := strings.Index(s[i:], sec)
			if j < 0 {
				break
			}
			for k := i + j; k < i+j+len(sec); k++ {
				mask[k] = true
			}
			i += j + 1
		}
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if !mask[i] {
			b.WriteByte(s[i])
			i++
			continue
		}
		b.WriteString(Redacted)
		for i < len(s) && mask[i] {
			i++
		}
	}
	out := b.String()
	if !containsAny(out, secrets) {
		return out
	}
	if !containsAny(Redacted, secrets) {
		return Redacted
	}
	return ""
}

func containsAny(s string, secrets []string) bool {
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			return true
		}
	}
	return false
}

// knownSecrets collects the secret values of this agent: the join token
// (config, environment, join-token file), the private key and extra.
func knownSecrets(cfg *config.Config, extra []string) []string {
	var s []string
	add := func(v string) {
		v = strings.TrimSpace(v)
		if v != "" && !slices.Contains(s, v) {
			s = append(s, v)
		}
	}
	add(cfg.Agent.JoinToken)
	add(os.Getenv(config.EnvJoinToken))
	for _, e := range extra {
		add(e)
	}
	if b, err := readSmall(filepath.Join(cfg.Agent.AgentDataDir, joinTokenFile), 4096); err == nil {
		add(string(b))
	}
	if b, err := readSmall(filepath.Join(cfg.Agent.AgentDataDir, "tls", keyFile), 64<<10); err == nil {
		add(string(b))
		// Each line of the key's body too, so a fragment is caught.
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
				add(line)
			}
		}
	}
	// Longest first, so that a secret containing another is replaced whole.
	sort.SliceStable(s, func(i, j int) bool { return len(s[i]) > len(s[j]) })
	return s
}

// configReport flattens cfg into dotted keys, secrets redacted.
func configReport(cfg *config.Config, secrets []string) ConfigReport {
	rep := ConfigReport{File: cfg.Path}
	v := reflect.ValueOf(*cfg)
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := tomlName(f)
		if tag == "" {
			continue
		}
		fv := v.Field(i)
		if fv.Kind() != reflect.Struct {
			rep.Settings = append(rep.Settings, Setting{Key: tag, Value: redactValue(tag, fv, secrets)})
			continue
		}
		for j := 0; j < fv.NumField(); j++ {
			sf := fv.Type().Field(j)
			name := tomlName(sf)
			if name == "" {
				continue
			}
			key := tag + "." + name
			val := fv.Field(j)
			if val.Kind() == reflect.Map {
				keys := val.MapKeys()
				sort.Slice(keys, func(a, b int) bool { return keys[a].String() < keys[b].String() })
				if len(keys) == 0 {
					rep.Settings = append(rep.Settings, Setting{Key: key, Value: "{}"})
				}
				for _, k := range keys {
					mk := key + "." + k.String()
					value := redactValue(k.String(), val.MapIndex(k), secrets)
					rep.Settings = append(rep.Settings, Setting{Key: RedactText(mk, secrets), Value: value})
				}
				continue
			}
			rep.Settings = append(rep.Settings, Setting{Key: key, Value: redactValue(name, val, secrets)})
		}
	}
	return rep
}

func tomlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if tag == "-" {
		return ""
	}
	return tag
}

// redactValue formats v, or Redacted when its key is secret-like or the
// value looks like a secret; an empty secret shows as "" (unset).
func redactValue(name string, v reflect.Value, secrets []string) string {
	s := formatValue(v)
	if IsSecretKey(name) {
		if s == `""` || s == "[]" || s == "(unset)" {
			return s
		}
		return Redacted
	}
	if looksSecret(s) {
		return Redacted
	}
	return RedactText(s, secrets)
}

func formatValue(v reflect.Value) string {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return "(unset)"
		}
		return formatValue(v.Elem())
	case reflect.String:
		return fmt.Sprintf("%q", v.String())
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = formatValue(v.Index(i))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return fmt.Sprint(v.Interface())
}
