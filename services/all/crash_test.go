package all

import (
	"context"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"
)

// TestWriterSIGKILLMidBatch kills the writer process three times at random moments while
// beacons arrive, starting a new one each time, and expects every accepted beacon stored
// exactly once with rollups that match the raw events.
func TestWriterSIGKILLMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("process fault test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r := newCrashRig(t)
	js := r.jetstream(t)
	st, loaded := r.startLoad()
	// One kill in each of three windows of the load, at a random moment within it.
	begin := time.Now()
	for _, w := range [][2]time.Duration{{800 * time.Millisecond, 1800 * time.Millisecond}, {2400 * time.Millisecond, 3400 * time.Millisecond}, {4000 * time.Millisecond, 5000 * time.Millisecond}} {
		at := w[0] + rand.N(w[1]-w[0])
		time.Sleep(time.Until(begin.Add(at)))
		if err := r.writer.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("kill writer: %v", err)
		}
		r.writer.Kill() // reaps it
		t.Logf("writer killed at %s of the load (%d accepted so far)", at.Round(time.Millisecond), st.accepted.Load())
		r.startWriter()
	}
	<-loaded
	r.shortenAckWait(ctx, js)
	took := r.drain(ctx, js, st.accepted.Load())
	t.Logf("drained %s after the load stopped; last writer: %v", took.Round(time.Millisecond), r.writerMetrics())
	report(t, "writer SIGKILLed 3 times", st, r.checkExact(ctx, st), took)
}

// TestWriterPostgresRestart stops the private Postgres for about three seconds under load
// and starts it again: the writer retries its failed batches and ends exact.
func TestWriterPostgresRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("process fault test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r := newCrashRig(t)
	js := r.jetstream(t)
	st, loaded := r.startLoad()
	time.Sleep(1500 * time.Millisecond)
	r.pg.Stop(t)
	t.Logf("postgres stopped (%d accepted so far)", st.accepted.Load())
	time.Sleep(3 * time.Second)
	r.pg.Start(t)
	t.Logf("postgres started again (%d accepted so far)", st.accepted.Load())
	<-loaded
	if r.writer.Exited() {
		t.Fatalf("writer exited during the outage:\n%s", r.writer.Log())
	}
	took := r.drain(ctx, js, st.accepted.Load())
	wm := r.writerMetrics()
	t.Logf("drained %s after the load stopped; writer: %v", took.Round(time.Millisecond), wm)
	// The outage must have been met by a batch, or the test proved nothing.
	if wm["haru_writer_batch_errors_total"] == 0 {
		t.Errorf("no batch failed while Postgres was down")
	}
	report(t, "Postgres stopped for 3 s", st, r.checkExact(ctx, st), took)
}
