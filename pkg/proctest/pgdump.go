package proctest

import (
	"strconv"
	"testing"
)

// Dump returns pg_dump's plain SQL of database db, data included: what a backup of it
// would hold.
func (p *Postgres) Dump(t testing.TB, db string) string {
	t.Helper()
	out, err := p.command("pg_dump", "-h", "127.0.0.1", "-p", strconv.Itoa(p.Port), "-U", "postgres", "--no-owner", db).Output()
	if err != nil {
		t.Fatalf("proctest: pg_dump %s: %v", db, err)
	}
	return string(out)
}
