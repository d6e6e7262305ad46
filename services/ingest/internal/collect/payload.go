// Package collect parses and checks the collect endpoint's JSON payload. It knows nothing
// of HTTP or NATS: it turns bytes into a Payload or a FieldError naming what is wrong.
package collect

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/haru-analytics/haru/pkg/event"
)

// Limits on one payload. They keep an event far below the stream's message size and
// keep dashboards readable.
const (
	MaxBodyBytes  = 16 << 10
	MaxPathLen    = 2048
	MaxURLLen     = 4096
	MaxNameLen    = 120
	MaxScreen     = 100000
	MaxDurationMS = 24 * 60 * 60 * 1000
	MaxProps      = 30
	MaxPropKeyLen = 64
	MaxPropValLen = 256
)

// Payload is what the tracker sends (compatible with the original Haru tracker: p, r,
// sw, sh, n, d), plus our extensions.
type Payload struct {
	Path     string `json:"p"`
	Referrer string `json:"r"`
	ScreenW  int    `json:"sw"`
	ScreenH  int    `json:"sh"`
	Name     string `json:"n"`
	// DurationMS is engagement time in milliseconds.
	DurationMS int64 `json:"d"`
	// URL is the page's full URL, from which ingest takes hostname and utm_* fields.
	URL string `json:"u"`
	// Props are custom properties of a custom event.
	Props map[string]string `json:"props"`
}

// FieldError is a rejected payload: Field names the offending field ("" for the body).
type FieldError struct {
	Field  string `json:"field,omitempty"`
	Reason string `json:"error"`
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Parse decodes and checks one payload.
func Parse(body []byte) (Payload, error) {
	var p Payload
	if len(bytes.TrimSpace(body)) == 0 {
		return p, fieldErr("", "empty body: want a JSON object")
	}
	// encoding/json would silently turn invalid UTF-8 into U+FFFD: refuse it instead.
	if !utf8.Valid(body) {
		return p, fieldErr("", "body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&p); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return p, fieldErr(te.Field, "wrong type: got %s", te.Value)
		}
		return p, fieldErr("", "invalid JSON: %s", err.Error())
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return p, fieldErr("", "invalid JSON: trailing data after the object")
	}
	if p.Name == "" {
		p.Name = event.PageviewName
	}
	return p, p.check()
}

func (p *Payload) check() error {
	texts := []struct {
		field string
		val   string
		max   int
	}{
		{"p", p.Path, MaxPathLen}, {"r", p.Referrer, MaxURLLen}, {"u", p.URL, MaxURLLen}, {"n", p.Name, MaxNameLen},
	}
	for _, t := range texts {
		if len(t.val) > t.max {
			return fieldErr(t.field, "too long: %d bytes, at most %d", len(t.val), t.max)
		}
		if !event.Storable(t.val) {
			return fieldErr(t.field, "contains NUL or invalid UTF-8")
		}
	}
	switch {
	case p.ScreenW < 0 || p.ScreenW > MaxScreen:
		return fieldErr("sw", "out of range 0..%d", MaxScreen)
	case p.ScreenH < 0 || p.ScreenH > MaxScreen:
		return fieldErr("sh", "out of range 0..%d", MaxScreen)
	case p.DurationMS < 0 || p.DurationMS > MaxDurationMS:
		return fieldErr("d", "out of range 0..%d", MaxDurationMS)
	case len(p.Props) > MaxProps:
		return fieldErr("props", "%d properties, at most %d", len(p.Props), MaxProps)
	}
	for k, v := range p.Props {
		if k == "" || len(k) > MaxPropKeyLen || !event.Storable(k) {
			return fieldErr("props", "key %q: want 1..%d bytes of UTF-8 without NUL", k, MaxPropKeyLen)
		}
		if len(v) > MaxPropValLen || !event.Storable(v) {
			return fieldErr("props."+k, "want at most %d bytes of UTF-8 without NUL", MaxPropValLen)
		}
	}
	return nil
}
