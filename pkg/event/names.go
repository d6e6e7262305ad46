package event

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// DefaultPrefix names every stream, subject and bucket of an install unless
// HARU_NATS_PREFIX says otherwise; tests and several installs share one NATS server by
// choosing different prefixes.
const DefaultPrefix = "haru"

// ConsumerName is the durable pull consumer every writer replica shares.
const ConsumerName = "writer"

var prefixRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// Names are the NATS names of one install. Build them with NewNames.
type Names struct {
	Prefix string
	// Stream holds events the writer has not stored yet.
	Stream string
	// Sites is the KV bucket of the site registry: token → Site.
	Sites string
	// Salts is the KV bucket of the daily visitor-hash salts: date → 32 random bytes.
	Salts string
}

// NewNames returns the names for prefix, which must be lower-case letters, digits and
// underscores (it appears in stream, bucket and subject names alike).
func NewNames(prefix string) (Names, error) {
	if !prefixRE.MatchString(prefix) {
		return Names{}, fmt.Errorf("nats prefix %q: want lower-case letters, digits and _, starting with a letter", prefix)
	}
	return Names{
		Prefix: prefix,
		Stream: strings.ToUpper(prefix) + "_EVENTS",
		Sites:  prefix + "_sites",
		Salts:  prefix + "_salts",
	}, nil
}

// StreamSubjects is the subject filter the events stream captures.
func (n Names) StreamSubjects() string { return n.Prefix + ".events.>" }

// EventSubject is the subject an event of site is published on. The site id in the
// subject lets operators inspect or purge one site's backlog.
func (n Names) EventSubject(site int64) string {
	return n.Prefix + ".events." + strconv.FormatInt(site, 10)
}

// UpdatedSubject is the core NATS subject the writer announces a site's new data on.
func (n Names) UpdatedSubject(site int64) string {
	return n.Prefix + ".updated." + strconv.FormatInt(site, 10)
}

// UpdatedWildcard matches every site's updated subject.
func (n Names) UpdatedWildcard() string { return n.Prefix + ".updated.*" }
