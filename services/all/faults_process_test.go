package all

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The fault suite. Each scenario runs the real binary as separate processes over a
// private Postgres and a private nats-server (the rig of rig_test.go), and ends with every
// accepted beacon stored once and rollups equal to a recount. The quick versions run in
// `go test ./...`; HARU_FAULTS=full (`make test-faults`) lengthens the outages.

// faultsFull reports whether the long versions of the fault scenarios run.
func faultsFull() bool { return os.Getenv("HARU_FAULTS") == "full" }

// faultDuration is quick in the normal run and full under HARU_FAULTS=full.
func faultDuration(quick, full time.Duration) time.Duration {
	if faultsFull() {
		return full
	}
	return quick
}

// skipShort skips a process fault test under -short.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("process fault test")
	}
}

// streamMsgs is how many messages the events stream holds.
func (r *crashRig) streamMsgs(ctx context.Context, js jetstream.JetStream) uint64 {
	r.t.Helper()
	s, err := js.Stream(ctx, r.names.Stream)
	if err != nil {
		r.t.Fatalf("stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		r.t.Fatalf("stream info: %v", err)
	}
	return info.State.Msgs
}

// alive fails the test if any service process has ended.
func (r *crashRig) alive() {
	r.t.Helper()
	if r.writer.Exited() {
		r.t.Fatalf("writer exited:\n%s", r.writer.Log())
	}
	for name, p := range r.procs {
		if p.Exited() {
			r.t.Fatalf("%s exited:\n%s", name, p.Log())
		}
	}
}

// TestFaultPostgresDown keeps Postgres down for a while under load (20 s; 5 minutes
// with HARU_FAULTS=full): ingest keeps accepting, the events wait in the stream and none
// is terminated or dead-lettered, and all of them land once Postgres is back.
func TestFaultPostgresDown(t *testing.T) {
	skipShort(t)
	outage := faultDuration(20*time.Second, 5*time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), outage+3*time.Minute)
	defer cancel()
	r := newCrashRig(t)
	// The writer's retries back off up to 30 s, so the backlog may wait that long more.
	r.drainTimeout = 90 * time.Second
	js := r.jetstream(t)
	st := newLoadStats()
	r.primeIngest(st)
	r.drain(ctx, js, st.accepted.Load())
	before := st.accepted.Load()

	r.pg.Stop(t)
	t.Logf("postgres stopped for %s", outage)
	r.load(200, outage, st)
	r.alive()
	waiting := r.streamMsgs(ctx, js)
	wm := r.writerMetrics()
	t.Logf("after the outage: %d accepted during it, %d in the stream; writer %v", st.accepted.Load()-before, waiting, wm)
	if got, want := waiting, uint64(st.accepted.Load()-before); got != want {
		t.Errorf("stream holds %d events at the end of the outage, want all %d accepted during it", got, want)
	}
	if wm["haru_writer_messages_terminated_total"] != 0 || wm["haru_writer_events_dead_lettered_total"] != 0 {
		t.Errorf("events reached a terminal state while Postgres was down: %v", wm)
	}
	if wm["haru_writer_batch_errors_total"] == 0 {
		t.Errorf("no batch failed while Postgres was down")
	}

	r.pg.Start(t)
	took := r.drain(ctx, js, st.accepted.Load())
	t.Logf("drained %s after Postgres returned; writer: %v", took.Round(time.Millisecond), r.writerMetrics())
	report(t, "Postgres down for "+outage.String(), st, r.checkExact(ctx, st), took)
}

// TestFaultNATSKill SIGKILLs the single nats-server (file storage) under load and starts
// it again two seconds later: every beacon that got 202 is stored, every other got a
// non-2xx answer (or none), and the services reconnect on their own.
func TestFaultNATSKill(t *testing.T) {
	skipShort(t)
	down := faultDuration(2*time.Second, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), down+2*time.Minute)
	defer cancel()
	r := newCrashRig(t)
	js := r.jetstream(t)
	st := newLoadStats()
	r.primeIngest(st)
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		r.load(500, down+6*time.Second, st)
	}()
	time.Sleep(1500 * time.Millisecond)
	r.nats.Kill()
	t.Logf("nats-server killed (%d accepted so far)", st.accepted.Load())
	time.Sleep(down)
	r.nats.Start(t)
	t.Logf("nats-server started again (%d accepted so far)", st.accepted.Load())
	<-loaded
	r.alive()
	// The writer's last pulled batch may have lost its ack with the server; it comes back
	// after the ack wait, which the test shortens.
	r.shortenAckWait(ctx, js)
	took := r.drain(ctx, js, st.accepted.Load())
	st.mu.Lock()
	for code, n := range st.other {
		if code >= 200 && code < 300 {
			t.Errorf("%d beacons answered %d: a 2xx other than 202", n, code)
		}
	}
	st.mu.Unlock()
	if st.rejected() == 0 {
		t.Errorf("no beacon was refused while NATS was down: the kill proved nothing")
	}
	t.Logf("drained %s after the load; writer: %v", took.Round(time.Millisecond), r.writerMetrics())
	report(t, "NATS SIGKILLed, back after "+down.String(), st, r.checkExact(ctx, st), took)
}

