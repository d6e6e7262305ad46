// Package pgutil opens Postgres pools, creates the database if it is missing, applies
// the embedded migrations and encodes the bulk writes (binary COPY, arrays) of the writer.
package pgutil

import (
	"context"
	"errors"
	"fmt"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/haru-analytics/haru/migrations"
)

// DefaultURL is the database a single box uses unless HARU_DATABASE_URL says otherwise.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/haru?sslmode=disable"

// LockSite takes site $1's lock exclusively until the transaction ends. Every writer
// batch holds the same lock shared (the writer's sql/lock_sites.sql), from reading which of
// its sites exist until it commits; a rollup rebuild and a site's deletion take it
// exclusively, so neither runs beside a batch of the site's events.
const LockSite = `SELECT pg_advisory_xact_lock(1751220853, ($1::bigint % 2147483647)::int)`

// MaxConns bounds a configured pool size (HARU_DB_MAX_CONNS): Postgres's own default
// max_connections is 100, and a value past int32 would wrap around.
const MaxConns = 1000

// Open returns a pool for url with at most maxConns connections (0 keeps pgx's default),
// after checking that the database answers.
func Open(ctx context.Context, dbURL string, maxConns int32, appName string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	if appName != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = appName
	}
	cfg.AfterConnect = func(_ context.Context, c *pgx.Conn) error {
		RegisterFastArrays(c.TypeMap())
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping database: %w", err)
	}
	return pool, nil
}

// EnsureDatabase creates the database named in dbURL if it does not exist, connecting to
// the server's "postgres" database to do so.
func EnsureDatabase(ctx context.Context, dbURL string) (created bool, err error) {
	// pgx's parser reads both forms: a URL and keyword=value pairs.
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return false, fmt.Errorf("parse database url: %w", err)
	}
	name := cfg.Database
	if name == "" {
		return false, errors.New("database url names no database")
	}
	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return false, fmt.Errorf("connect to server: %w", err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return false, fmt.Errorf("look up database: %w", err)
	}
	if exists {
		return false, nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // created meanwhile
			return false, nil
		}
		return false, fmt.Errorf("create database: %w", err)
	}
	return true, nil
}

// Migrate applies every pending migration. It is safe to run from several processes at
// once: golang-migrate holds an advisory lock while it works.
func Migrate(ctx context.Context, pool *pgxpool.Pool) (version uint, err error) {
	if err := pool.Ping(ctx); err != nil {
		return 0, fmt.Errorf("ping database: %w", err)
	}
	src, err := iofs.New(migrations.FS, ".")
	if err != nil {
		return 0, fmt.Errorf("open migrations: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	drv, err := migratepgx.WithInstance(db, &migratepgx.Config{})
	if err != nil {
		return 0, fmt.Errorf("migration driver: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", drv)
	if err != nil {
		_ = drv.Close()
		return 0, fmt.Errorf("migrator: %w", err)
	}
	// The driver holds a pooled connection until closed; the pool's Close would wait on it.
	defer m.Close()
	if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return 0, fmt.Errorf("apply migrations: %w", err)
	}
	v, dirty, err := m.Version()
	if err != nil {
		return 0, fmt.Errorf("migration version: %w", err)
	}
	if dirty {
		return v, fmt.Errorf("migration %d is dirty: fix the schema by hand, then force the version", v)
	}
	return v, nil
}
