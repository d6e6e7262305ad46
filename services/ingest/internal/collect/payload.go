// Package collect parses and checks the collect endpoint's JSON payload. It knows nothing
// of HTTP or NATS: it turns bytes into a Payload or a FieldError naming what is wrong.
//
// The payload is a flat object of scalars plus one flat object of properties, so Parse is
// a small hand-written scanner rather than encoding/json: it allocates only the strings it
// keeps, can name the offending field for every mistake, and refuses what encoding/json
// would quietly accept (nulls, 1.0 for an integer, duplicate keys, invalid UTF-8 turned
// into U+FFFD, \u0000 that Postgres cannot store).
package collect

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
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
	// maxSkipDepth bounds the nesting of unknown fields' values, which are skipped: a
	// deeply nested value is refused rather than walked.
	maxSkipDepth = 8
)

// ErrTooLarge is a body over MaxBodyBytes; the handler answers 413.
var ErrTooLarge = errors.New("body too large")

// Payload is what the tracker sends (compatible with the original Haru tracker: p, r,
// sw, sh, n, d), plus our extensions u, h and props.
type Payload struct {
	Path     string // p
	Referrer string // r
	ScreenW  int    // sw
	ScreenH  int    // sh
	// Name is the event name, "pageview" when absent.
	Name string // n
	// DurationMS is engagement time in milliseconds.
	DurationMS int64 // d
	// URL is the page's full URL, from which ingest takes hostname and utm_* fields.
	URL string // u
	// HashMode means the site routes by URL fragment, so the fragment is part of the path.
	HashMode bool // h
	// Props are custom properties. Numbers and booleans sent as values are kept as their
	// JSON text ("3", "true"), so a tracker need not stringify them; the dashboard shows
	// properties as text anyway.
	Props map[string]string // props
	// SendID is the sender's id of this event, the same in every retry of it (the
	// tracker sends the time it first sent the event, in milliseconds); 0 when absent.
	// Batch items have their idempotency keys instead.
	SendID int64 // i
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
	if len(body) > MaxBodyBytes {
		return Payload{}, ErrTooLarge
	}
	return parse(scanner{b: body})
}

// parse reads one payload object filling the whole of s.b; s.item, when set, receives
// the batch-only fields.
func parse(s scanner) (Payload, error) {
	var p Payload
	s.ws()
	if s.i == len(s.b) {
		return p, fieldErr("", "empty body: want a JSON object")
	}
	if err := s.object(&p); err != nil {
		return Payload{}, err
	}
	s.ws()
	if s.i != len(s.b) {
		return Payload{}, fieldErr("", "invalid JSON: trailing data after the object")
	}
	if p.Name == "" {
		p.Name = event.PageviewName
	}
	if err := p.check(); err != nil {
		return Payload{}, err
	}
	return p, nil
}

// fields are the known top-level keys; seen is a bit set over them to refuse duplicates.
const (
	fP = 1 << iota
	fR
	fSW
	fSH
	fN
	fD
	fU
	fH
	fProps
	fIP
	fUA
	fKey
	fI
)

type scanner struct {
	b    []byte
	i    int
	item *Item // non-nil inside a batch: ip, ua and key are fields, not unknown keys
	// walk only finds the ends of strings in skip, leaving their content to be judged
	// later: a batch is split into events this way so one event's bad string is that
	// event's error alone.
	walk bool
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) syntax(field, want string) error {
	if s.i >= len(s.b) {
		return fieldErr(field, "invalid JSON: unexpected end, want %s", want)
	}
	return fieldErr(field, "invalid JSON at byte %d: want %s", s.i, want)
}

