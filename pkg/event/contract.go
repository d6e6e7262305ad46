package event

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"time"
)

// Site is one entry of the site registry KV bucket, keyed by SiteKey(token). The query
// service writes it from Postgres; ingest reads it. Fields are only ever added.
type Site struct {
	ID       int64  `json:"id"`
	Token    string `json:"token"`
	Domain   string `json:"domain"`
	Timezone string `json:"tz"`
	// AllowAnyHost accepts events whose page host is not Domain or a subdomain of it.
	AllowAnyHost bool `json:"allow_any_host,omitempty"`
	// Version changes whenever the row changes; the mirror compares it to skip no-op puts.
	Version int64 `json:"ver"`
	// SecretHash is HashSecret of the site's secret key for server-side senders, "" when
	// the site has none. A site with a secret has a second entry, keyed by SecretKey.
	SecretHash string `json:"secret,omitempty"`
}

// SiteKey is the registry key of a token. Tokens are base64url, which KV keys allow.
func SiteKey(token string) string { return "t." + token }

// TokenFromKey is the inverse of SiteKey; ok is false for keys that are not tokens.
func TokenFromKey(key string) (token string, ok bool) {
	if len(key) > 2 && key[:2] == "t." {
		return key[2:], true
	}
	return "", false
}

// HashSecret is how a site's secret key is kept and looked up: hex SHA-256. The secret is
// 32 random bytes, so a plain hash is enough to make the stored form useless to a reader.
func HashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return fmt.Sprintf("%x", h[:])
}

// SecretKey is the registry key of a secret's hash (hex, which KV keys allow).
func SecretKey(hash string) string { return "s." + hash }

// SecretHashFromKey is the inverse of SecretKey; ok is false for keys that are not secrets.
func SecretHashFromKey(key string) (hash string, ok bool) {
	if len(key) > 2 && key[:2] == "s." {
		return key[2:], true
	}
	return "", false
}

// EncodeSite and DecodeSite are the registry's value encoding.
func EncodeSite(s Site) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("encode site: %w", err)
	}
	return b, nil
}

// DecodeSite parses a registry value.
func DecodeSite(b []byte) (Site, error) {
	var s Site
	if err := json.Unmarshal(b, &s); err != nil {
		return Site{}, fmt.Errorf("decode site: %w", err)
	}
	if s.ID <= 0 || s.Token == "" {
		return Site{}, fmt.Errorf("decode site: missing id or token")
	}
	return s, nil
}

// Updated is the core NATS message the writer publishes on UpdatedSubject after a commit
// that stored new events of a site. It says enough for the query service to decide what
// to refresh without a database round trip.
type Updated struct {
	SiteID int64 `json:"site"`
	// Events is how many new events the commit stored for the site.
	Events int `json:"events"`
	// From and To bound the new events' timestamps, so views of other periods can skip
	// the refresh.
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// At is when the writer committed.
	At time.Time `json:"at"`
}

// EncodeUpdated and DecodeUpdated are the encoding of Updated.
func EncodeUpdated(u Updated) ([]byte, error) {
	b, err := json.Marshal(u)
	if err != nil {
		return nil, fmt.Errorf("encode updated: %w", err)
	}
	return b, nil
}

// DecodeUpdated parses an Updated message.
func DecodeUpdated(b []byte) (Updated, error) {
	var u Updated
	if err := json.Unmarshal(b, &u); err != nil {
		return Updated{}, fmt.Errorf("decode updated: %w", err)
	}
	return u, nil
}
