package event

import (
	"strconv"
	"unicode/utf8"

	"github.com/google/uuid"
)

// decodeFast parses the wire form as ingest writes it, without reflection and with one
// copy of the message: every text field is a substring of it, where encoding/json
// allocates each string apart. The writer decodes every event, so this is its hot path.
//
// It accepts only a subset of JSON on which it is sure to agree with encoding/json:
// known field names spelled exactly, strings without escapes, integers without fraction
// or exponent, no null, props at most once. On anything else it reports false and Decode
// falls back to encoding/json, which then decides; FuzzDecodeFastMatchesJSON holds the
// two to the same result.
func decodeFast(b []byte, e *Event) bool {
	d := scanner{b: b, s: string(b)}
	d.space()
	if !d.consume('{') {
		return false
	}
	d.space()
	if d.consume('}') {
		return d.end()
	}
	seenProps := false
	for {
		key, ok := d.key()
		if !ok {
			return false
		}
		switch key {
		case "v":
			n, ok := d.int()
			if !ok || n != int64(int(n)) {
				return false
			}
			e.V = int(n)
		case "id":
			start := d.i
			s, ok := d.str()
			// The 8-4-4-4-12 form only: uuid's other spellings go through encoding/json.
			if !ok || len(s) != 36 {
				return false
			}
			id, err := uuid.ParseBytes(d.b[start+1 : d.i-1])
			if err != nil {
				return false
			}
			e.ID = id
		case "ts":
			start := d.i
			if _, ok := d.str(); !ok {
				return false
			}
			// The same strict RFC 3339 parser time.Time's UnmarshalJSON uses.
			if err := e.Time.UnmarshalText(d.b[start+1 : d.i-1]); err != nil {
				return false
			}
		case "site":
			if e.SiteID, ok = d.int(); !ok {
				return false
			}
		case "vid":
			if e.Visitor, ok = d.int(); !ok {
				return false
			}
		case "d":
			if e.DurationMS, ok = d.int(); !ok {
				return false
			}
		case "sw", "sh":
			n, ok := d.int()
			if !ok || n != int64(int(n)) {
				return false
			}
			if key == "sw" {
				e.ScreenW = int(n)
			} else {
				e.ScreenH = int(n)
			}
		case "props":
			if seenProps || !d.props(e) {
				return false
			}
			seenProps = true
		default:
			p := e.text(key)
			if p == nil {
				return false // a field this version does not know, or another spelling
			}
			if *p, ok = d.str(); !ok {
				return false
			}
		}
		d.space()
		if d.consume('}') {
			return d.end()
		}
		if !d.consume(',') {
			return false
		}
		d.space()
	}
}

// text is the string field of e named key on the wire, or nil.
func (e *Event) text(key string) *string {
	switch key {
	case "n":
		return &e.Name
	case "host":
		return &e.Hostname
	case "p":
		return &e.Path
	case "r":
		return &e.Referrer
	case "src":
		return &e.RefSource
	case "utm_source":
		return &e.UTMSource
	case "utm_medium":
		return &e.UTMMedium
	case "utm_campaign":
		return &e.UTMCampaign
	case "utm_term":
		return &e.UTMTerm
	case "utm_content":
		return &e.UTMContent
	case "cc":
		return &e.Country
	case "region":
		return &e.Region
	case "browser":
		return &e.Browser
	case "os":
		return &e.OS
	case "device":
		return &e.Device
	}
	return nil
}

// props reads an object of string values into e.Props.
func (d *scanner) props(e *Event) bool {
	if !d.consume('{') {
		return false
	}
	e.Props = make(map[string]string)
	d.space()
	if d.consume('}') {
		return true
	}
	for {
		k, ok := d.key()
		if !ok {
			return false
		}
		v, ok := d.str()
		if !ok {
			return false
		}
		e.Props[k] = v
		d.space()
		if d.consume('}') {
			return true
		}
		if !d.consume(',') {
			return false
		}
		d.space()
	}
}

// scanner walks b; s is one string copy of it, so strings are cut without allocating.
type scanner struct {
	b []byte
	s string
	i int
}

func (d *scanner) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *scanner) consume(c byte) bool {
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// end reports whether only white space is left.
func (d *scanner) end() bool {
	d.space()
	return d.i == len(d.b)
}

// key reads an object's key and the colon after it.
func (d *scanner) key() (string, bool) {
	k, ok := d.str()
	if !ok {
		return "", false
	}
	d.space()
	if !d.consume(':') {
		return "", false
	}
	d.space()
	return k, true
}

// str reads a string with no escape and no control character, in valid UTF-8.
func (d *scanner) str() (string, bool) {
	if !d.consume('"') {
		return "", false
	}
	start, ascii := d.i, true
	for ; d.i < len(d.b); d.i++ {
		c := d.b[d.i]
		switch {
		case c == '"':
			s := d.s[start:d.i]
			d.i++
			return s, ascii || utf8.ValidString(s)
		case c == '\\' || c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

// int reads an integer as JSON writes it: an optional minus, then 0 or digits not
// starting with 0, followed by neither a fraction nor an exponent.
func (d *scanner) int() (int64, bool) {
	start := d.i
	d.consume('-')
	digits := d.i
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	n := d.i - digits
	if n == 0 || (n > 1 && d.b[digits] == '0') {
		return 0, false
	}
	if d.i < len(d.b) && (d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		return 0, false
	}
	v, err := strconv.ParseInt(d.s[start:d.i], 10, 64)
	return v, err == nil
}