// peek returns the next non-space byte, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) object(p *Payload) error {
	if s.peek() != '{' {
		return fieldErr("", "want a JSON object")
	}
	s.i++
	var seen uint
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		if s.peek() != '"' {
			return s.syntax("", "a quoted key")
		}
		key, err := s.key()
		if err != nil {
			return err
		}
		if s.peek() != ':' {
			return s.syntax(key, "':'")
		}
		s.i++
		s.ws()
		var bit uint
		switch key {
		case "p":
			bit = fP
			p.Path, err = s.text(key, MaxPathLen)
		case "r":
			bit = fR
			p.Referrer, err = s.text(key, MaxURLLen)
		case "u":
			bit = fU
			p.URL, err = s.text(key, MaxURLLen)
		case "n":
			bit = fN
			p.Name, err = s.text(key, MaxNameLen)
		case "sw":
			bit = fSW
			var v int64
			v, err = s.integer(key)
			p.ScreenW = int(v)
		case "sh":
			bit = fSH
			var v int64
			v, err = s.integer(key)
			p.ScreenH = int(v)
		case "d":
			bit = fD
			p.DurationMS, err = s.integer(key)
		case "h":
			bit = fH
			p.HashMode, err = s.boolean(key)
		case "props":
			bit = fProps
			p.Props, err = s.props()
		case "i":
			if s.item != nil {
				err = s.skip(key, 0)
				break
			}
			bit = fI
			p.SendID, err = s.integer(key)
		case "ip", "ua", "key":
			if s.item == nil {
				err = s.skip(key, 0)
				break
			}
			bit, err = s.batchField(key)
		default:
			// Unknown fields are skipped so an older ingest accepts a newer tracker.
			err = s.skip(key, 0)
		}
		if err != nil {
			return err
		}
		if bit != 0 {
			if seen&bit != 0 {
				return fieldErr(key, "duplicate field")
			}
			seen |= bit
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return s.syntax(key, "',' or '}'")
		}
	}
}

// kind names the JSON type starting at the current byte, for error messages.
func (s *scanner) kind() string {
	if s.i >= len(s.b) {
		return "nothing"
	}
	switch c := s.b[s.i]; {
	case c == '"':
		return "a string"
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case c == '-' || c >= '0' && c <= '9':
		return "a number"
	}
	return "invalid JSON"
}

func (s *scanner) text(field string, max int) (string, error) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return "", fieldErr(field, "want a string, got %s", s.kind())
	}
	return s.str(field, max)
}

// knownKeys are the object keys the payload and batch items know, so reading a key
// need not allocate its text.
var knownKeys = []string{"p", "r", "u", "n", "sw", "sh", "d", "h", "props", "ip", "ua", "key", "events"}

// key reads an object key like str, returning a known key's text without allocating.
func (s *scanner) key() (string, error) {
	raw, err := s.strBytes("", 256)
	if err != nil {
		return "", err
	}
	for _, k := range knownKeys {
		if string(raw) == k {
			return k, nil
		}
	}
	return string(raw), nil
}

// str reads a JSON string at s.i (which is '"'), refusing invalid UTF-8, NUL (raw or
// escaped) and anything longer than max bytes once decoded.
func (s *scanner) str(field string, max int) (string, error) {
	b, err := s.strBytes(field, max)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// strBytes is str's text as bytes: those of s.b itself when the string has no escapes
// (nearly every beacon), so they are valid only as long as s.b is unchanged.
func (s *scanner) strBytes(field string, max int) ([]byte, error) {
	s.i++
	start := s.i
	// Fast path: no escapes, which is nearly every beacon.
	for s.i < len(s.b) {
		c := s.b[s.i]
		if c == '"' {
			raw := s.b[start:s.i]
			s.i++
			if len(raw) > max {
				return nil, fieldErr(field, "too long: %d bytes, at most %d", len(raw), max)
			}
			if !utf8.Valid(raw) {
				return nil, fieldErr(field, "contains invalid UTF-8")
			}
			return raw, nil
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return nil, s.ctl(field, c)
		}
		s.i++
	}
	if s.i >= len(s.b) {
		return nil, fieldErr(field, "invalid JSON: unterminated string")
	}
	buf := make([]byte, 0, s.i-start+16)
	buf = append(buf, s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			if len(buf) > max {
				return nil, fieldErr(field, "too long: %d bytes, at most %d", len(buf), max)
			}
			if !utf8.Valid(buf) {
				return nil, fieldErr(field, "contains invalid UTF-8")
			}
			return buf, nil
		case c < 0x20:
			return nil, s.ctl(field, c)
		case c != '\\':
			buf = append(buf, c)
			s.i++
			continue
		}
		if len(buf) > max {
			// Stop decoding early: no need to walk 16 KiB of escapes to say it is too long.
			return nil, fieldErr(field, "too long: more than %d bytes", max)
		}
		s.i++
		if s.i >= len(s.b) {
			break
		}
		e := s.b[s.i]
		s.i++
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := s.hex4()
			if !ok {
				return nil, fieldErr(field, "invalid JSON: bad \\u escape")
			}
			if r == 0 {
				return nil, fieldErr(field, "contains NUL, which cannot be stored")
			}
			if utf16.IsSurrogate(r) {
				// A lone surrogate has no UTF-8 form: only a high+low pair is text.
				if r >= 0xDC00 || s.i+1 >= len(s.b) || s.b[s.i] != '\\' || s.b[s.i+1] != 'u' {
					return nil, fieldErr(field, "contains invalid UTF-8 (lone surrogate)")
				}
				s.i += 2
				r2, ok := s.hex4()
				if !ok {
					return nil, fieldErr(field, "invalid JSON: bad \\u escape")
				}
				r = utf16.DecodeRune(r, r2)
				if r == utf8.RuneError {
					return nil, fieldErr(field, "contains invalid UTF-8 (lone surrogate)")
				}
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return nil, fieldErr(field, "invalid JSON: bad escape \\%c", e)
		}
	}
	return nil, fieldErr(field, "invalid JSON: unterminated string")
}

