package all

import (
	"context"
	"io"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/haru-analytics/haru/pkg/pgtest"
)

// documentedMetrics are the series the operations docs promise on the ops listener of
// the single binary (each service's series on its own listener when run apart).
var documentedMetrics = []string{
	// ingest
	"haru_ingest_requests_total",
	"haru_ingest_http_request_seconds",
	"haru_ingest_events_accepted_total",
	"haru_ingest_events_dropped_total",
	"haru_ingest_requests_rejected_total",
	"haru_ingest_publish_seconds",
	"haru_ingest_stream_bytes",
	"haru_ingest_stream_max_bytes",
	"haru_ingest_stream_messages",
	"haru_ingest_stream_info_up",
	// writer
	"haru_writer_consumer_pending_messages",
	"haru_writer_batch_events",
	"haru_writer_commit_seconds",
	"haru_writer_rows_written_total",
	"haru_writer_events_skipped_total",
	"haru_writer_messages_redelivered_total",
	"haru_writer_messages_terminated_total",
	"haru_writer_events_dead_lettered_total",
	"haru_writer_batch_errors_total",
	"haru_writer_db_pool_acquired_connections",
	"haru_writer_db_pool_idle_connections",
	"haru_writer_db_pool_connections",
	"haru_writer_db_pool_max_connections",
	"haru_writer_db_pool_acquires_total",
	"haru_writer_db_pool_empty_acquires_total",
	"haru_writer_db_pool_canceled_acquires_total",
	"haru_writer_db_pool_acquire_seconds_total",
	// query
	"haru_query_http_requests_total",
	"haru_query_http_request_seconds",
	"haru_query_sse_connections",
	"haru_query_stats_seconds",
	"haru_query_db_pool_acquired_connections",
	"haru_query_db_pool_idle_connections",
	"haru_query_db_pool_connections",
	"haru_query_db_pool_max_connections",
	"haru_query_db_pool_acquires_total",
	"haru_query_db_pool_empty_acquires_total",
	"haru_query_db_pool_canceled_acquires_total",
	"haru_query_db_pool_acquire_seconds_total",
	// Go runtime and process
	"go_goroutines",
	"go_memstats_heap_inuse_bytes",
	"go_gc_duration_seconds",
	"process_cpu_seconds_total",
	"process_resident_memory_bytes",
}

// startAllInProcess runs `haru -target=all` in this process on db with an embedded NATS,
// stopped when the test ends, and waits until it is ready. It returns the public origin,
// the ops address, a cancel that stops it and the channel its Main's result arrives on.
func startAllInProcess(t *testing.T, dbURL string, extraEnv ...map[string]string) (origin, opsAddr string, stop context.CancelFunc, done <-chan error) {
	t.Helper()
	httpAddr := freeAddr(t)
	opsAddr = freeAddr(t)
	env := map[string]string{
		"HARU_DATABASE_URL": dbURL,
		"HARU_HTTP_ADDR":    httpAddr,
		"HARU_OPS_ADDR":     opsAddr,
		"HARU_DATA_DIR":     t.TempDir(),
		"HARU_BATCH_AGE":    "20ms",
		"HARU_LOG_LEVEL":    "warn",
	}
	for _, extra := range extraEnv {
		maps.Copy(env, extra)
	}
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	stopped := make(chan struct{})
	go func() {
		result <- Main(ctx, []string{"-target=all"}, mapEnv(env), io.Discard)
		close(stopped)
	}()
	t.Cleanup(func() {
		cancel()
		<-stopped
	})
	waitReady(t, "http://"+opsAddr+"/readyz", result)
	return "http://" + httpAddr, opsAddr, cancel, result
}

// readmeMetrics are the haru_* names in the README's metrics table, when the README is
// there to read.
func readmeMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Logf("README.md: %v", err)
		return nil
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "| `haru_") {
			continue
		}
		cell, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " |")
		for _, m := range regexp.MustCompile("`(haru_[a-z0-9_]+)").FindAllStringSubmatch(cell, -1) {
			names = append(names, m[1])
		}
	}
	return names
}

// TestSingleBinaryMetrics runs `haru -target=all`, drives a beacon, a refused beacon, a
// live stream and a stats request through it, and scrapes its ops listener: every
// documented series is there, and every Haru series is named haru_<service>_....
func TestSingleBinaryMetrics(t *testing.T) {
	db := pgtest.New(t)
	site, key := seed(t, db)
	origin, opsAddr, _, _ := startAllInProcess(t, db.URL)
	checkPipeline(t, origin, origin, site, key)
	req, _ := http.NewRequest(http.MethodPost, origin+"/api/collect", strings.NewReader(`{"p":42}`))
	req.Header.Set("Authorization", "Bearer "+site.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad beacon = %d, want 400", resp.StatusCode)
	}

	exported := scrapeNames(t, opsAddr)
	want := append(slices.Clone(documentedMetrics), readmeMetrics(t)...)
	for _, name := range want {
		if !exported[name] {
			t.Errorf("%s is documented but not exported", name)
		}
	}
	consistent := regexp.MustCompile(`^haru_(ingest|writer|query)_[a-z0-9_]+$`)
	for name := range exported {
		if strings.HasPrefix(name, "haru_") && !consistent.MatchString(name) {
			t.Errorf("%s: want haru_<ingest|writer|query>_...", name)
		}
		if strings.HasPrefix(name, "haru_") && !slices.Contains(want, name) {
			t.Errorf("%s is exported but documented neither here nor in the README", name)
		}
	}
}
