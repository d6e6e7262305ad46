package collect

import (
	"errors"
	"fmt"
	"net/netip"
)

// Limits on one batch request of a server-side sender.
const (
	MaxBatchBytes = 256 << 10
	MaxBatchItems = 100
	MaxUALen      = 1024
	MaxKeyLen     = 200
)

// ErrTooMany is a batch of more than MaxBatchItems events; the handler answers 413.
var ErrTooMany = &FieldError{Field: "events", Reason: fmt.Sprintf("too many events: at most %d per request", MaxBatchItems)}

// Item is one event of a batch: a payload as the tracker sends it, plus what a
// server-side sender knows of the visitor and its idempotency key. Err is set instead
// when the item is refused; the other items are unaffected.
type Item struct {
	Payload
	// IP and UserAgent are the visitor's (ip, ua), used for the visitor id, country,
	// browser and bot checks and never stored. Zero when not sent.
	IP        netip.Addr
	UserAgent string
	// Key is the item's idempotency key (key), "" when not sent.
	Key string
	Err *FieldError
}

// ParseBatch decodes a batch body: {"events": [payload, ...]} with 1..MaxBatchItems
// events. An error is about the whole body (not JSON, no events, too many, too large);
// each item's own mistakes are in its Err.
func ParseBatch(body []byte) ([]Item, error) {
	if len(body) > MaxBatchBytes {
		return nil, ErrTooLarge
	}
	s := scanner{b: body}
	if s.peek() != '{' {
		return nil, fieldErr("", "want a JSON object {\"events\": [...]}")
	}
	s.i++
	var raws [][]byte
	seen := false
	if s.peek() != '}' {
		for {
			if s.peek() != '"' {
				return nil, s.syntax("", "a quoted key")
			}
			key, err := s.key()
			if err != nil {
				return nil, err
			}
			if s.peek() != ':' {
				return nil, s.syntax(key, "':'")
			}
			s.i++
			if key == "events" {
				if seen {
					return nil, fieldErr(key, "duplicate field")
				}
				seen = true
				if raws, err = s.items(); err != nil {
					return nil, err
				}
			} else if err := s.skip(key, 0); err != nil {
				return nil, err
			}
			if s.peek() == ',' {
				s.i++
				continue
			}
			if s.peek() != '}' {
				return nil, s.syntax(key, "',' or '}'")
			}
			break
		}
	}
	s.i++
	if s.peek() != 0 || s.i < len(s.b) {
		return nil, fieldErr("", "invalid JSON: trailing data after the object")
	}
	if len(raws) == 0 {
		return nil, fieldErr("events", "want an array of 1..%d events", MaxBatchItems)
	}
	items := make([]Item, len(raws))
	for i, raw := range raws {
		items[i] = parseItem(raw)
	}
	return items, nil
}

// items walks the events array, checking it is JSON, and returns each element's bytes.
func (s *scanner) items() ([][]byte, error) {
	if s.peek() != '[' {
		return nil, fieldErr("events", "want an array, got %s", s.kind())
	}
	s.i++
	var raws [][]byte
	if s.peek() == ']' {
		s.i++
		return nil, nil
	}
	for {
		if len(raws) == MaxBatchItems {
			return nil, ErrTooMany
		}
		start := s.i
		s.walk = true
		err := s.skip("events", 0)
		s.walk = false
		if err != nil {
			return nil, err
		}
		raws = append(raws, s.b[start:s.i])
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return raws, nil
		default:
			return nil, s.syntax("events", "',' or ']'")
		}
	}
}

func parseItem(raw []byte) Item {
	var it Item
	if len(raw) > MaxBodyBytes {
		it.Err = fieldErr("", "event too large: at most %d bytes", MaxBodyBytes)
		return it
	}
	p, err := parse(scanner{b: raw, item: &it})
	if err != nil {
		var fe *FieldError
		if !errors.As(err, &fe) {
			fe = fieldErr("", "%v", err)
		}
		return Item{Err: fe}
	}
	it.Payload = p
	return it
}

// batchField reads one of the batch-only fields into s.item.
func (s *scanner) batchField(key string) (uint, error) {
	switch key {
	case "ip":
		v, err := s.text(key, 64)
		if err != nil {
			return fIP, err
		}
		a, perr := netip.ParseAddr(v)
		if perr != nil || a.Zone() != "" {
			return fIP, fieldErr(key, "want an IPv4 or IPv6 address")
		}
		s.item.IP = a.Unmap()
		return fIP, nil
	case "ua":
		v, err := s.text(key, MaxUALen)
		s.item.UserAgent = v
		return fUA, err
	default:
		v, err := s.text(key, MaxKeyLen)
		if err == nil && v == "" {
			err = fieldErr(key, "empty: omit it or send 1..%d characters", MaxKeyLen)
		}
		s.item.Key = v
		return fKey, err
	}
}
