// Package config reads HARU_* settings from the environment into typed values, collecting
// every bad value into one error, and prints the resulting configuration with secrets
// masked.
package config

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"reflect"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Env reads typed settings through a getenv function (os.Getenv in main, a map in tests)
// and remembers every parse error, so a bad install is told all its mistakes at once.
type Env struct {
	getenv func(string) string
	errs   []error
}

// NewEnv returns an Env reading through getenv.
func NewEnv(getenv func(string) string) *Env { return &Env{getenv: getenv} }

// Err returns every parse error seen so far, joined, or nil.
func (e *Env) Err() error { return errors.Join(e.errs...) }

func (e *Env) lookup(key string) (string, bool) {
	v := strings.TrimSpace(e.getenv(key))
	return v, v != ""
}

// String returns the value of key, or def when it is unset or blank.
func (e *Env) String(key, def string) string {
	if v, ok := e.lookup(key); ok {
		return v
	}
	return def
}

// Int returns the integer value of key, or def.
func (e *Env) Int(key string, def int) int {
	v, ok := e.lookup(key)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s=%q: not an integer", key, v))
		return def
	}
	return n
}

// Int64 returns the 64-bit integer value of key, or def. It accepts a size suffix
// (KB, MB, GB, KiB, MiB, GiB) so byte limits read naturally.
func (e *Env) Int64(key string, def int64) int64 {
	v, ok := e.lookup(key)
	if !ok {
		return def
	}
	n, err := ParseSize(v)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s=%q: %w", key, v, err))
		return def
	}
	return n
}

// Bool returns the boolean value of key, or def.
func (e *Env) Bool(key string, def bool) bool {
	v, ok := e.lookup(key)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s=%q: not a boolean", key, v))
		return def
	}
	return b
}

// Duration returns the duration value of key (Go syntax: 200ms, 30s, 5m), or def.
func (e *Env) Duration(key string, def time.Duration) time.Duration {
	v, ok := e.lookup(key)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s=%q: not a duration", key, v))
		return def
	}
	return d
}

// List returns the comma-separated values of key, trimmed and without empties, or def.
func (e *Env) List(key string, def []string) []string {
	v, ok := e.lookup(key)
	if !ok {
		return def
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// ParseSize parses a byte count with an optional KB/MB/GB (powers of 1000) or
// KiB/MiB/GiB (powers of 1024) suffix.
func ParseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("not a size")
	}
	if n > math.MaxInt64/mult {
		return 0, errors.New("size too large")
	}
	return n * mult, nil
}

// Print writes cfg, a struct, one "name: value" line per field in a stable order, nested
// structs flattened as "Outer.Inner". Fields tagged `secret:"true"` print as "***"; URLs
// print with their password masked.
func Print(w io.Writer, title string, cfg any) {
	var lines []string
	flatten(reflect.Indirect(reflect.ValueOf(cfg)), "", &lines)
	sort.Strings(lines)
	fmt.Fprintf(w, "%s config:\n%s\n", title, strings.Join(lines, "\n"))
}

func flatten(v reflect.Value, prefix string, lines *[]string) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeOf(time.Time{}) {
			flatten(fv, prefix+f.Name+".", lines)
			continue
		}
		val := fmt.Sprint(fv.Interface())
		switch {
		case f.Tag.Get("secret") == "true" && val != "":
			val = "***"
		case strings.Contains(val, "://"):
			val = MaskURL(val)
		}
		*lines = append(*lines, fmt.Sprintf("  %s%s: %s", prefix, f.Name, val))
	}
}

// MaskURL hides the password of a URL such as a database DSN.
// A list of URLs (NATS servers) is masked URL by URL; a password given as a query
// parameter is masked too, and a URL that does not parse prints as *** whole.
func MaskURL(raw string) string {
	if strings.Contains(raw, ",") {
		parts := strings.Split(raw, ",")
		for i, p := range parts {
			parts[i] = MaskURL(p)
		}
		return strings.Join(parts, ",")
	}
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "***"
	}
	masked := false
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "***")
			masked = true
		}
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "***")
		u.RawQuery = q.Encode()
		masked = true
	}
	if !masked {
		return raw
	}
	return strings.ReplaceAll(u.String(), "%2A%2A%2A", "***")
}

// SetMemoryLimit sets the Go runtime's soft memory limit of a service running alone to
// limit bytes, unless limit is 0 or GOMEMLIMIT is set (the operator's own setting wins).
func SetMemoryLimit(limit int64, getenv func(string) string) {
	if limit > 0 && getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(limit)
	}
}
