// Package account owns users, sites and API keys in Postgres: creating them, checking
// passwords and keys, and answering who owns what.
package account

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/argon2"

	"github.com/haru-analytics/haru/pkg/event"
)

// Sentinel errors, mapped to HTTP answers by the query service.
var (
	ErrNotFound     = errors.New("not found")
	ErrEmailTaken   = errors.New("email already registered")
	ErrInvalid      = errors.New("invalid input")
	ErrBadPassword  = errors.New("wrong email or password")
	ErrUnauthorized = errors.New("unauthorized")
)

// MinPasswordLen is the shortest password accepted.
const MinPasswordLen = 10

// Store reads and writes accounts.
type Store struct {
	pool *pgxpool.Pool

	dummyOnce sync.Once
	dummy     string
}

// New returns a store over pool.
func New(pool *pgxpool.Pool) (*Store, error) {
	if pool == nil {
		return nil, errors.New("account: nil pool")
	}
	return &Store{pool: pool}, nil
}

// User is an account holder.
type User struct {
	ID        int64
	Email     string
	CreatedAt time.Time
}

// Site is a tracked website.
type Site struct {
	ID           int64     `json:"id"`
	UserID       int64     `json:"-"`
	Name         string    `json:"name"`
	Domain       string    `json:"domain"`
	Token        string    `json:"token"`
	Timezone     string    `json:"timezone"`
	AllowAnyHost bool      `json:"allow_any_host"`
	CreatedAt    time.Time `json:"created_at"`
}

// NormalizeEmail trims and checks an email address.
func NormalizeEmail(email string) (string, error) {
	email = strings.TrimSpace(email)
	a, err := mail.ParseAddress(email)
	if err != nil || a.Address != email || len(email) > 254 {
		return "", fmt.Errorf("%w: email %q is not an address", ErrInvalid, email)
	}
	return email, nil
}

// CreateUser registers email with password.
func (s *Store) CreateUser(ctx context.Context, email, password string) (User, error) {
	email, err := NormalizeEmail(email)
	if err != nil {
		return User{}, err
	}
	if len(password) < MinPasswordLen || len(password) > 1024 {
		return User{}, fmt.Errorf("%w: password must be %d to 1024 characters", ErrInvalid, MinPasswordLen)
	}
	hash, err := HashPassword(password)
	if err != nil {
		return User{}, err
	}
	u := User{Email: email}
	err = s.pool.QueryRow(ctx, `INSERT INTO users (email, password_hash) VALUES ($1, $2) RETURNING id, created_at`,
		email, hash).Scan(&u.ID, &u.CreatedAt)
	if isUniqueViolation(err) {
		return User{}, ErrEmailTaken
	}
	if err != nil {
		return User{}, fmt.Errorf("insert user: %w", err)
	}
	return u, nil
}

// UserByEmail finds a user case-insensitively.
func (s *Store) UserByEmail(ctx context.Context, email string) (User, error) {
	if !event.Storable(email) {
		return User{}, ErrNotFound
	}
	var u User
	err := s.pool.QueryRow(ctx, `SELECT id, email, created_at FROM users WHERE lower(email) = lower($1)`,
		strings.TrimSpace(email)).Scan(&u.ID, &u.Email, &u.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("find user: %w", err)
	}
	return u, nil
}

// SetPassword replaces a user's password and ends every session of the user (an
// operator's reset: whoever held the old password is logged out).
func (s *Store) SetPassword(ctx context.Context, userID int64, password string) error {
	if err := s.setPassword(ctx, userID, password); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM sessions WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("end sessions: %w", err)
	}
	return nil
}

