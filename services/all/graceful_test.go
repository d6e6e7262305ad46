package all

import (
	"context"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/natstest"
	"github.com/haru-analytics/haru/pkg/proctest"
)

// TestSingleBinarySIGTERMUnderLoad stops `haru -target=all` with SIGTERM while about 800
// beacons/s arrive. The process must exit cleanly within a pod's grace period, and once it
// runs again on the same data directory every beacon it accepted must be stored exactly
// once: in Postgres already (the last batch is written and acked on the way out) or still
// in the embedded stream's files.
func TestSingleBinarySIGTERMUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	pg := proctest.StartPostgres(t)
	bin := proctest.Build(t)
	names, err := event.NewNames(event.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	natsAddr := proctest.FreeAddr(t)
	env := map[string]string{
		"HARU_DATABASE_URL": pg.URL("haru"),
		"HARU_DATA_DIR":     t.TempDir(),
		// A client port on the embedded server, so the test can watch the consumer.
		"HARU_NATS_LISTEN": natsAddr,
		"HARU_RATE_LIMIT":  "0",
		"HARU_BATCH_SIZE":  "1000",
		"HARU_BATCH_AGE":   "250ms",
		"HARU_LOG_LEVEL":   "warn",
	}
	token := seedDemo(t, bin, env)
	pool, err := pgxpool.New(ctx, pg.URL("haru"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	first := startTarget(t, bin, "all1", "all", env)
	origin := "http://" + first.http
	ty := newTally()
	prime := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for !taggedBeacon(prime, origin, token, -1, ty) {
		if time.Now().After(deadline) {
			t.Fatalf("haru never accepted a beacon: %s", ty)
		}
		time.Sleep(100 * time.Millisecond)
	}

	stop := make(chan struct{})
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		tagLoad([]string{origin}, token, 800, 0, stop, ty)
	}()
	time.Sleep(4 * time.Second)
	_, acceptedAtTerm, _ := ty.counts()
	if err := first.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	termAt := time.Now()
	if err := first.proc.Wait(30 * time.Second); err != nil {
		t.Fatalf("after SIGTERM: %v\n%s", err, first.proc.Log())
	}
	exitTook := time.Since(termAt)
	// The load goes on against the closed port for a moment: nothing more is accepted.
	time.Sleep(500 * time.Millisecond)
	close(stop)
	<-loaded
	sent, accepted, ambiguous := ty.counts()
	var storedAtExit int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&storedAtExit); err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGTERM after %d accepted; exited cleanly in %s; %s; %d stored at exit",
		acceptedAtTerm, exitTook.Round(time.Millisecond), ty, storedAtExit)
	if acceptedAtTerm < 1000 {
		t.Fatalf("only %d beacons accepted before SIGTERM: the load never ran", acceptedAtTerm)
	}

	// Started again on the same data, it writes what the stream still holds.
	startTarget(t, bin, "all2", "all", env)
	js := natstest.JetStreamAt(t, "nats://"+natsAddr)
	took := (&crashRig{t: t, names: names, pool: pool}).drain(ctx, js, int64(accepted))
	stored, dups := checkTagged(t, ctx, pool, ty)
	t.Logf("single binary SIGTERM: sent %d, accepted %d, ambiguous %d, stored %d (%d at exit, %d after restart), duplicates %d, drained %s after restart",
		sent, accepted, ambiguous, stored, storedAtExit, int64(stored)-storedAtExit, dups, took.Round(time.Millisecond))
}