func (s *scanner) ctl(field string, c byte) error {
	if c == 0 {
		return fieldErr(field, "contains NUL, which cannot be stored")
	}
	return fieldErr(field, "invalid JSON: control character in string")
}

func (s *scanner) hex4() (rune, bool) {
	if s.i+4 > len(s.b) {
		return 0, false
	}
	var r rune
	for _, c := range s.b[s.i : s.i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	s.i += 4
	return r, true
}

// number scans a JSON number and returns its text and whether it is an integer (no
// fraction, no exponent).
func (s *scanner) number(field string) (text []byte, integer bool, err error) {
	start := s.i
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	digits := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	n := s.i - digits
	if n == 0 || n > 1 && s.b[digits] == '0' {
		return nil, false, fieldErr(field, "invalid JSON: bad number")
	}
	integer = true
	if s.i < len(s.b) && s.b[s.i] == '.' {
		integer = false
		s.i++
		f := s.i
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
		if s.i == f {
			return nil, false, fieldErr(field, "invalid JSON: bad number")
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		integer = false
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		f := s.i
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
			s.i++
		}
		if s.i == f {
			return nil, false, fieldErr(field, "invalid JSON: bad number")
		}
	}
	return s.b[start:s.i], integer, nil
}

func (s *scanner) integer(field string) (int64, error) {
	if c := s.peek(); c != '-' && (c < '0' || c > '9') {
		return 0, fieldErr(field, "want an integer, got %s", s.kind())
	}
	text, integer, err := s.number(field)
	if err != nil {
		return 0, err
	}
	if !integer {
		return 0, fieldErr(field, "want an integer, got %s", text)
	}
	v, err := strconv.ParseInt(string(text), 10, 64)
	if err != nil {
		return 0, fieldErr(field, "integer out of range")
	}
	return v, nil
}

func (s *scanner) boolean(field string) (bool, error) {
	if s.lit("true") {
		return true, nil
	}
	if s.lit("false") {
		return false, nil
	}
	return false, fieldErr(field, "want a boolean, got %s", s.kind())
}

// lit consumes word if it comes next.
func (s *scanner) lit(word string) bool {
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return true
	}
	return false
}