func (s *Store) setPassword(ctx context.Context, userID int64, password string) error {
	if len(password) < MinPasswordLen || len(password) > 1024 {
		return fmt.Errorf("%w: password must be %d to 1024 characters", ErrInvalid, MinPasswordLen)
	}
	hash, err := HashPassword(password)
	if err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `UPDATE users SET password_hash = $2 WHERE id = $1`, userID, hash)
	if err != nil {
		return fmt.Errorf("set password: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// SiteInput is what a user chooses for a site.
type SiteInput struct {
	Name, Domain, Timezone string
	AllowAnyHost           bool
}

func (in *SiteInput) normalize() error {
	in.Name = strings.TrimSpace(in.Name)
	in.Domain = strings.ToLower(strings.TrimSpace(in.Domain))
	in.Domain = strings.TrimPrefix(strings.TrimPrefix(in.Domain, "https://"), "http://")
	in.Domain = strings.TrimSuffix(in.Domain, "/")
	if in.Timezone == "" {
		in.Timezone = "UTC"
	}
	switch {
	case in.Name == "" || len(in.Name) > 200 || !event.Storable(in.Name):
		return fmt.Errorf("%w: name must be 1 to 200 characters of text", ErrInvalid)
	case in.Domain == "" || len(in.Domain) > 253 || strings.ContainsAny(in.Domain, "/ ?#@") || !event.Storable(in.Domain):
		return fmt.Errorf("%w: domain must be a host name such as example.com", ErrInvalid)
	case !civilZone(in.Timezone):
		return fmt.Errorf("%w: unknown timezone %q", ErrInvalid, in.Timezone)
	}
	return nil
}

// civilZone reports whether name is a time zone of the IANA database that Go and
// Postgres read alike. Refused besides unknown names: the host's own zone under any of
// its names (Local, localtime, posixrules), Factory, and the posix/ and right/ trees. A
// right/ zone counts leap seconds, which Postgres honours and Go does not: its days would
// start 27 seconds apart in the writer's Go and in a rebuild's SQL. CET, MET, EET and WET
// have summer time in Go, but Postgres reads them as its fixed-offset abbreviations
// first: a city's zone names them (Europe/Brussels, Europe/Athens, Europe/Lisbon), as
// migration 000010 renamed stored ones.
func civilZone(name string) bool {
	switch name {
	case "", "Local", "localtime", "posixrules", "Factory", "CET", "MET", "EET", "WET":
		return false
	}
	if strings.HasPrefix(name, "posix/") || strings.HasPrefix(name, "right/") || !event.Storable(name) {
		return false
	}
	_, err := time.LoadLocation(name)
	return err == nil
}

// CreateSite adds a site for userID with a fresh token.
func (s *Store) CreateSite(ctx context.Context, userID int64, in SiteInput) (Site, error) {
	if err := in.normalize(); err != nil {
		return Site{}, err
	}
	token, err := NewToken()
	if err != nil {
		return Site{}, err
	}
	site := Site{UserID: userID, Name: in.Name, Domain: in.Domain, Token: token, Timezone: in.Timezone, AllowAnyHost: in.AllowAnyHost}
	err = s.pool.QueryRow(ctx, `
		INSERT INTO sites (user_id, name, domain, token, timezone, allow_any_host)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, created_at`,
		userID, in.Name, in.Domain, token, in.Timezone, in.AllowAnyHost).Scan(&site.ID, &site.CreatedAt)
	if err != nil {
		return Site{}, fmt.Errorf("insert site: %w", err)
	}
	return site, nil
}

const selectSite = `SELECT id, user_id, name, domain, token, timezone, allow_any_host, created_at FROM sites`

func scanSite(row pgx.Row) (Site, error) {
	var s Site
	err := row.Scan(&s.ID, &s.UserID, &s.Name, &s.Domain, &s.Token, &s.Timezone, &s.AllowAnyHost, &s.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Site{}, ErrNotFound
	}
	if err != nil {
		return Site{}, fmt.Errorf("read site: %w", err)
	}
	return s, nil
}

// SiteOf returns site id if userID owns it, else ErrNotFound: another user's site and a
// missing one look the same.
func (s *Store) SiteOf(ctx context.Context, userID, siteID int64) (Site, error) {
	return scanSite(s.pool.QueryRow(ctx, selectSite+` WHERE id = $1 AND user_id = $2`, siteID, userID))
}

// SiteByID returns a site whoever owns it; for internal use, never on a caller's id.
func (s *Store) SiteByID(ctx context.Context, siteID int64) (Site, error) {
	return scanSite(s.pool.QueryRow(ctx, selectSite+` WHERE id = $1`, siteID))
}

// SitesOf lists a user's sites by name.
func (s *Store) SitesOf(ctx context.Context, userID int64) ([]Site, error) {
	rows, err := s.pool.Query(ctx, selectSite+` WHERE user_id = $1 ORDER BY lower(name), id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list sites: %w", err)
	}
	var out []Site
	for rows.Next() {
		site, err := scanSite(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, site)
	}
	return out, rows.Err()
}

// APIKeyPrefix starts every API key, so a leaked one is recognisable in a scan.
const APIKeyPrefix = "haru_"

// CreateAPIKey returns a new key for userID. Only its hash is stored: the key is shown
// once.
func (s *Store) CreateAPIKey(ctx context.Context, userID int64, name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 100 || !event.Storable(name) {
		return "", fmt.Errorf("%w: key name must be 1 to 100 characters of text", ErrInvalid)
	}
	secret, err := NewToken()
	if err != nil {
		return "", err
	}
	key := APIKeyPrefix + secret
	sum := sha256.Sum256([]byte(key))
	_, err = s.pool.Exec(ctx, `INSERT INTO api_keys (user_id, name, key_hash, prefix) VALUES ($1, $2, $3, $4)`,
		userID, name, sum[:], key[:len(APIKeyPrefix)+6])
	if err != nil {
		return "", fmt.Errorf("insert api key: %w", err)
	}
	return key, nil
}

// DeleteAPIKeysNamed revokes userID's keys called name.
func (s *Store) DeleteAPIKeysNamed(ctx context.Context, userID int64, name string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM api_keys WHERE user_id = $1 AND name = $2`, userID, name); err != nil {
		return fmt.Errorf("delete api keys: %w", err)
	}
	return nil
}

// UserByAPIKey returns the owner of key and the key's id, or ErrUnauthorized.
func (s *Store) UserByAPIKey(ctx context.Context, key string) (userID, keyID int64, err error) {
	if !strings.HasPrefix(key, APIKeyPrefix) || len(key) > 200 {
		return 0, 0, ErrUnauthorized
	}
	sum := sha256.Sum256([]byte(key))
	err = s.pool.QueryRow(ctx, `
		UPDATE api_keys SET last_used_at = now() WHERE key_hash = $1 RETURNING user_id, id`, sum[:]).Scan(&userID, &keyID)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, ErrUnauthorized
	}
	if err != nil {
		return 0, 0, fmt.Errorf("check api key: %w", err)
	}
	return userID, keyID, nil
}

// NewToken returns 24 random bytes as unpadded base64url: 192 bits, unguessable, and
// valid in URLs and NATS KV keys.
func NewToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Argon2id parameters (RFC 9106's second recommended option, with 64 MiB).
const (
	argonTime    = 3
	argonMemory  = 64 * 1024
	argonThreads = 2
	argonKeyLen  = 32
)

// HashPassword returns an argon2id PHC string of password.
func HashPassword(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("random salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// CheckPassword reports whether password matches the PHC string hash.
func CheckPassword(hash, password string) bool {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 || len(want) > 128 {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}
