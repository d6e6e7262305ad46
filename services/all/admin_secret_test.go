package all

import (
	"context"
	"crypto/sha256"
	"strconv"
	"strings"
	"testing"

	"github.com/haru-analytics/haru/pkg/pgtest"
)

// TestAdminSiteSecret: create-site-secret prints a secret once and stores only its
// SHA-256; running it again rotates it; an unknown site is an error.
func TestAdminSiteSecret(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	admin := adminRunner(db.URL)
	run := func(args ...string) (string, error) {
		out, err := admin(args...)
		return strings.TrimSpace(out), err
	}
	if _, err := run("create-user", "-email", "s@example.com", "-password", "a-long-password"); err != nil {
		t.Fatal(err)
	}
	if _, err := run("create-site", "-email", "s@example.com", "-name", "S", "-domain", "s.example"); err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := db.Pool.QueryRow(ctx, `SELECT id FROM sites WHERE name = 'S'`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	stored := func() []byte {
		t.Helper()
		var h []byte
		if err := db.Pool.QueryRow(ctx, `SELECT secret_hash FROM sites WHERE id = $1`, id).Scan(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	first, err := run("create-site-secret", "-site", itoa(id))
	if err != nil || !strings.HasPrefix(first, "hsk_") || len(first) < 40 {
		t.Fatalf("create-site-secret: %q, %v", first, err)
	}
	if h := sha256.Sum256([]byte(first)); string(stored()) != string(h[:]) {
		t.Fatal("stored hash is not SHA-256 of the printed secret")
	}
	second, err := run("create-site-secret", "-site", itoa(id))
	if err != nil || second == first {
		t.Fatalf("rotation: %q, %v", second, err)
	}
	if h := sha256.Sum256([]byte(second)); string(stored()) != string(h[:]) {
		t.Fatal("rotation did not replace the stored hash")
	}
	for _, bad := range [][]string{{"create-site-secret"}, {"create-site-secret", "-site", "999999"}} {
		if _, err := run(bad...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