func (s *scanner) props() (map[string]string, error) {
	if s.peek() != '{' {
		return nil, fieldErr("props", "want an object of strings, got %s", s.kind())
	}
	s.i++
	m := map[string]string{}
	if s.peek() == '}' {
		s.i++
		return m, nil
	}
	for {
		if s.peek() != '"' {
			return nil, s.syntax("props", "a quoted key")
		}
		if len(m) == MaxProps {
			return nil, fieldErr("props", "more than %d properties", MaxProps)
		}
		k, err := s.str("props", MaxPropKeyLen)
		if err != nil {
			return nil, err
		}
		if k == "" {
			return nil, fieldErr("props", "empty property key")
		}
		if _, dup := m[k]; dup {
			return nil, fieldErr("props."+k, "duplicate property")
		}
		if s.peek() != ':' {
			return nil, s.syntax("props."+k, "':'")
		}
		s.i++
		field := "props." + k
		var v string
		switch c := s.peek(); {
		case c == '"':
			v, err = s.str(field, MaxPropValLen)
		case c == '-' || c >= '0' && c <= '9':
			var text []byte
			text, _, err = s.number(field)
			if len(text) > MaxPropValLen {
				err = fieldErr(field, "too long")
			}
			v = string(text)
		case c == 't' || c == 'f':
			var b bool
			b, err = s.boolean(field)
			v = strconv.FormatBool(b)
		default:
			err = fieldErr(field, "want a string, number or boolean, got %s", s.kind())
		}
		if err != nil {
			return nil, err
		}
		m[k] = v
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return m, nil
		default:
			return nil, s.syntax(field, "',' or '}'")
		}
	}
}

// skipStr walks past a string in skip: checked as a value would be, or, when walking, only
// up to its closing quote.
func (s *scanner) skipStr(field string) error {
	if !s.walk {
		_, err := s.str(field, MaxBodyBytes)
		return err
	}
	for s.i++; s.i < len(s.b); s.i++ {
		switch s.b[s.i] {
		case '\\':
			s.i++
		case '"':
			s.i++
			return nil
		}
	}
	return fieldErr(field, "invalid JSON: unterminated string")
}

// skip walks past one value of an unknown field, still refusing what is not JSON.
func (s *scanner) skip(field string, depth int) error {
	if depth > maxSkipDepth {
		return fieldErr(field, "nested too deeply")
	}
	switch c := s.peek(); {
	case c == '"':
		return s.skipStr(field)
	case c == '-' || c >= '0' && c <= '9':
		_, _, err := s.number(field)
		return err
	case c == 't' || c == 'f':
		_, err := s.boolean(field)
		return err
	case c == 'n':
		if s.lit("null") {
			return nil
		}
	case c == '[' || c == '{':
		end := byte(']')
		if c == '{' {
			end = '}'
		}
		s.i++
		if s.peek() == end {
			s.i++
			return nil
		}
		for {
			if c == '{' {
				if s.peek() != '"' {
					return s.syntax(field, "a quoted key")
				}
				if err := s.skipStr(field); err != nil {
					return err
				}
				if s.peek() != ':' {
					return s.syntax(field, "':'")
				}
				s.i++
			}
			if err := s.skip(field, depth+1); err != nil {
				return err
			}
			switch s.peek() {
			case ',':
				s.i++
			case end:
				s.i++
				return nil
			default:
				return s.syntax(field, "',' or '"+string(end)+"'")
			}
		}
	}
	return s.syntax(field, "a JSON value")
}

func (p *Payload) check() error {
	switch {
	case p.URL != "" && !absoluteHTTP(p.URL):
		return fieldErr("u", "want an absolute http or https URL")
	case p.Path != "" && p.Path[0] != '/':
		return fieldErr("p", "want a path starting with /")
	case p.ScreenW < 0 || p.ScreenW > MaxScreen:
		return fieldErr("sw", "out of range 0..%d", MaxScreen)
	case p.ScreenH < 0 || p.ScreenH > MaxScreen:
		return fieldErr("sh", "out of range 0..%d", MaxScreen)
	case p.DurationMS < 0 || p.DurationMS > MaxDurationMS:
		return fieldErr("d", "out of range 0..%d", MaxDurationMS)
	}
	return nil
}

// absoluteHTTP reports whether u starts with an http or https scheme and a host.
func absoluteHTTP(u string) bool {
	scheme, rest, ok := strings.Cut(u, "://")
	return ok && (strings.EqualFold(scheme, "https") || strings.EqualFold(scheme, "http")) &&
		rest != "" && !strings.ContainsAny(rest[:1], "/?#")
}

// CheckPagePath refuses a page path (as taken from p and u) over MaxPathLen. p alone is
// checked as it is read; a path taken from u, or with u's fragment added in hash mode,
// can only be checked once the page is parsed.
func CheckPagePath(path string) *FieldError {
	if len(path) > MaxPathLen {
		return fieldErr("u", "page path longer than %d bytes", MaxPathLen)
	}
	return nil
}
