// Package event is the wire contract between ingest and writer: the event as it travels
// through JetStream, how it is encoded, and the names of every stream, subject and bucket.
//
// Change it deliberately: the golden test in this package pins the encoding, and a
// writer must keep reading what older ingest replicas still publish.
package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Version is the wire format version ingest writes. Readers accept every version up to
// and including it.
const Version = 1

// PageviewName is the event name of a pageview; any other name is a custom event.
const PageviewName = "pageview"

// EngagementName is the event the tracker sends with time visible on a page (DurationMS).
// It adds to visit duration only: it is neither a pageview nor an interaction, so a visit
// with one pageview and its engagement is still a bounce.
const EngagementName = "engagement"

// ErrDecode wraps every reason a message cannot be decoded; such a message is poison and
// is terminated, never retried.
var ErrDecode = errors.New("decode event")

// ErrNewerVersion is a message of a wire format newer than this reader's: not poison,
// but for a newer reader. During a rolling upgrade that starts with ingest, a writer not
// yet upgraded leaves such messages for one that is.
var ErrNewerVersion = errors.New("event of a newer version")

// Event is one pageview or custom event, enriched at ingest. Its ID and Time are set once
// at ingest and never change afterwards: together they are the event's key in Postgres.
type Event struct {
	V       int       `json:"v"`
	ID      uuid.UUID `json:"id"`
	Time    time.Time `json:"ts"`
	SiteID  int64     `json:"site"`
	Name    string    `json:"n"`
	Visitor int64     `json:"vid"`

	Hostname string `json:"host,omitempty"`
	Path     string `json:"p"`
	// Referrer is the referring URL as the browser sent it; RefSource its reduced form
	// (a host or a known name such as "Google").
	Referrer  string `json:"r,omitempty"`
	RefSource string `json:"src,omitempty"`

	UTMSource   string `json:"utm_source,omitempty"`
	UTMMedium   string `json:"utm_medium,omitempty"`
	UTMCampaign string `json:"utm_campaign,omitempty"`
	UTMTerm     string `json:"utm_term,omitempty"`
	UTMContent  string `json:"utm_content,omitempty"`

	Country string `json:"cc,omitempty"`
	Region  string `json:"region,omitempty"`
	Browser string `json:"browser,omitempty"`
	OS      string `json:"os,omitempty"`
	Device  string `json:"device,omitempty"`

	ScreenW int `json:"sw,omitempty"`
	ScreenH int `json:"sh,omitempty"`
	// DurationMS is engagement time: how long the page was visible, in milliseconds.
	DurationMS int64 `json:"d,omitempty"`

	Props map[string]string `json:"props,omitempty"`
}

// New returns an event with a fresh UUIDv7 id, stamped at now (in UTC, to the microsecond
// Postgres keeps, so a redelivered event compares equal to the stored row).
func New(now time.Time, siteID int64, name string) (Event, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return Event{}, fmt.Errorf("mint event id: %w", err)
	}
	return Event{
		V:      Version,
		ID:     id,
		Time:   now.UTC().Truncate(time.Microsecond),
		SiteID: siteID,
		Name:   name,
	}, nil
}

// IsPageview reports whether the event counts as a pageview.
func (e *Event) IsPageview() bool { return e.Name == PageviewName }

// IsInteraction reports whether the event is a custom event: any name but pageview and
// engagement. An interaction makes its visit not a bounce.
func (e *Event) IsInteraction() bool { return e.Name != PageviewName && e.Name != EngagementName }

// Encode returns the wire form of e.
func Encode(e *Event) ([]byte, error) {
	return AppendEncode(make([]byte, 0, 512), e)
}

// AppendEncode appends the wire form of e to dst, so a caller may reuse a buffer.
func AppendEncode(dst []byte, e *Event) ([]byte, error) {
	if e.Time.Year() < 0 || e.Time.Year() > 9999 {
		return dst, fmt.Errorf("encode event: timestamp %s outside years 0..9999", e.Time)
	}
	return appendEvent(dst, e), nil
}

// Decode parses the wire form. Unknown fields are ignored so that an older reader keeps
// working while a newer ingest adds fields; a newer version is an ErrNewerVersion, and
// anything else the writer could not store an ErrDecode.
func Decode(b []byte) (Event, error) {
	var e Event
	if !decodeFast(b, &e) {
		e = Event{}
		if err := json.Unmarshal(b, &e); err != nil {
			return Event{}, fmt.Errorf("%w: %w", ErrDecode, err)
		}
	}
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// Validate checks what every stored event must have. Ingest refuses bad input long before
// this; Validate guards the writer against messages from elsewhere.
func (e *Event) Validate() error {
	// What every version carries comes first: a message without it is poison whatever
	// version it claims.
	switch {
	case e.V < 1:
		return fmt.Errorf("%w: unsupported version %d", ErrDecode, e.V)
	case e.ID == uuid.Nil:
		return fmt.Errorf("%w: missing id", ErrDecode)
	case e.Time.IsZero():
		return fmt.Errorf("%w: missing timestamp", ErrDecode)
	case e.SiteID <= 0:
		return fmt.Errorf("%w: missing site", ErrDecode)
	case e.Name == "":
		return fmt.Errorf("%w: missing name", ErrDecode)
	case e.V > Version:
		return fmt.Errorf("%w: version %d, this reader knows up to %d", ErrNewerVersion, e.V, Version)
	}
	for _, s := range e.texts() {
		if !Storable(s) {
			return fmt.Errorf("%w: text Postgres cannot store", ErrDecode)
		}
	}
	for k, v := range e.Props {
		if !Storable(k) || !Storable(v) {
			return fmt.Errorf("%w: property Postgres cannot store", ErrDecode)
		}
	}
	return nil
}

func (e *Event) texts() []string {
	return []string{e.Name, e.Hostname, e.Path, e.Referrer, e.RefSource, e.UTMSource,
		e.UTMMedium, e.UTMCampaign, e.UTMTerm, e.UTMContent, e.Country, e.Region,
		e.Browser, e.OS, e.Device}
}

// Storable reports whether Postgres can store s as text: valid UTF-8 with no NUL.
func Storable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return false
		}
	}
	return utf8.ValidString(s)
}
