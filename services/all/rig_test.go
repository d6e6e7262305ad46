package all

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/proctest"
)

// crashRig is the three services as separate haru processes over a private Postgres and
// a private nats-server, with beacons counted as they are accepted. The crash and fault
// tests share it.
type crashRig struct {
	t      *testing.T
	bin    string
	pg     *proctest.Postgres
	nats   *proctest.NATS
	env    map[string]string
	token  string
	siteID int64
	apiKey string                    // the demo user's stats API key
	ingest string                    // origin of the collect endpoint
	query  string                    // origin of the query service
	procs  map[string]*proctest.Proc // the latest ingest and query process
	ops    map[string]string         // their ops addresses
	pool   *pgxpool.Pool
	names  event.Names
	writer *proctest.Proc
	wOps   string // the current writer's ops address
	nw     int    // writers started so far
	// drainTimeout bounds drain; longer outages leave a longer backlog.
	drainTimeout time.Duration
}

const crashPrefix = "haru"

func newCrashRig(t *testing.T) *crashRig {
	t.Helper()
	return newRig(t, nil)
}

// newRig starts the rig with env set over the defaults for every process.
func newRig(t *testing.T, env map[string]string) *crashRig {
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
	}, procs: map[string]*proctest.Proc{}, ops: map[string]string{}, drainTimeout: 30 * time.Second}
	for k, v := range env {
		r.env[k] = v
	}

	out := proctest.Run(t, bin, []string{"admin", "seed-demo"}, r.env, 30*time.Second)
	m := regexp.MustCompile(`Site token:\s+(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("seed-demo printed no site token:\n%s", out)
	}
	r.token = m[1]
	if m := regexp.MustCompile(`Demo site:.*\(id (\d+)\)\s+Site token:.*\s+API key:\s+(\S+)`).FindStringSubmatch(out); m != nil {
		r.siteID, _ = strconv.ParseInt(m[1], 10, 64)
		r.apiKey = m[2]
	}
	if r.apiKey == "" {
		t.Fatalf("seed-demo printed no site id and API key:\n%s", out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.pool, err = pgxpool.New(ctx, pg.URL("haru"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.pool.Close)

	// The writer first: it creates the stream ingest publishes to.
	r.startWriter()
	r.query = "http://" + r.startService("query", nil)
	r.ingest = "http://" + r.startService("ingest", nil)
	return r
}

// startService starts one target, with extra set over the rig's environment, and waits
// until it is ready; it returns its HTTP address and keeps the process in r.procs.
func (r *crashRig) startService(target string, extra map[string]string) string {
	r.t.Helper()
	httpAddr, opsAddr := proctest.FreeAddr(r.t), proctest.FreeAddr(r.t)
	env := map[string]string{"HARU_HTTP_ADDR": httpAddr, "HARU_OPS_ADDR": opsAddr}
	for k, v := range r.env {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	p := proctest.Start(r.t, target, r.bin, []string{"-target=" + target}, env)
	p.WaitReady(r.t, "http://"+opsAddr+"/readyz")
	r.procs[target], r.ops[target] = p, opsAddr
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

// loadStats are what the beacon sender saw. Each beacon carries a sequence number (the
// property "seq"), so the test can tell which accepted beacons were stored.
type loadStats struct {
	sent, accepted, transportErrs atomic.Int64
	seq                           atomic.Int64
	mu                            sync.Mutex
	other                         map[int]int
	acceptedSeqs                  []int64
}

func newLoadStats() *loadStats { return &loadStats{other: map[int]int{}} }

// rejected is how many answers were not 202: only these beacons may be stored beyond
// the accepted ones (a PubAck lost to a fault, the event stored nonetheless).
func (s *loadStats) rejected() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.transportErrs.Load()
	for _, c := range s.other {
		n += int64(c)
	}
	return n
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
	seq := st.seq.Add(1)
	body := fmt.Sprintf(`{"p":"/p/%d","r":"https://google.com","sw":1920,"sh":1080,"n":%q,"props":{"seq":"%d"}}`, i%20, name, seq)
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
		st.mu.Lock()
		st.acceptedSeqs = append(st.acceptedSeqs, seq)
		st.mu.Unlock()
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
	if r.drainTimeout == 0 { // a rig built as a literal by another test
		r.drainTimeout = 30 * time.Second
	}
	deadline := start.Add(r.drainTimeout)
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
			r.t.Fatalf("not drained in %s: %d events stored, want %d; consumer pending %d, ack pending %d",
				r.drainTimeout, got, want, pending, ackPending)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// figures are a fault run's outcome, for its report line.
type figures struct {
	stored, dups, rawPV int64
}

// checkExact asserts that every accepted beacon is stored exactly once (a beacon that
// was not accepted may be stored too: its PubAck can be lost to the fault), and that the
// rollups agree with a recount of the raw events.
func (r *crashRig) checkExact(ctx context.Context, st *loadStats) figures {
	r.t.Helper()
	var f figures
	var dimPV, hourlyPV int64
	q := func(sql string, dst *int64) {
		r.t.Helper()
		if err := r.pool.QueryRow(ctx, sql).Scan(dst); err != nil {
			r.t.Fatalf("%s: %v", sql, err)
		}
	}
	q(`SELECT count(*) FROM events`, &f.stored)
	q(`SELECT count(*) - count(DISTINCT id) FROM events`, &f.dups)
	q(`SELECT count(*) FROM events WHERE name = 'pageview'`, &f.rawPV)
	q(`SELECT coalesce(sum(pageviews), 0) FROM rollup_dims WHERE dim = 0`, &dimPV)
	q(`SELECT coalesce(sum(pageviews), 0) FROM rollup_hourly`, &hourlyPV)
	r.t.Logf("%s; stored %d, duplicate ids %d, pageviews raw %d, rollup_dims %d, rollup_hourly %d",
		st, f.stored, f.dups, f.rawPV, dimPV, hourlyPV)
	accepted := st.accepted.Load()
	if f.stored < accepted || f.stored > accepted+st.rejected() {
		r.t.Errorf("stored %d events, want %d (the 202s) plus at most %d not accepted", f.stored, accepted, st.rejected())
	}
	if missing := r.missingSeqs(ctx, st); len(missing) > 0 {
		r.t.Errorf("%d accepted beacons not stored, e.g. seq %v", len(missing), missing[:min(len(missing), 10)])
	}
	if f.dups != 0 {
		r.t.Errorf("%d duplicate event ids", f.dups)
	}
	if f.rawPV == 0 || dimPV != f.rawPV || hourlyPV != f.rawPV {
		r.t.Errorf("pageviews: raw %d, rollup_dims %d, rollup_hourly %d; want all equal and > 0", f.rawPV, dimPV, hourlyPV)
	}
	return f
}

// missingSeqs lists the accepted beacons' sequence numbers that no stored event has.
func (r *crashRig) missingSeqs(ctx context.Context, st *loadStats) []int64 {
	r.t.Helper()
	rows, err := r.pool.Query(ctx, `SELECT props->>'seq' FROM events WHERE props ? 'seq'`)
	if err != nil {
		r.t.Fatalf("stored seqs: %v", err)
	}
	stored := map[int64]bool{}
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			r.t.Fatalf("stored seqs: %v", err)
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		stored[n] = true
	}
	if err := rows.Err(); err != nil {
		r.t.Fatalf("stored seqs: %v", err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	var missing []int64
	for _, n := range st.acceptedSeqs {
		if !stored[n] {
			missing = append(missing, n)
		}
	}
	return missing
}

// report logs a scenario's line of the README's reliability table; `go test -v` output
// grepped for "fault-report" gives the table.
func report(t *testing.T, scenario string, st *loadStats, f figures, drain time.Duration) {
	t.Helper()
	t.Logf("fault-report | %s | %d | %d | %d | %d | %s |", scenario, st.sent.Load(), st.accepted.Load(), f.stored, f.dups, drain.Round(10*time.Millisecond))
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
		for _, name := range []string{"haru_writer_messages_redelivered_total", "haru_writer_events_skipped_total", "haru_writer_batch_errors_total", "haru_writer_rows_written_total", "haru_writer_messages_terminated_total", "haru_writer_events_dead_lettered_total"} {
			// A labelled series (the skipped events' reason) adds to its metric's sum.
			rest, ok := strings.CutPrefix(line, name)
			if !ok || rest == "" || rest[0] != ' ' && rest[0] != '{' {
				continue
			}
			v, _ := strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64)
			got[name] += v
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
	st = newLoadStats()
	r.primeIngest(st)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.load(500, 6*time.Second, st)
	}()
	return st, done
}
