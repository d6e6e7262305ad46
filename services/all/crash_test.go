package all

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/proctest"
)

// crashRig is the three services as separate haru processes over a private Postgres and
// a private nats-server, with beacons counted as they are accepted.
type crashRig struct {
	t      *testing.T
	bin    string
	pg     *proctest.Postgres
	nats   *proctest.NATS
	env    map[string]string
	token  string
	ingest string // origin of the collect endpoint
	pool   *pgxpool.Pool
	names  event.Names
	writer *proctest.Proc
	wOps   string // the current writer's ops address
	nw     int    // writers started so far
}

const crashPrefix = "haru"

func newCrashRig(t *testing.T) *crashRig {
	t.Helper()
	pg := proctest.StartPostgres(t)
	nt := proctest.StartNATS(t)
	bin := proctest.Build(t)
	names, err := event.NewNames(crashPrefix)
	if err != nil {
		t.Fatal(err)
	}
	r := &crashRig{t: t, bin: bin, pg: pg, nats: nt, names: names, env: map[string]string{
		"HARU_DATABASE_URL":     pg.URL("haru"),
		"HARU_NATS_URL":         nt.URL(),
		"HARU_NATS_PREFIX":      crashPrefix,
		"HARU_STREAM_MAX_BYTES": "64MiB",
		"HARU_RATE_LIMIT":       "0",
		"HARU_BATCH_SIZE":       "2000",
		"HARU_BATCH_AGE":        "500ms",
		"HARU_LOG_LEVEL":        "warn",
	}}

	out := proctest.Run(t, bin, []string{"admin", "seed-demo"}, r.env, 30*time.Second)
	m := regexp.MustCompile(`Site token:\s+(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("seed-demo printed no site token:\n%s", out)
	}
	r.token = m[1]

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.pool, err = pgxpool.New(ctx, pg.URL("haru"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.pool.Close)

	// The writer first: it creates the stream ingest publishes to.
	r.startWriter()
	r.startService("query")
	r.ingest = "http://" + r.startService("ingest")
	return r
}

// startService starts one target and waits until it is ready; it returns its HTTP address.
func (r *crashRig) startService(target string) string {
	r.t.Helper()
	httpAddr, opsAddr := proctest.FreeAddr(r.t), proctest.FreeAddr(r.t)
	env := map[string]string{"HARU_HTTP_ADDR": httpAddr, "HARU_OPS_ADDR": opsAddr}
	for k, v := range r.env {
		env[k] = v
	}
	p := proctest.Start(r.t, target, r.bin, []string{"-target=" + target}, env)
	p.WaitReady(r.t, "http://"+opsAddr+"/readyz")
	return httpAddr
}

// startWriter starts a new writer process and waits until it is ready.
func (r *crashRig) startWriter() {
	r.t.Helper()
	r.nw++
	opsAddr := proctest.FreeAddr(r.t)
	env := map[string]string{"HARU_OPS_ADDR": opsAddr}
	for k, v := range r.env {
		env[k] = v
	}
	r.wOps = opsAddr
	r.writer = proctest.Start(r.t, fmt.Sprintf("writer%d", r.nw), r.bin, []string{"-target=writer"}, env)
	r.writer.WaitReady(r.t, "http://"+opsAddr+"/readyz")
}

// loadStats are what the beacon sender saw.
type loadStats struct {
	sent, accepted, transportErrs atomic.Int64
	mu                            sync.Mutex
	other                         map[int]int
}

func (s *loadStats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("sent %d, accepted %d, transport errors %d, other statuses %v",
		s.sent.Load(), s.accepted.Load(), s.transportErrs.Load(), s.other)
}

// beacon sends one event and counts its answer; it reports whether it was accepted.
func (r *crashRig) beacon(client *http.Client, i int, st *loadStats) bool {
	name := "pageview"
	if i%10 == 9 {
		name = "signup"
	}
	body := fmt.Sprintf(`{"p":"/p/%d","r":"https://google.com","sw":1920,"sh":1080,"n":%q}`, i%20, name)
	req, _ := http.NewRequest(http.MethodPost, r.ingest+"/api/collect", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+r.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0")
	st.sent.Add(1)
	resp, err := client.Do(req)
	if err != nil {
		st.transportErrs.Add(1)
		return false
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusAccepted {
		st.accepted.Add(1)
		return true
	}
	st.mu.Lock()
	st.other[resp.StatusCode]++
	st.mu.Unlock()
	return false
}

// load sends beacons at about rate per second for d from 127.0.0.1, with a bounded
// number of senders, and returns when the last answer is in.
func (r *crashRig) load(rate int, d time.Duration, st *loadStats) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()
	ticks := make(chan int)
	go func() {
		defer close(ticks)
		tk := time.NewTicker(time.Second / time.Duration(rate))
		defer tk.Stop()
		end := time.After(d)
		for i := 0; ; i++ {
			select {
			case <-end:
				return
			case <-tk.C:
				select {
				case ticks <- i:
				default: // every sender busy: skip the tick rather than queue without bound
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ticks {
				r.beacon(client, i, st)
			}
		}()
	}
	wg.Wait()
}

// primeIngest waits for ingest's copy of the site registry: 401/503 until it arrives.
func (r *crashRig) primeIngest(st *loadStats) {
	r.t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for !r.beacon(client, 0, st) {
		if time.Now().After(deadline) {
			r.t.Fatalf("ingest never accepted a beacon: %s", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	st.mu.Lock()
	clear(st.other) // the registry's arrival, not a fault
	st.mu.Unlock()
	st.sent.Store(st.accepted.Load())
}

// shortenAckWait lowers the writers' consumer AckWait. A SIGKILLed writer's pulled but
// unacknowledged messages are redelivered only after AckWait (30 seconds by design, far
// longer than a batch write); the test plays the operator who shortens it rather than
// wait that long.
func (r *crashRig) shortenAckWait(ctx context.Context, js jetstream.JetStream) {
	r.t.Helper()
	cons, err := js.Consumer(ctx, r.names.Stream, event.ConsumerName)
	if err != nil {
		r.t.Fatalf("consumer: %v", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		r.t.Fatalf("consumer info: %v", err)
	}
	cfg := info.Config
	cfg.AckWait = 2 * time.Second
	if _, err := js.UpdateConsumer(ctx, r.names.Stream, cfg); err != nil {
		r.t.Fatalf("update consumer: %v", err)
	}
}

// drain waits until Postgres holds want events and the consumer has nothing pending,
// and returns how long that took.
func (r *crashRig) drain(ctx context.Context, js jetstream.JetStream, want int64) time.Duration {
	r.t.Helper()
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	var got int64
	var pending, ackPending int
	for {
		if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&got); err != nil {
			r.t.Logf("count events: %v", err)
		}
		if cons, err := js.Consumer(ctx, r.names.Stream, event.ConsumerName); err == nil {
			if info, err := cons.Info(ctx); err == nil {
				pending, ackPending = int(info.NumPending), info.NumAckPending
			}
		}
		if got >= want && pending == 0 && ackPending == 0 {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("not drained in 30s: %d events stored, want %d; consumer pending %d, ack pending %d",
				got, want, pending, ackPending)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkExact asserts the stored events equal the accepted beacons, once each, and that
// the rollups agree with a recount of the raw events.
func (r *crashRig) checkExact(ctx context.Context, st *loadStats) {
	r.t.Helper()
	var stored, dups, rawPV, dimPV, hourlyPV int64
	q := func(sql string, dst *int64) {
		r.t.Helper()
		if err := r.pool.QueryRow(ctx, sql).Scan(dst); err != nil {
			r.t.Fatalf("%s: %v", sql, err)
		}
	}
	q(`SELECT count(*) FROM events`, &stored)
	q(`SELECT count(*) - count(DISTINCT id) FROM events`, &dups)
	q(`SELECT count(*) FROM events WHERE name = 'pageview'`, &rawPV)
	q(`SELECT coalesce(sum(pageviews), 0) FROM rollup_dims WHERE dim = 0`, &dimPV)
	q(`SELECT coalesce(sum(pageviews), 0) FROM rollup_hourly`, &hourlyPV)
	r.t.Logf("%s; stored %d, duplicate ids %d, pageviews raw %d, rollup_dims %d, rollup_hourly %d",
		st, stored, dups, rawPV, dimPV, hourlyPV)
	accepted := st.accepted.Load()
	// A beacon whose answer was lost in transport may or may not be stored; none is
	// expected on loopback, and only those may make up a difference.
	if stored < accepted || stored > accepted+st.transportErrs.Load() {
		r.t.Errorf("stored %d events, want %d (the 202s)", stored, accepted)
	}
	if dups != 0 {
		r.t.Errorf("%d duplicate event ids", dups)
	}
	if rawPV == 0 || dimPV != rawPV || hourlyPV != rawPV {
		r.t.Errorf("pageviews: raw %d, rollup_dims %d, rollup_hourly %d; want all equal and > 0", rawPV, dimPV, hourlyPV)
	}
}

// writerMetrics reads the current writer's counters (the ones that name a fault
// survived) from its /metrics.
func (r *crashRig) writerMetrics() map[string]float64 {
	r.t.Helper()
	resp, err := http.Get("http://" + r.wOps + "/metrics")
	if err != nil {
		r.t.Fatalf("writer metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("writer metrics: %v", err)
	}
	got := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		for _, name := range []string{"haru_writer_messages_redelivered_total", "haru_writer_events_skipped_total", "haru_writer_batch_errors_total", "haru_writer_rows_written_total"} {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				got[name], _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
			}
		}
	}
	return got
}

func (r *crashRig) jetstream(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(r.nats.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// startLoad primes ingest, then sends 500 beacons/s for six seconds in the background;
// loaded is closed when the load ends.
func (r *crashRig) startLoad() (st *loadStats, loaded <-chan struct{}) {
	st = &loadStats{other: map[int]int{}}
	r.primeIngest(st)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.load(500, 6*time.Second, st)
	}()
	return st, done
}

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
	r.checkExact(ctx, st)
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
	r.checkExact(ctx, st)
}
