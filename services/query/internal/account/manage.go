package account

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/pgutil"
)

// UpdateSite changes a site userID owns. The registry mirror sees the change through the
// sites trigger. A new timezone asks, in the same transaction, for the site's rollups to
// be rebuilt in it (rollup_rebuilds, which a writer takes up): the days written before
// were bucketed in the old zone.
func (s *Store) UpdateSite(ctx context.Context, userID, siteID int64, in SiteInput) (Site, error) {
	if err := in.normalize(); err != nil {
		return Site{}, err
	}
	var site Site
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// FOR UPDATE reads the zone a concurrent change has just committed, not the
		// statement's snapshot, so no change of zone goes unnoticed.
		var was string
		err := tx.QueryRow(ctx, `SELECT timezone FROM sites WHERE id = $1 AND user_id = $2 FOR UPDATE`, siteID, userID).Scan(&was)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("read site: %w", err)
		}
		site, err = scanSite(tx.QueryRow(ctx, `
			UPDATE sites SET name = $3, domain = $4, timezone = $5, allow_any_host = $6
			WHERE id = $1 AND user_id = $2
			RETURNING id, user_id, name, domain, token, timezone, allow_any_host, created_at`,
			siteID, userID, in.Name, in.Domain, in.Timezone, in.AllowAnyHost))
		if err != nil || site.Timezone == was {
			return err
		}
		if _, err := tx.Exec(ctx, requestRebuild, siteID); err != nil {
			return fmt.Errorf("ask for a rollup rebuild: %w", err)
		}
		return nil
	})
	if err != nil {
		return Site{}, err
	}
	return site, nil
}

// requestRebuild asks for a site's rollups to be rebuilt; asked again while a writer
// runs it, the request's new time tells the writer to run it once more when done.
const requestRebuild = `
	INSERT INTO rollup_rebuilds (site_id) VALUES ($1)
	ON CONFLICT (site_id) DO UPDATE SET requested_at = clock_timestamp(), attempts = 0, last_error = NULL`

// Rebuild is a site's pending rollup rebuild: asked for at Requested, its last attempt
// failed with LastError (empty when none has).
type Rebuild struct {
	Requested time.Time
	LastError string
}

// PendingRebuild returns the site's rollup rebuild still to run or running, nil if none.
func (s *Store) PendingRebuild(ctx context.Context, siteID int64) (*Rebuild, error) {
	var r Rebuild
	err := s.pool.QueryRow(ctx, `SELECT requested_at, coalesce(last_error, '') FROM rollup_rebuilds WHERE site_id = $1`, siteID).
		Scan(&r.Requested, &r.LastError)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read rollup rebuild: %w", err)
	}
	return &r, nil
}

// RotateToken gives a site userID owns a new token; the old one stops working once the
// registry mirror has propagated the change.
func (s *Store) RotateToken(ctx context.Context, userID, siteID int64) (Site, error) {
	token, err := NewToken()
	if err != nil {
		return Site{}, err
	}
	return scanSite(s.pool.QueryRow(ctx, `
		UPDATE sites SET token = $3 WHERE id = $1 AND user_id = $2
		RETURNING id, user_id, name, domain, token, timezone, allow_any_host, created_at`,
		siteID, userID, token))
}

// siteDataTables lists the tables (not partitions) that hold rows of a site by a site_id
// column besides sites itself: events, rollups, dead letters, and whatever later
// migrations add, so deleting a site cannot miss one.
const siteDataTables = `
	SELECT c.relname FROM pg_class c
	JOIN pg_namespace n ON n.oid = c.relnamespace
	JOIN pg_attribute a ON a.attrelid = c.oid
	WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition
	  AND a.attname = 'site_id' AND NOT a.attisdropped
	ORDER BY c.relname`