// TestFaultStreamFull fills a 1 MiB stream while no writer runs: from the first 503 on,
// every further beacon gets 503 and none 202; once a writer runs, every accepted beacon
// lands and the stream takes beacons again.
func TestFaultStreamFull(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := newRig(t, map[string]string{"HARU_STREAM_MAX_BYTES": "1MiB"})
	js := r.jetstream(t)
	st := newLoadStats()
	r.primeIngest(st)
	r.drain(ctx, js, st.accepted.Load())
	if err := r.writer.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := r.writer.Wait(30 * time.Second); err != nil {
		t.Fatalf("writer stop: %v", err)
	}

	// Fill with 16 senders until one is refused; a 1 MiB stream holds a few thousand.
	client := &http.Client{Timeout: 5 * time.Second}
	full := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				select {
				case <-full:
					return
				default:
				}
				if !r.beacon(client, i, st) {
					once.Do(func() { close(full) })
				}
			}
		}()
	}
	wg.Wait()
	filled := st.accepted.Load()
	st.mu.Lock()
	t.Logf("stream full after %d accepted: %d messages; answers %v", filled, r.streamMsgs(ctx, js), st.other)
	if len(st.other) != 1 || st.other[http.StatusServiceUnavailable] == 0 || st.transportErrs.Load() != 0 {
		t.Errorf("refusals while filling = %v (transport errors %d), want 503 only", st.other, st.transportErrs.Load())
	}
	st.mu.Unlock()

	// Every further beacon: 503, none accepted.
	probes := newLoadStats()
	for i := range 200 {
		r.beacon(client, i, probes)
	}
	probes.mu.Lock()
	if probes.accepted.Load() != 0 || probes.other[http.StatusServiceUnavailable] != 200 {
		t.Errorf("200 beacons into the full stream: %d accepted, answers %v; want 200 × 503", probes.accepted.Load(), probes.other)
	}
	probes.mu.Unlock()

	probes.mu.Lock()
	st.mu.Lock()
	st.sent.Add(probes.sent.Load())
	for code, n := range probes.other {
		st.other[code] += n
	}
	st.mu.Unlock()
	probes.mu.Unlock()

	r.startWriter()
	took := r.drain(ctx, js, st.accepted.Load())
	report(t, "stream full (1 MiB, no writer), then 200 more", st, r.checkExact(ctx, st), took)
	if !r.beacon(client, 0, probes) {
		t.Errorf("ingest refuses beacons after the stream drained: %s", probes)
	}
}

// TestFaultSIGTERM stops each service with SIGTERM under load, one after the other: the
// writer (replaced at once), the query service with a live stream open, and ingest. Each
// exits 0 within its shutdown time, and nothing accepted is lost.
func TestFaultSIGTERM(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := newCrashRig(t)
	js := r.jetstream(t)
	frames := openLive(t, liveURL(r))
	<-frames
	st, loaded := r.startLoad()
	stop := func(name string, sig func() error, wait func(time.Duration) error) {
		t.Helper()
		at := time.Now()
		accepted := st.accepted.Load()
		if err := sig(); err != nil {
			t.Fatalf("signal %s: %v", name, err)
		}
		if err := wait(30 * time.Second); err != nil {
			t.Errorf("%s after SIGTERM: %v, want exit code 0", name, err)
		}
		t.Logf("%s stopped in %s (%d accepted before)", name, time.Since(at).Round(time.Millisecond), accepted)
	}

	time.Sleep(time.Second)
	w := r.writer
	stop("writer", func() error { return w.Signal(syscall.SIGTERM) }, w.Wait)
	r.startWriter()

	time.Sleep(time.Second)
	q := r.procs["query"]
	stop("query", func() error { return q.Signal(syscall.SIGTERM) }, q.Wait)
	closed := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-frames:
		case <-closed:
			t.Errorf("live stream still open 5 s after query stopped")
			open = false
		}
	}

	time.Sleep(time.Second)
	in := r.procs["ingest"]
	stop("ingest", func() error { return in.Signal(syscall.SIGTERM) }, in.Wait)
	<-loaded
	took := r.drain(ctx, js, st.accepted.Load())
	report(t, "SIGTERM to writer, query, ingest", st, r.checkExact(ctx, st), took)
}

// liveURL is the demo site's live stream on the rig's query service.
func liveURL(r *crashRig) string {
	return r.query + "/api/v1/sites/" + strconv.FormatInt(r.siteID, 10) + "/live?period=today&key=" + r.apiKey
}
