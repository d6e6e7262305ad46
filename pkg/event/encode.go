package event

import (
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendEvent writes e exactly as an encoding/json Encoder without HTML escaping would
// (field order, omitempty, escaping, time format), without reflection: encoding runs
// once per beacon on ingest's hot path. TestEncodeMatchesJSON and FuzzEncodeMatchesJSON
// hold it to that. No HTML escaping: the message is never embedded in a page, and '<',
// '>' and '&' escaped would take six bytes for one, so a beacon within every limit of
// its own could outgrow the stream's message size.
func appendEvent(b []byte, e *Event) []byte {
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(e.V), 10)
	b = append(b, `,"id":"`...)
	b = appendUUID(b, e.ID)
	b = append(b, `","ts":"`...)
	b = e.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","site":`...)
	b = strconv.AppendInt(b, e.SiteID, 10)
	b = appendField(b, "n", e.Name, false)
	b = append(b, `,"vid":`...)
	b = strconv.AppendInt(b, e.Visitor, 10)
	b = appendField(b, "host", e.Hostname, true)
	b = appendField(b, "p", e.Path, false)
	b = appendField(b, "r", e.Referrer, true)
	b = appendField(b, "src", e.RefSource, true)
	b = appendField(b, "utm_source", e.UTMSource, true)
	b = appendField(b, "utm_medium", e.UTMMedium, true)
	b = appendField(b, "utm_campaign", e.UTMCampaign, true)
	b = appendField(b, "utm_term", e.UTMTerm, true)
	b = appendField(b, "utm_content", e.UTMContent, true)
	b = appendField(b, "cc", e.Country, true)
	b = appendField(b, "region", e.Region, true)
	b = appendField(b, "browser", e.Browser, true)
	b = appendField(b, "os", e.OS, true)
	b = appendField(b, "device", e.Device, true)
	if e.ScreenW != 0 {
		b = append(b, `,"sw":`...)
		b = strconv.AppendInt(b, int64(e.ScreenW), 10)
	}
	if e.ScreenH != 0 {
		b = append(b, `,"sh":`...)
		b = strconv.AppendInt(b, int64(e.ScreenH), 10)
	}
	if e.DurationMS != 0 {
		b = append(b, `,"d":`...)
		b = strconv.AppendInt(b, e.DurationMS, 10)
	}
	if len(e.Props) > 0 {
		keys := make([]string, 0, len(e.Props))
		for k := range e.Props {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, `,"props":{`...)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, e.Props[k])
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendUUID writes id as uuid.UUID.String does (8-4-4-4-12 lower-case hex) without
// allocating the string.
func appendUUID(b []byte, id [16]byte) []byte {
	for i, c := range id {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hex[c>>4], hex[c&0xf])
	}
	return b
}

func appendField(b []byte, name, val string, omitEmpty bool) []byte {
	if omitEmpty && val == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, val)
}

const hex = "0123456789abcdef"

// appendString quotes s as encoding/json does without HTML escaping: invalid UTF-8 as
// U+FFFD, and U+2028/U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