// DeleteSite removes a site userID owns with all its data, in one transaction. It first
// takes the site's lock, so a writer batch of the site's events that has already read the
// site as existing commits before the deletion, which then removes its rows too; a
// later batch waits for the deletion and finds the site gone.
func (s *Store) DeleteSite(ctx context.Context, userID, siteID int64) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, pgutil.LockSite, siteID); err != nil {
		return fmt.Errorf("lock site: %w", err)
	}
	tag, err := tx.Exec(ctx, `DELETE FROM sites WHERE id = $1 AND user_id = $2`, siteID, userID)
	if err != nil {
		return fmt.Errorf("delete site: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	rows, err := tx.Query(ctx, siteDataTables)
	if err != nil {
		return fmt.Errorf("list site tables: %w", err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list site tables: %w", err)
	}
	for _, table := range tables {
		if _, err := tx.Exec(ctx, `DELETE FROM `+pgx.Identifier{table}.Sanitize()+` WHERE site_id = $1`, siteID); err != nil {
			return fmt.Errorf("delete site data from %s: %w", table, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit site deletion: %w", err)
	}
	return nil
}

// SiteSecretPrefix starts every site secret key, so a leaked one is recognisable.
const SiteSecretPrefix = "hsk_"

// CreateSiteSecret gives a site a new secret key for ingest's batch endpoint and returns
// it; the previous one, if any, stops working as soon as the registry mirrors the change.
// Only its SHA-256 is stored, so the secret is shown this once. The caller has checked
// who may do this.
func (s *Store) CreateSiteSecret(ctx context.Context, siteID int64) (string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("site secret: %w", err)
	}
	secret := SiteSecretPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	h := sha256.Sum256([]byte(secret))
	tag, err := s.pool.Exec(ctx, `UPDATE sites SET secret_hash = $1 WHERE id = $2`, h[:], siteID)
	if err != nil {
		return "", fmt.Errorf("site %d secret: %w", siteID, err)
	}
	if tag.RowsAffected() == 0 {
		return "", ErrNotFound
	}
	return secret, nil
}

// HasEvents reports whether any event of the site is stored.
func (s *Store) HasEvents(ctx context.Context, siteID int64) (bool, error) {
	var ok bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM events WHERE site_id = $1)`, siteID).Scan(&ok); err != nil {
		return false, fmt.Errorf("look for events: %w", err)
	}
	return ok, nil
}

// APIKey is a stored key as its owner sees it: never the key itself.
type APIKey struct {
	ID         int64
	Name       string
	Prefix     string
	CreatedAt  time.Time
	LastUsedAt *time.Time
}

// APIKeysOf lists a user's keys, newest first.
func (s *Store) APIKeysOf(ctx context.Context, userID int64) ([]APIKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, name, prefix, created_at, last_used_at FROM api_keys
		WHERE user_id = $1 ORDER BY created_at DESC, id DESC`, userID)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[APIKey])
}

