package account

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haru-analytics/haru/pkg/event"
)

// SessionTTL is how long a login lasts.
const SessionTTL = 30 * 24 * time.Hour

// Session is a logged-in browser: the token is in its cookie, only the hash is stored.
type Session struct {
	ID     int64
	UserID int64
	Email  string
}

// Authenticate returns the user whose email and password match, or ErrBadPassword. An
// unknown email costs the same argon2id work as a known one, so neither the answer nor
// its timing tells whether an email is registered.
func (s *Store) Authenticate(ctx context.Context, email, password string) (User, error) {
	var u User
	var hash string
	err := pgx.ErrNoRows // text no address can be is no user's
	if event.Storable(email) {
		err = s.pool.QueryRow(ctx, `SELECT id, email, created_at, password_hash FROM users WHERE lower(email) = lower($1)`,
			strings.TrimSpace(email)).Scan(&u.ID, &u.Email, &u.CreatedAt, &hash)
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		CheckPassword(s.dummyHash(), password)
		return User{}, ErrBadPassword
	case err != nil:
		return User{}, fmt.Errorf("find user: %w", err)
	}
	if len(password) > 1024 || !CheckPassword(hash, password) {
		return User{}, ErrBadPassword
	}
	return u, nil
}

// dummyHash is an argon2id hash of a random password, made once, that Authenticate checks
// unknown emails against.
func (s *Store) dummyHash() string {
	s.dummyOnce.Do(func() {
		tok, err := NewToken()
		if err == nil {
			s.dummy, err = HashPassword(tok)
		}
		if err != nil {
			// Never matches, still costs an argon2id run of the same parameters.
			s.dummy = fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
				argonMemory, argonTime, argonThreads)
		}
	})
	return s.dummy
}

// CreateSession starts a session for userID and returns its token.
func (s *Store) CreateSession(ctx context.Context, userID int64) (string, error) {
	token, err := NewToken()
	if err != nil {
		return "", err
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM sessions WHERE user_id = $1 AND expires_at <= now()`, userID); err != nil {
		return "", fmt.Errorf("drop expired sessions: %w", err)
	}
	sum := sha256.Sum256([]byte(token))
	_, err = s.pool.Exec(ctx, `INSERT INTO sessions (user_id, token_hash, expires_at) VALUES ($1, $2, now() + $3::interval)`,
		userID, sum[:], fmt.Sprintf("%d seconds", int64(SessionTTL/time.Second)))
	if err != nil {
		return "", fmt.Errorf("insert session: %w", err)
	}
	return token, nil
}

// SessionByToken returns the live session of token, or ErrUnauthorized.
func (s *Store) SessionByToken(ctx context.Context, token string) (Session, error) {
	if token == "" || len(token) > 200 {
		return Session{}, ErrUnauthorized
	}
	sum := sha256.Sum256([]byte(token))
	var ses Session
	err := s.pool.QueryRow(ctx, `
		SELECT s.id, s.user_id, u.email FROM sessions s JOIN users u ON u.id = s.user_id
		WHERE s.token_hash = $1 AND s.expires_at > now()`, sum[:]).Scan(&ses.ID, &ses.UserID, &ses.Email)
	if errors.Is(err, pgx.ErrNoRows) {
		return Session{}, ErrUnauthorized
	}
	if err != nil {
		return Session{}, fmt.Errorf("find session: %w", err)
	}
	return ses, nil
}

// DeleteSession ends one session.
func (s *Store) DeleteSession(ctx context.Context, id int64) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM sessions WHERE id = $1`, id); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// ChangePassword checks the user's current password, sets the new one and ends every
// session of the user but keep. It returns the ids of the ended sessions.
func (s *Store) ChangePassword(ctx context.Context, userID, keep int64, current, next string) ([]int64, error) {
	var hash string
	if err := s.pool.QueryRow(ctx, `SELECT password_hash FROM users WHERE id = $1`, userID).Scan(&hash); err != nil {
		return nil, fmt.Errorf("read user: %w", err)
	}
	if !CheckPassword(hash, current) {
		return nil, ErrBadPassword
	}
	if err := s.setPassword(ctx, userID, next); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `DELETE FROM sessions WHERE user_id = $1 AND id <> $2 RETURNING id`, userID, keep)
	if err != nil {
		return nil, fmt.Errorf("end sessions: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// DeleteUser checks the password and removes the user with every site and its data,
// sessions, share links and API keys.
func (s *Store) DeleteUser(ctx context.Context, userID int64, password string) error {
	var hash string
	if err := s.pool.QueryRow(ctx, `SELECT password_hash FROM users WHERE id = $1`, userID).Scan(&hash); err != nil {
		return fmt.Errorf("read user: %w", err)
	}
	if !CheckPassword(hash, password) {
		return ErrBadPassword
	}
	sites, err := s.SitesOf(ctx, userID)
	if err != nil {
		return err
	}
	for _, site := range sites {
		if err := s.DeleteSite(ctx, userID, site.ID); err != nil {
			return err
		}
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM users WHERE id = $1`, userID); err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	return nil
}
