package store

import (
	"context"
	"strings"
	"testing"

	"github.com/haru-analytics/haru/pkg/pgtest"
)

// TestHashTextExtendedMatchesPostgres: the Go port gives Postgres's own values for every
// tail length, multi-byte text and both seeds in use.
func TestHashTextExtendedMatchesPostgres(t *testing.T) {
	db := pgtest.New(t)
	inputs := []string{"", "a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg", "abcdefgh", "abcdefghi",
		"abcdefghij", "abcdefghijk", "abcdefghijkl", "abcdefghijklm", "1\x1f\x1f/pricing", "16\x1fplan\x1fpro",
		"Zürich – 東京", strings.Repeat("xyz", 50), "42:123456789"}
	for _, seed := range []uint64{0, 1751220853} {
		for _, s := range inputs {
			var want int64
			if err := db.Pool.QueryRow(context.Background(), `SELECT hashtextextended($1, $2)`, s, int64(seed)).Scan(&want); err != nil {
				t.Fatal(err)
			}
			if got := hashTextExtended(s, seed); got != want {
				t.Errorf("hashTextExtended(%q, %d) = %d, Postgres says %d", s, seed, got, want)
			}
		}
	}
}