// DeleteAPIKey revokes one of userID's keys.
func (s *Store) DeleteAPIKey(ctx context.Context, userID, keyID int64) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM api_keys WHERE id = $1 AND user_id = $2`, keyID, userID)
	if err != nil {
		return fmt.Errorf("delete api key: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// ShareLink is a secret read-only link to one site's dashboard.
type ShareLink struct {
	ID        int64
	SiteID    int64
	Slug      string
	Label     string
	CreatedAt time.Time
	// passwordHash is empty for a link without password.
	passwordHash string
}

// HasPassword reports whether the link asks for a password.
func (l ShareLink) HasPassword() bool { return l.passwordHash != "" }

// CheckPassword reports whether password opens the link.
func (l ShareLink) CheckPassword(password string) bool {
	return l.HasPassword() && len(password) <= 1024 && CheckPassword(l.passwordHash, password)
}

// Pass is the value a browser keeps after entering a link's password: an HMAC keyed by
// the stored hash, so it is unforgeable without the database and dies with the link.
func (l ShareLink) Pass() string {
	m := hmac.New(sha256.New, []byte(l.passwordHash))
	fmt.Fprintf(m, "share-pass:%d:%s", l.ID, l.Slug)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// CheckPass reports whether pass is the link's Pass.
func (l ShareLink) CheckPass(pass string) bool {
	return l.HasPassword() && hmac.Equal([]byte(pass), []byte(l.Pass()))
}

// CreateShareLink adds a share link to a site userID owns; an empty password leaves it
// open to whoever has the link.
func (s *Store) CreateShareLink(ctx context.Context, userID, siteID int64, label, password string) (ShareLink, error) {
	label = strings.TrimSpace(label)
	if len(label) > 100 || !event.Storable(label) {
		return ShareLink{}, fmt.Errorf("%w: label must be at most 100 characters of text", ErrInvalid)
	}
	var hash *string
	if password != "" {
		if len(password) < 8 || len(password) > 1024 {
			return ShareLink{}, fmt.Errorf("%w: a share password must be 8 to 1024 characters", ErrInvalid)
		}
		h, err := HashPassword(password)
		if err != nil {
			return ShareLink{}, err
		}
		hash = &h
	}
	slug, err := NewToken()
	if err != nil {
		return ShareLink{}, err
	}
	l := ShareLink{SiteID: siteID, Slug: slug, Label: label}
	if hash != nil {
		l.passwordHash = *hash
	}
	err = s.pool.QueryRow(ctx, `
		INSERT INTO share_links (site_id, slug, label, password_hash)
		SELECT id, $3, $4, $5 FROM sites WHERE id = $1 AND user_id = $2
		RETURNING id, created_at`, siteID, userID, slug, label, hash).Scan(&l.ID, &l.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return ShareLink{}, ErrNotFound
	}
	if err != nil {
		return ShareLink{}, fmt.Errorf("insert share link: %w", err)
	}
	return l, nil
}

const selectShare = `SELECT l.id, l.site_id, l.slug, l.label, l.created_at, coalesce(l.password_hash, '') FROM share_links l`

func scanShare(row pgx.Row) (ShareLink, error) {
	var l ShareLink
	err := row.Scan(&l.ID, &l.SiteID, &l.Slug, &l.Label, &l.CreatedAt, &l.passwordHash)
	if errors.Is(err, pgx.ErrNoRows) {
		return ShareLink{}, ErrNotFound
	}
	if err != nil {
		return ShareLink{}, fmt.Errorf("read share link: %w", err)
	}
	return l, nil
}

// ShareLinksOf lists the share links of a site userID owns.
func (s *Store) ShareLinksOf(ctx context.Context, userID, siteID int64) ([]ShareLink, error) {
	rows, err := s.pool.Query(ctx, selectShare+` JOIN sites s ON s.id = l.site_id
		WHERE l.site_id = $1 AND s.user_id = $2 ORDER BY l.created_at, l.id`, siteID, userID)
	if err != nil {
		return nil, fmt.Errorf("list share links: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (ShareLink, error) { return scanShare(r) })
}

// ShareLinkBySlug returns the link with slug and its site, or ErrNotFound.
func (s *Store) ShareLinkBySlug(ctx context.Context, slug string) (ShareLink, Site, error) {
	if slug == "" || len(slug) > 100 || !event.Storable(slug) {
		return ShareLink{}, Site{}, ErrNotFound
	}
	l, err := scanShare(s.pool.QueryRow(ctx, selectShare+` WHERE l.slug = $1`, slug))
	if err != nil {
		return ShareLink{}, Site{}, err
	}
	site, err := s.SiteByID(ctx, l.SiteID)
	return l, site, err
}

// DeleteShareLink revokes a share link of a site userID owns.
func (s *Store) DeleteShareLink(ctx context.Context, userID, siteID, linkID int64) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM share_links l USING sites s
		WHERE l.id = $1 AND l.site_id = $2 AND s.id = l.site_id AND s.user_id = $3`, linkID, siteID, userID)
	if err != nil {
		return fmt.Errorf("delete share link: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
