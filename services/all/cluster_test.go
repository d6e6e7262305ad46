package all

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/natstest"
	"github.com/haru-analytics/haru/pkg/proctest"
)

// service is one haru process of a rig, with its listeners.
type service struct {
	proc *proctest.Proc
	http string // public address, "" for the writer
	ops  string
}

// startTarget starts `haru -target=target` with env and waits until its /readyz answers.
func startTarget(t *testing.T, bin, name, target string, env map[string]string) service {
	t.Helper()
	s := service{ops: proctest.FreeAddr(t)}
	e := map[string]string{"HARU_OPS_ADDR": s.ops}
	if target != "writer" {
		s.http = proctest.FreeAddr(t)
		e["HARU_HTTP_ADDR"] = s.http
	}
	for k, v := range env {
		e[k] = v
	}
	s.proc = proctest.Start(t, name, bin, []string{"-target=" + target}, e)
	s.proc.WaitReady(t, "http://"+s.ops+"/readyz")
	return s
}

// waitReady polls a service's /readyz until it answers 200, at most timeout.
func (s service) waitReady(timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for time.Now().Before(deadline) {
		resp, err := client.Get("http://" + s.ops + "/readyz")
		if err == nil {
			b := make([]byte, 512)
			n, _ := resp.Body.Read(b)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b[:n])))
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %s: %s", s.proc.Name, timeout, last)
}

