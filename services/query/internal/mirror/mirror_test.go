package mirror

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/natstest"
	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/pgtest"
)

// TestMirrorFollowsSitesTable: creation, token rotation and deletion by any process reach
// the bucket within a second; the periodic reconcile repairs a key deleted by hand.
func TestMirrorFollowsSitesTable(t *testing.T) {
	db := pgtest.New(t)
	ns := natstest.New(t)
	js, err := jetstream.New(ns.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	names, _ := event.NewNames(event.DefaultPrefix)
	kv, err := natsutil.EnsureSites(ctx, js, names, 1)
	if err != nil {
		t.Fatal(err)
	}
	var user int64
	if err := db.Pool.QueryRow(ctx, `INSERT INTO users (email, password_hash) VALUES ('m@example.com', 'x') RETURNING id`).Scan(&user); err != nil {
		t.Fatal(err)
	}
	// A site that exists before the mirror starts arrives by the initial reconcile.
	var early int64
	if err := db.Pool.QueryRow(ctx, `INSERT INTO sites (user_id, name, domain, token) VALUES ($1, 'E', 'e.example', 'early') RETURNING id`, user).Scan(&early); err != nil {
		t.Fatal(err)
	}
	// A stale key for a site that no longer exists is removed by the initial reconcile.
	stale, _ := event.EncodeSite(event.Site{ID: 999, Token: "stale"})
	if _, err := kv.Put(ctx, event.SiteKey("stale"), stale); err != nil {
		t.Fatal(err)
	}

	m, err := New(db.Pool, kv, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	waitKey(t, kv, "early", true)
	waitKey(t, kv, "stale", false)

	var id int64
	if err := db.Pool.QueryRow(ctx, `INSERT INTO sites (user_id, name, domain, token, timezone) VALUES ($1, 'S', 's.example', 'tok1', 'Europe/Berlin') RETURNING id`, user).Scan(&id); err != nil {
		t.Fatal(err)
	}
	got := waitKey(t, kv, "tok1", true)
	if got.ID != id || got.Domain != "s.example" || got.Timezone != "Europe/Berlin" {
		t.Fatalf("registry entry = %+v", got)
	}

	if _, err := db.Pool.Exec(ctx, `UPDATE sites SET token = 'tok2' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	waitKey(t, kv, "tok2", true)
	waitKey(t, kv, "tok1", false)

	if _, err := db.Pool.Exec(ctx, `UPDATE sites SET domain = 'new.example' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for waitKey(t, kv, "tok2", true).Domain != "new.example" {
		if time.Now().After(deadline) {
			t.Fatal("domain change not mirrored within 1s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Deleted or changed by hand in NATS: the periodic reconcile puts it right.
	if err := kv.Delete(ctx, event.SiteKey("early")); err != nil {
		t.Fatal(err)
	}
	waitKeyWithin(t, kv, "early", true, 3*time.Second)
	wrong, _ := event.EncodeSite(event.Site{ID: early, Token: "early", Domain: "wrong.example"})
	if _, err := kv.Put(ctx, event.SiteKey("early"), wrong); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(3 * time.Second)
	for waitKey(t, kv, "early", true).Domain != "e.example" {
		if time.Now().After(deadline) {
			t.Fatal("a key changed by hand not repaired within 3s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	if _, err := db.Pool.Exec(ctx, `DELETE FROM sites WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	waitKey(t, kv, "tok2", false)
}

func waitKey(t *testing.T, kv jetstream.KeyValue, token string, present bool) event.Site {
	t.Helper()
	return waitKeyWithin(t, kv, token, present, time.Second)
}

func waitKeyWithin(t *testing.T, kv jetstream.KeyValue, token string, present bool, within time.Duration) event.Site {
	t.Helper()
	return waitEntry(t, kv, event.SiteKey(token), present, within)
}

// waitEntry waits until the registry entry under key is present (and returns it) or gone.
func waitEntry(t *testing.T, kv jetstream.KeyValue, key string, present bool, within time.Duration) event.Site {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		e, err := kv.Get(context.Background(), key)
		switch {
		case err == nil && present:
			s, derr := event.DecodeSite(e.Value())
			if derr != nil {
				t.Fatal(derr)
			}
			return s
		case errors.Is(err, jetstream.ErrKeyNotFound) && !present:
			return event.Site{}
		case err != nil && !errors.Is(err, jetstream.ErrKeyNotFound):
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %q present=%v not reached within %s", key, present, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMirrorSecrets: a site's secret, set and rotated by an UPDATE from any process, is
// mirrored under its hash within a second and the old hash is removed; the token entry
// carries the hash too, and a site without a secret has no secret entry.
func TestMirrorSecrets(t *testing.T) {
	db := pgtest.New(t)
	ns := natstest.New(t)
	js, err := jetstream.New(ns.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	names, _ := event.NewNames(event.DefaultPrefix)
	kv, err := natsutil.EnsureSites(ctx, js, names, 1)
	if err != nil {
		t.Fatal(err)
	}
	var user, id int64
	if err := db.Pool.QueryRow(ctx, `INSERT INTO users (email, password_hash) VALUES ('s@example.com', 'x') RETURNING id`).Scan(&user); err != nil {
		t.Fatal(err)
	}
	if err := db.Pool.QueryRow(ctx, `INSERT INTO sites (user_id, name, domain, token) VALUES ($1, 'S', 's.example', 'tok') RETURNING id`, user).Scan(&id); err != nil {
		t.Fatal(err)
	}
	m, err := New(db.Pool, kv, slog.New(slog.DiscardHandler), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	if got := waitKey(t, kv, "tok", true); got.SecretHash != "" {
		t.Fatalf("site without a secret has SecretHash %q", got.SecretHash)
	}

	setSecret := func(secret string) {
		t.Helper()
		h := sha256.Sum256([]byte(secret))
		if _, err := db.Pool.Exec(ctx, `UPDATE sites SET secret_hash = $1 WHERE id = $2`, h[:], id); err != nil {
			t.Fatal(err)
		}
	}
	setSecret("first-secret")
	first := event.HashSecret("first-secret")
	if got := waitEntry(t, kv, event.SecretKey(first), true, time.Second); got.ID != id || got.Token != "tok" {
		t.Fatalf("secret entry = %+v", got)
	}
	deadline := time.Now().Add(time.Second)
	for waitKey(t, kv, "tok", true).SecretHash != first {
		if time.Now().After(deadline) {
			t.Fatal("token entry does not carry the secret hash within 1s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	setSecret("second-secret")
	waitEntry(t, kv, event.SecretKey(event.HashSecret("second-secret")), true, time.Second)
	waitEntry(t, kv, event.SecretKey(first), false, time.Second)

	if _, err := db.Pool.Exec(ctx, `DELETE FROM sites WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	waitEntry(t, kv, event.SecretKey(event.HashSecret("second-secret")), false, time.Second)
}
