package query

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/haru-analytics/haru/services/query/internal/account"
)

// Admin runs the account commands operators script with (`haru admin ...`).
type Admin struct {
	accounts *account.Store
}

// NewAdmin returns the admin commands over pool.
func NewAdmin(pool *pgxpool.Pool) (*Admin, error) {
	a, err := account.New(pool)
	if err != nil {
		return nil, err
	}
	return &Admin{accounts: a}, nil
}

// ErrEmailTaken is returned when creating a user whose email is registered.
var ErrEmailTaken = account.ErrEmailTaken

// CreateUser registers a user and returns its id.
func (a *Admin) CreateUser(ctx context.Context, email, password string) (int64, error) {
	u, err := a.accounts.CreateUser(ctx, email, password)
	if err != nil {
		return 0, err
	}
	return u.ID, nil
}

// ResetPassword sets the password of the user with email.
func (a *Admin) ResetPassword(ctx context.Context, email, password string) error {
	u, err := a.accounts.UserByEmail(ctx, email)
	if err != nil {
		return fmt.Errorf("user %s: %w", email, err)
	}
	return a.accounts.SetPassword(ctx, u.ID, password)
}

// SiteInfo is what the admin commands print about a site.
type SiteInfo struct {
	ID     int64
	Name   string
	Domain string
	Token  string
}

// CreateSite adds a site for the user with email and returns it with its token.
func (a *Admin) CreateSite(ctx context.Context, email, name, domain, timezone string) (SiteInfo, error) {
	u, err := a.accounts.UserByEmail(ctx, email)
	if err != nil {
		return SiteInfo{}, fmt.Errorf("user %s: %w", email, err)
	}
	s, err := a.accounts.CreateSite(ctx, u.ID, account.SiteInput{Name: name, Domain: domain, Timezone: timezone})
	if err != nil {
		return SiteInfo{}, err
	}
	return SiteInfo{ID: s.ID, Name: s.Name, Domain: s.Domain, Token: s.Token}, nil
}

// CreateAPIKey returns a new stats API key for the user with email, replacing any of
// that user's keys with the same name.
func (a *Admin) CreateAPIKey(ctx context.Context, email, name string) (string, error) {
	u, err := a.accounts.UserByEmail(ctx, email)
	if err != nil {
		return "", fmt.Errorf("user %s: %w", email, err)
	}
	if err := a.accounts.DeleteAPIKeysNamed(ctx, u.ID, name); err != nil {
		return "", err
	}
	return a.accounts.CreateAPIKey(ctx, u.ID, name)
}

// EnsureDemo makes sure the demo user and its site exist (the password is reset to the
// given one) and returns the site and a fresh API key named "demo".
func (a *Admin) EnsureDemo(ctx context.Context, email, password, siteName, domain string) (SiteInfo, string, error) {
	if _, err := a.CreateUser(ctx, email, password); err != nil && !errors.Is(err, account.ErrEmailTaken) {
		return SiteInfo{}, "", err
	}
	if err := a.ResetPassword(ctx, email, password); err != nil {
		return SiteInfo{}, "", err
	}
	u, err := a.accounts.UserByEmail(ctx, email)
	if err != nil {
		return SiteInfo{}, "", err
	}
	sites, err := a.accounts.SitesOf(ctx, u.ID)
	if err != nil {
		return SiteInfo{}, "", err
	}
	var info SiteInfo
	for _, s := range sites {
		if s.Domain == domain {
			info = SiteInfo{ID: s.ID, Name: s.Name, Domain: s.Domain, Token: s.Token}
		}
	}
	if info.ID == 0 {
		if info, err = a.CreateSite(ctx, email, siteName, domain, "UTC"); err != nil {
			return SiteInfo{}, "", err
		}
	}
	key, err := a.CreateAPIKey(ctx, email, "demo")
	if err != nil {
		return SiteInfo{}, "", err
	}
	return info, key, nil
}

// ErrNoSite is returned for a site id that does not exist.
var ErrNoSite = errors.New("no such site")

// CreateSiteSecret gives site a new secret key for the batch endpoint and returns it; the
// previous one, if any, stops working as soon as the registry mirrors the change. Only
// its SHA-256 is stored, so the secret is shown this once.
func (a *Admin) CreateSiteSecret(ctx context.Context, siteID int64) (string, error) {
	secret, err := a.accounts.CreateSiteSecret(ctx, siteID)
	if errors.Is(err, account.ErrNotFound) {
		return "", fmt.Errorf("site %d: %w", siteID, ErrNoSite)
	}
	return secret, err
}