// seedDemo creates the demo site and returns its token.
func seedDemo(t *testing.T, bin string, env map[string]string) string {
	t.Helper()
	out := proctest.Run(t, bin, []string{"admin", "seed-demo"}, env, 30*time.Second)
	m := regexp.MustCompile(`Site token:\s+(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("seed-demo printed no site token:\n%s", out)
	}
	return m[1]
}

// tally records each beacon's fate by a sequence number carried in its props, so the
// test can say which events must be stored, which may be, and which must not.
type tally struct {
	mu        sync.Mutex
	sent      int
	accepted  map[int64]bool // 202: must be stored exactly once
	ambiguous map[int64]bool // 5xx or a lost answer: may be stored, at most once
	refused   map[string]int // answers and dial errors that store nothing, by kind
}

func newTally() *tally {
	return &tally{accepted: map[int64]bool{}, ambiguous: map[int64]bool{}, refused: map[string]int{}}
}

func (ty *tally) String() string {
	ty.mu.Lock()
	defer ty.mu.Unlock()
	return fmt.Sprintf("sent %d, accepted %d, ambiguous %d, refused %v", ty.sent, len(ty.accepted), len(ty.ambiguous), ty.refused)
}

// counts returns how many beacons were sent, accepted and left ambiguous.
func (ty *tally) counts() (sent, accepted, ambiguous int) {
	ty.mu.Lock()
	defer ty.mu.Unlock()
	return ty.sent, len(ty.accepted), len(ty.ambiguous)
}

// taggedBeacon sends beacon seq to origin and records its fate; it reports a 202.
func taggedBeacon(client *http.Client, origin, token string, seq int64, ty *tally) bool {
	name := "pageview"
	if seq%10 == 9 {
		name = "signup"
	}
	body := fmt.Sprintf(`{"p":"/p/%d","r":"https://google.com","sw":1920,"sh":1080,"n":%q,"props":{"seq":"%d"}}`, seq%20, name, seq)
	req, _ := http.NewRequest(http.MethodPost, origin+"/api/collect", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", fmt.Sprintf("Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.%d", seq%50))
	resp, err := client.Do(req)
	ty.mu.Lock()
	defer ty.mu.Unlock()
	ty.sent++
	switch {
	case err != nil:
		// A refused connection never reached a server; any other lost answer might have.
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			ty.refused["dial"]++
		} else {
			ty.ambiguous[seq] = true
		}
		return false
	case resp.StatusCode == http.StatusAccepted:
		resp.Body.Close()
		ty.accepted[seq] = true
		return true
	case resp.StatusCode >= 500:
		resp.Body.Close()
		ty.ambiguous[seq] = true
		ty.refused[strconv.Itoa(resp.StatusCode)]++
		return false
	default:
		resp.Body.Close()
		ty.refused[strconv.Itoa(resp.StatusCode)]++
		return false
	}
}

// tagLoad sends rate beacons a second, round-robin over origins, until stop is closed,
// with a bounded number of senders; numbering starts at first. It returns when the last
// answer is in.
func tagLoad(origins []string, token string, rate int, first int64, stop <-chan struct{}, ty *tally) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	defer client.CloseIdleConnections()
	ticks := make(chan int64)
	go func() {
		defer close(ticks)
		tk := time.NewTicker(time.Second / time.Duration(rate))
		defer tk.Stop()
		for seq := first; ; seq++ {
			select {
			case <-stop:
				return
			case <-tk.C:
				select {
				case ticks <- seq:
				default: // every sender busy: skip the tick rather than queue without bound
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range ticks {
				taggedBeacon(client, origins[seq%int64(len(origins))], token, seq, ty)
			}
		}()
	}
	wg.Wait()
}

// checkTagged compares the stored events with the tally: every accepted beacon stored
// exactly once, nothing stored twice, nothing stored that was refused.
func checkTagged(t *testing.T, ctx context.Context, pool *pgxpool.Pool, ty *tally) (stored, dups int) {
	t.Helper()
	rows, err := pool.Query(ctx, `SELECT (props->>'seq')::bigint, count(*) FROM events GROUP BY 1`)
	if err != nil {
		t.Fatalf("stored sequence numbers: %v", err)
	}
	got := map[int64]int{}
	for rows.Next() {
		var seq *int64
		var n int
		if err := rows.Scan(&seq, &n); err != nil {
			t.Fatal(err)
		}
		if seq == nil {
			t.Errorf("%d stored events carry no sequence number", n)
			continue
		}
		got[*seq] = n
		stored += n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	ty.mu.Lock()
	defer ty.mu.Unlock()
	var missing, extra []int64
	for seq := range ty.accepted {
		if got[seq] == 0 {
			missing = append(missing, seq)
		}
	}
	for seq, n := range got {
		if n > 1 {
			dups += n - 1
		}
		if !ty.accepted[seq] && !ty.ambiguous[seq] {
			extra = append(extra, seq)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d accepted events are not stored (first: %v)", len(missing), missing[:min(5, len(missing))])
	}
	if dups > 0 {
		t.Errorf("%d events stored more than once", dups)
	}
	if len(extra) > 0 {
		t.Errorf("%d stored events were never accepted nor left ambiguous (first: %v)", len(extra), extra[:min(5, len(extra))])
	}
	return stored, dups
}

// streamLeader returns the name of the server leading the events stream.
func streamLeader(ctx context.Context, js jetstream.JetStream, stream string) (string, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return "", err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return "", err
	}
	if info.Cluster == nil {
		return "", errors.New("stream has no cluster info")
	}
	return info.Cluster.Leader, nil
}

// waitReplicasCurrent waits until every replica of the events stream is current again.
func waitReplicasCurrent(ctx context.Context, js jetstream.JetStream, stream string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := "no stream info"
	for time.Now().Before(deadline) {
		if st, err := js.Stream(ctx, stream); err == nil {
			if info, err := st.Info(ctx); err == nil && info.Cluster != nil {
				current := info.Cluster.Leader != ""
				var states []string
				for _, p := range info.Cluster.Replicas {
					current = current && p.Current && !p.Offline
					states = append(states, fmt.Sprintf("%s current=%v offline=%v", p.Name, p.Current, p.Offline))
				}
				if current && len(info.Cluster.Replicas) == 2 {
					return nil
				}
				last = fmt.Sprintf("leader %q, peers %v", info.Cluster.Leader, states)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("stream replicas not current within %s: %s", timeout, last)
}

// clusterLoadSeconds is the load's length: 24 s by default, longer with
// HARU_CLUSTER_LOAD_SECONDS (the faults keep their places in proportion).
func clusterLoadSeconds(t *testing.T) time.Duration {
	t.Helper()
	if v := os.Getenv("HARU_CLUSTER_LOAD_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 12 {
			t.Fatalf("HARU_CLUSTER_LOAD_SECONDS=%q: want a number of seconds, at least 12", v)
		}
		return time.Duration(n) * time.Second
	}
	return 24 * time.Second
}

// TestClusterTopology runs the production topology as local processes: a three-node
// JetStream cluster with the events stream and both buckets at three replicas (the
// default on a cluster), two ingest processes, two
// writers and a query, over a private Postgres. Under about 1,000 beacons/s it SIGKILLs
// the stream's leader node (and starts it again), SIGKILLs a writer, and SIGTERMs an
// ingest. Every accepted beacon must be stored exactly once, the rollups must equal a
// recount, and the surviving services must be ready again.
func TestClusterTopology(t *testing.T) {
	if testing.Short() {
		t.Skip("process cluster test")
	}
	loadFor := clusterLoadSeconds(t)
	ctx, cancel := context.WithTimeout(context.Background(), loadFor+120*time.Second)
	defer cancel()

	pg := proctest.StartPostgres(t)
	bin := proctest.Build(t)
	cluster := proctest.StartNATSCluster(t, bin, 3)
	names, err := event.NewNames(crashPrefix)
	if err != nil {
		t.Fatal(err)
	}
	// HARU_STREAM_REPLICAS is left unset: on a three-node cluster its default is 3.
	env := map[string]string{
		"HARU_DATABASE_URL":     pg.URL("haru"),
		"HARU_NATS_URL":         cluster.URLs(),
		"HARU_NATS_PREFIX":      crashPrefix,
		"HARU_STREAM_MAX_BYTES": "64MiB",
		"HARU_RATE_LIMIT":       "0",
		"HARU_BATCH_SIZE":       "1000",
		"HARU_BATCH_AGE":        "250ms",
		"HARU_DB_MAX_CONNS":     "4",
		"HARU_LOG_LEVEL":        "warn",
	}
	token := seedDemo(t, bin, env)
	pool, err := pgxpool.New(ctx, pg.URL("haru"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)

	// Writers first: they create the stream and the consumer ingest and query rely on.
	writers := []service{startTarget(t, bin, "writer1", "writer", env), startTarget(t, bin, "writer2", "writer", env)}
	query := startTarget(t, bin, "query", "query", env)
	ingests := []service{startTarget(t, bin, "ingest1", "ingest", env), startTarget(t, bin, "ingest2", "ingest", env)}

	js := natstest.JetStreamAt(t, cluster.URLs())
	for _, name := range []string{names.Stream, "KV_" + names.Sites, "KV_" + names.Salts} {
		if info, err := js.Stream(ctx, name); err != nil {
			t.Fatalf("stream %s: %v", name, err)
		} else if r := info.CachedInfo().Config.Replicas; r != 3 {
			t.Fatalf("stream %s has %d replicas, want 3", name, r)
		}
	}
	// A killed writer's messages come back after the ack wait; shorten it as in the
	// single-server crash tests, while no writer will start again to reset it.
	(&crashRig{t: t, names: names}).shortenAckWait(ctx, js)

	// Both ingest processes have the site registry before the clock starts.
	origins := []string{"http://" + ingests[0].http, "http://" + ingests[1].http}
	ty := newTally()
	prime := &http.Client{Timeout: 5 * time.Second}
	for i, o := range origins {
		deadline := time.Now().Add(15 * time.Second)
		for !taggedBeacon(prime, o, token, -int64(i+1), ty) {
			if time.Now().After(deadline) {
				t.Fatalf("ingest %s never accepted a beacon: %s", o, ty)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	stop := make(chan struct{})
	loaded := make(chan struct{})
	begin := time.Now()
	go func() {
		defer close(loaded)
		tagLoad(origins, token, 1000, 0, stop, ty)
	}()
	at := func(frac float64) { time.Sleep(time.Until(begin.Add(time.Duration(frac * float64(loadFor))))) }

	// 1. The node leading the events stream dies.
	at(0.25)
	leader, err := streamLeader(ctx, js, names.Stream)
	if err != nil {
		t.Fatalf("stream leader: %v", err)
	}
	var killed *proctest.NATSNode
	for _, nd := range cluster.Nodes {
		if nd.Name == leader {
			killed = nd
		}
	}
	if killed == nil {
		t.Fatalf("stream leader %q is not a node of the cluster", leader)
	}
	killed.Kill()
	t.Logf("%s: SIGKILLed NATS node %s, the stream's leader (%s)", time.Since(begin).Round(time.Millisecond), leader, ty)

	// 2. A writer dies mid-batch.
	at(0.42)
	writers[0].proc.Kill()
	t.Logf("%s: SIGKILLed writer1 (%s)", time.Since(begin).Round(time.Millisecond), ty)

	// 3. The NATS node comes back on its store and catches up.
	at(0.58)
	killed.Start(t)
	t.Logf("%s: NATS node %s started again", time.Since(begin).Round(time.Millisecond), leader)

	// 4. An ingest is stopped the way an orchestrator does it: in-flight beacons finish.
	at(0.75)
	if err := ingests[1].proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := ingests[1].proc.Wait(20 * time.Second); err != nil {
		t.Errorf("ingest2 after SIGTERM: %v\n%s", err, ingests[1].proc.Log())
	}
	t.Logf("%s: ingest2 stopped by SIGTERM (%s)", time.Since(begin).Round(time.Millisecond), ty)

	at(1)
	close(stop)
	<-loaded
	loadEnd := time.Now()
	sent, accepted, ambiguous := ty.counts()
	t.Logf("load over after %s: %s", loadEnd.Sub(begin).Round(time.Millisecond), ty)
	if rate := float64(accepted) / loadFor.Seconds(); rate < 100 {
		t.Errorf("accepted %.0f beacons/s over the load, want a steady load, at least 100", rate)
	}

	took := (&crashRig{t: t, names: names, pool: pool}).drain(ctx, js, int64(accepted))
	stored, dups := checkTagged(t, ctx, pool, ty)
	t.Logf("cluster: sent %d, accepted %d, ambiguous %d, stored %d, duplicates %d, drained %s after the load",
		sent, accepted, ambiguous, stored, dups, took.Round(time.Millisecond))
	// Rollups equal a recount of the raw events.
	var rawPV, dimPV, hourlyPV int64
	for sql, dst := range map[string]*int64{
		`SELECT count(*) FROM events WHERE name = 'pageview'`:               &rawPV,
		`SELECT coalesce(sum(pageviews), 0) FROM rollup_dims WHERE dim = 0`: &dimPV,
		`SELECT coalesce(sum(pageviews), 0) FROM rollup_hourly`:             &hourlyPV,
	} {
		if err := pool.QueryRow(ctx, sql).Scan(dst); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	if rawPV == 0 || dimPV != rawPV || hourlyPV != rawPV {
		t.Errorf("pageviews: raw %d, rollup_dims %d, rollup_hourly %d; want all equal and > 0", rawPV, dimPV, hourlyPV)
	}

	// The survivors are ready, and the restarted node holds a current replica again.
	for _, s := range []service{ingests[0], writers[1], query} {
		if err := s.waitReady(15 * time.Second); err != nil {
			t.Error(err)
		}
	}
	if err := waitReplicasCurrent(ctx, js, names.Stream, 30*time.Second); err != nil {
		t.Error(err)
	}

	// Each process exports its own service's series, and only those.
	for _, c := range []struct {
		s    service
		name string
		want []string
	}{
		{ingests[0], "ingest", []string{"haru_ingest_events_accepted_total", "haru_ingest_publish_seconds", "haru_ingest_stream_bytes"}},
		{writers[1], "writer", []string{"haru_writer_rows_written_total", "haru_writer_consumer_pending_messages", "haru_writer_db_pool_connections"}},
		{query, "query", []string{"haru_query_sse_connections", "haru_query_stats_seconds", "haru_query_db_pool_connections"}},
	} {
		exported := scrapeNames(t, c.s.ops)
		for _, w := range c.want {
			if !exported[w] {
				t.Errorf("%s: %s not exported", c.s.proc.Name, w)
			}
		}
		for name := range exported {
			if strings.HasPrefix(name, "haru_") && !strings.HasPrefix(name, "haru_"+c.name+"_") {
				t.Errorf("%s exports %s", c.s.proc.Name, name)
			}
		}
	}
}

// scrapeNames returns the series names an ops listener's /metrics declares.
func scrapeNames(t *testing.T, ops string) map[string]bool {
	t.Helper()
	resp, err := http.Get("http://" + ops + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", ops, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d, %v", ops, resp.StatusCode, err)
	}
	names := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (\S+) `).FindAllStringSubmatch(string(body), -1) {
		names[m[1]] = true
	}
	return names
}
