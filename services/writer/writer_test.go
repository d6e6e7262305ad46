package writer

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/haru-analytics/haru/pkg/clock"
	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/natstest"
	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/pkg/telemetry"
)

type harness struct {
	svc    *Service
	reg    *prometheus.Registry
	nc     *nats.Conn
	js     jetstream.JetStream
	names  event.Names
	pool   *pgxpool.Pool
	clock  *clock.Fake
	health *telemetry.Health
	cfg    Config
}

func newHarness(t testing.TB, mutate func(*Config), tracing ...*telemetry.Tracing) *harness {
	t.Helper()
	db := pgtest.New(t)
	srv := natstest.New(t)
	nc := srv.Conn(t)
	cfg := Config{
		NATS:        natsutil.Config{URL: srv.URL, Prefix: natstest.UniquePrefix(), Stream: natsutil.DefaultStreamSettings()},
		BatchSize:   100,
		BatchAge:    20 * time.Millisecond,
		DBMaxConns:  4,
		DatabaseURL: db.URL,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(true); err != nil {
		t.Fatalf("config: %v", err)
	}
	reg := prometheus.NewRegistry()
	clk := clock.NewFake(time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC))
	health := telemetry.NewHealth()
	svc, err := New(context.Background(), cfg, Deps{
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: reg, Health: health,
		Clock: clk, NATS: nc, Pool: db.Pool, Tracing: firstOrNil(tracing),
	})
	if err != nil {
		t.Fatalf("new writer: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return &harness{svc: svc, reg: reg, nc: nc, js: js, names: cfg.NATS.Names(), pool: db.Pool, clock: clk, health: health, cfg: cfg}
}

func firstOrNil(t []*telemetry.Tracing) *telemetry.Tracing {
	if len(t) == 0 {
		return nil
	}
	return t[0]
}

func (h *harness) publish(t testing.TB, msgID string, data []byte, site int64) {
	t.Helper()
	if _, err := h.js.Publish(context.Background(), h.names.EventSubject(site), data, jetstream.WithMsgID(msgID)); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func TestServiceStoresPublishedEvents(t *testing.T) {
	h := newHarness(t, nil)
	site := pgtest.NewSite(t, h.pool, "Asia/Tokyo")
	updated := make(chan *nats.Msg, 64)
	sub, err := h.nc.ChanSubscribe(h.names.UpdatedWildcard(), updated)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.svc.Run(ctx) }()

	now := h.clock.Now().UTC().Truncate(time.Microsecond)
	var want []event.Event
	for i := range 250 {
		e, err := event.New(now.Add(time.Duration(i)*time.Second), site, "pageview")
		if err != nil {
			t.Fatalf("event: %v", err)
		}
		e.Visitor = int64(i % 7)
		e.Path = "/"
		want = append(want, e)
	}
	bad := want[100]
	bad.DurationMS = -5
	want[100] = bad
	for _, e := range want {
		b, err := event.Encode(&e)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		h.publish(t, e.ID.String(), b, site)
	}
	// The same event again under another message id gets past JetStream's duplicate
	// window; Postgres's key makes it a no-op.
	b, _ := event.Encode(&want[0])
	h.publish(t, "again-"+want[0].ID.String(), b, site)
	// An event of a site deleted meanwhile is dropped.
	gone := pgtest.NewSite(t, h.pool, "UTC")
	if _, err := h.pool.Exec(context.Background(), `DELETE FROM sites WHERE id = $1`, gone); err != nil {
		t.Fatalf("delete site: %v", err)
	}
	orphan, err := event.New(now, gone, "pageview")
	if err != nil {
		t.Fatalf("event: %v", err)
	}
	h.publishEvent(t, &orphan)
	h.publish(t, "poison", []byte(`{"v":1}`), site)

	deadline := time.Now().Add(20 * time.Second)
	var stored, dead, pageviews int64
	for {
		err := h.pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM dead_letters),
			(SELECT coalesce(sum(pageviews), 0) FROM rollup_dims WHERE site_id = $1 AND dim = 0)`, site).Scan(&stored, &dead, &pageviews)
		if err != nil {
			t.Fatalf("count: %v", err)
		}
		if stored == 249 && dead == 1 && testutil.ToFloat64(h.svc.metrics.terminated) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20s: %d events stored, %d dead letters; want 249 and 1", stored, dead)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if pageviews != 249 {
		t.Fatalf("rolled-up pageviews %d, want 249", pageviews)
	}
	select {
	case m := <-updated:
		u, err := event.DecodeUpdated(m.Data)
		if err != nil || u.SiteID != site || u.Events == 0 {
			t.Fatalf("updated message %+v, err %v", u, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no updated message")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	got := map[string]float64{
		"rows":       testutil.ToFloat64(h.svc.metrics.rowsWritten),
		"duplicate":  testutil.ToFloat64(h.svc.metrics.skipped.WithLabelValues(skippedDuplicate)),
		"deleted":    testutil.ToFloat64(h.svc.metrics.skipped.WithLabelValues(skippedSiteDeleted)),
		"dead":       testutil.ToFloat64(h.svc.metrics.deadLettered),
		"terminated": testutil.ToFloat64(h.svc.metrics.terminated),
	}
	wantM := map[string]float64{"rows": 249, "duplicate": 1, "deleted": 1, "dead": 1, "terminated": 1}
	if diff := cmp.Diff(wantM, got); diff != "" {
		t.Fatalf("metrics (-want +got):\n%s", diff)
	}
	// Everything acked: nothing left for the next writer.
	cons, err := h.js.Consumer(context.Background(), h.names.Stream, event.ConsumerName)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	// Run has flushed its acks; the server applies them asynchronously.
	deadline = time.Now().Add(5 * time.Second)
	for {
		info, err := cons.Info(context.Background())
		if err != nil {
			t.Fatalf("consumer info: %v", err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer pending %d, ack pending %d; want 0 and 0", info.NumPending, info.NumAckPending)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestApplyRetention(t *testing.T) {
	tests := []struct {
		name     string
		days     int
		wantLeft []string
	}{
		{"forever", 0, []string{"events_y2026m01", "events_y2026m04", "events_y2026m05", "events_y2026m06"}},
		{"45 days", 45, []string{"events_y2026m05", "events_y2026m06"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.RetentionDays = tt.days })
			ctx := context.Background()
			site := pgtest.NewSite(t, h.pool, "UTC")
			var batch []event.Event
			for _, m := range []time.Month{1, 4, 5, 6} {
				e, err := event.New(time.Date(2026, m, 10, 0, 0, 0, 0, time.UTC), site, "pageview")
				if err != nil {
					t.Fatalf("event: %v", err)
				}
				batch = append(batch, e)
			}
			if _, err := h.svc.store.Write(ctx, batch); err != nil {
				t.Fatalf("write: %v", err)
			}
			if err := h.svc.ApplyRetention(ctx); err != nil {
				t.Fatalf("retention: %v", err)
			}
			var left []string
			rows, err := h.pool.Query(ctx, `SELECT DISTINCT tableoid::regclass::text FROM events ORDER BY 1`)
			if err != nil {
				t.Fatalf("query: %v", err)
			}
			for rows.Next() {
				var s string
				if err := rows.Scan(&s); err != nil {
					t.Fatalf("scan: %v", err)
				}
				left = append(left, s)
			}
			if diff := cmp.Diff(tt.wantLeft, left); diff != "" {
				t.Fatalf("partitions holding events (-want +got):\n%s", diff)
			}
			var pv, seen int64
			if err := h.pool.QueryRow(ctx, `SELECT sum(pageviews) FROM rollup_dims WHERE dim = 0`).Scan(&pv); err != nil || pv != 4 {
				t.Fatalf("rollups after retention: %d pageviews (err %v), want 4", pv, err)
			}
			// One visitor, one event a month: the days its sightings are tagged with.
			if err := h.pool.QueryRow(ctx, `SELECT count(DISTINCT h & 65535) FROM visits, unnest(seen) h`).Scan(&seen); err != nil || seen != int64(len(tt.wantLeft)) {
				t.Fatalf("days with first sightings after retention: %d (err %v), want %d", seen, err, len(tt.wantLeft))
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	base := Config{
		NATS:        natsutil.Config{URL: "nats://x", Prefix: "haru", Stream: natsutil.DefaultStreamSettings()},
		DatabaseURL: "postgres://x", BatchSize: 10, BatchAge: time.Second, DBMaxConns: 1,
	}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr bool
	}{
		{"defaults", func(*Config) {}, false},
		{"retention set", func(c *Config) { c.RetentionDays = 400 }, false},
		{"negative retention", func(c *Config) { c.RetentionDays = -1 }, true},
		{"a century of retention", func(c *Config) { c.RetentionDays = 36500 }, false},
		{"retention past what dates hold", func(c *Config) { c.RetentionDays = 999999999999 }, true},
		{"pool past int32", func(c *Config) { c.DBMaxConns = 1<<32 + 1 }, true},
		{"memory limit", func(c *Config) { c.MemoryLimit = 96 << 20 }, false},
		{"memory limit too small", func(c *Config) { c.MemoryLimit = 16 << 20 }, true},
		{"batch too large", func(c *Config) { c.BatchSize = 50001 }, true},
		{"rebuilds polled", func(c *Config) { c.RebuildPoll = 10 * time.Second }, false},
		{"rebuilds left to other writers", func(c *Config) { c.RebuildPoll = 0 }, false},
		{"negative rebuild poll", func(c *Config) { c.RebuildPoll = -time.Second }, true},
		{"rebuild poll past an hour", func(c *Config) { c.RebuildPoll = 2 * time.Hour }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mutate(&c)
			if err := c.Validate(true); (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := ConfigFromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BatchSize != DefaultBatchSize || cfg.MemoryLimit != 96<<20 || cfg.BatchAge != 200*time.Millisecond || cfg.RebuildPoll != 10*time.Second {
		t.Fatalf("defaults: batch %d, memory limit %d, age %s, rebuild poll %s", cfg.BatchSize, cfg.MemoryLimit, cfg.BatchAge, cfg.RebuildPoll)
	}
	if c := ConsumerConfig(cfg); c.MaxAckPending != 4*DefaultBatchSize {
		t.Fatalf("MaxAckPending %d, want four batches", c.MaxAckPending)
	}
	cfg, err = ConfigFromEnv(func(k string) string {
		return map[string]string{"HARU_BATCH_SIZE": "2500", "HARU_MEMORY_LIMIT": "0"}[k]
	})
	if err != nil || cfg.BatchSize != 2500 || cfg.MemoryLimit != 0 {
		t.Fatalf("set: %+v, %v", cfg, err)
	}
}

// TestKeepHeldInProgress: a message held longer than AckWait stays with the writer while it
// is held, and is redelivered once it is settled without an ack.
func TestKeepHeldInProgress(t *testing.T) {
	srv := natstest.New(t)
	js, err := jetstream.New(srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "s", []byte("x")); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != 1 {
		t.Fatalf("fetched %d", len(msgs))
	}
	svc := &Service{held: held{msgs: map[jetstream.Msg]struct{}{}}}
	svc.ackWait.Store(int64(time.Second))
	svc.held.add(msgs[0])
	stop := svc.keepHeldInProgress()
	defer stop()
	time.Sleep(2500 * time.Millisecond)
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	svc.held.settle(msgs)
	if info.NumRedelivered != 0 || info.NumAckPending != 1 {
		t.Fatalf("while in progress: redelivered %d, ack pending %d; want 0, 1", info.NumRedelivered, info.NumAckPending)
	}
	// Without the signals the message is redelivered after AckWait.
	again, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	m, ok := <-again.Messages()
	if !ok {
		t.Fatal("not redelivered after progress stopped")
	}
	if md, err := m.Metadata(); err != nil || md.NumDelivered != 2 {
		t.Fatalf("redelivery metadata %+v, %v; want the second delivery", md, err)
	}
}

// TestConsumeResumes: a writer whose consumer disappears under it (deleted by an
// operator, lost with a node) declares it again and goes on storing, exactly once.
func TestConsumeResumes(t *testing.T) {
	h := newHarness(t, nil)
	site := pgtest.NewSite(t, h.pool, "UTC")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.svc.Run(ctx) }()

	sent := 0
	publish := func(n int) {
		for range n {
			e, err := event.New(h.clock.Now().Add(time.Duration(sent)*time.Second), site, "pageview")
			if err != nil {
				t.Fatalf("event: %v", err)
			}
			e.Visitor, e.Path = int64(sent%3), "/"
			b, err := event.Encode(&e)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			h.publish(t, e.ID.String(), b, site)
			sent++
		}
	}
	waitStored := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			var n int64
			if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n); err != nil {
				t.Fatalf("count: %v", err)
			}
			if n == want {
				return
			}
			if n > want || time.Now().After(deadline) {
				t.Fatalf("%d events stored, want %d", n, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	publish(10)
	waitStored(10)
	if err := h.js.DeleteConsumer(context.Background(), h.names.Stream, event.ConsumerName); err != nil {
		t.Fatalf("delete consumer: %v", err)
	}
	publish(10)
	waitStored(20)
	if n := testutil.ToFloat64(h.svc.metrics.consumeRestarts); n < 1 {
		t.Fatalf("consume restarts %v, want at least 1", n)
	}
	// The consumer declared again delivers the stream from its start: the first ten
	// come back as duplicates and change nothing.
	var pv int64
	if err := h.pool.QueryRow(context.Background(), `SELECT sum(pageviews) FROM rollup_dims WHERE site_id = $1 AND dim = 0`, site).Scan(&pv); err != nil || pv != 20 {
		t.Fatalf("rolled-up pageviews %d (err %v), want 20", pv, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestInProgressFollowsAckWait: the interval of the in-progress signals follows the
// consumer's ack wait as the server has it, changed under a running writer.
func TestInProgressFollowsAckWait(t *testing.T) {
	h := newHarness(t, nil)
	if got := time.Duration(h.svc.ackWait.Load()); got != AckWait {
		t.Fatalf("ack wait %v at start, want %v", got, AckWait)
	}
	ctx := context.Background()
	cons, err := h.js.Consumer(ctx, h.names.Stream, event.ConsumerName)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	cfg := cons.CachedInfo().Config
	cfg.AckWait = 3 * time.Second
	if _, err := h.js.UpdateConsumer(ctx, h.names.Stream, cfg); err != nil {
		t.Fatalf("update consumer: %v", err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.svc.Run(rctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Duration(h.svc.ackWait.Load()) != 3*time.Second {
		if time.Now().After(deadline) {
			t.Fatalf("ack wait %v, want 3s", time.Duration(h.svc.ackWait.Load()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestNotReadyWhileNotConsuming: a writer that cannot pull (its stream deleted under it)
// says so on its readiness check until it pulls again.
func TestNotReadyWhileNotConsuming(t *testing.T) {
	h := newHarness(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.svc.Run(ctx) }()
	waitReady := func(want bool) error {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := h.health.Ready(context.Background())
			if (err == nil) == want {
				return err
			}
			if time.Now().After(deadline) {
				t.Fatalf("readiness %v, want ready %v", err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitReady(true)
	if err := h.js.DeleteStream(context.Background(), h.names.Stream); err != nil {
		t.Fatalf("delete stream: %v", err)
	}
	if err := waitReady(false); !strings.Contains(err.Error(), "writer_consuming") {
		t.Fatalf("readiness %v, want it to name writer_consuming", err)
	}
	if _, err := natsutil.EnsureStream(context.Background(), h.js, h.names, h.cfg.NATS.Stream); err != nil {
		t.Fatalf("stream again: %v", err)
	}
	waitReady(true)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestBatchWait(t *testing.T) {
	const age = 200 * time.Millisecond
	for _, c := range []struct {
		waited, want time.Duration
	}{
		{0, age}, // fresh: the whole age
		{120 * time.Millisecond, 80 * time.Millisecond}, // the rest of it
		{190 * time.Millisecond, 50 * time.Millisecond}, // at least a quarter
		{5 * time.Second, 50 * time.Millisecond},        // queued during a long write
		{-time.Hour, age},                               // the server's clock ahead: never longer than the age
	} {
		if got := batchWait(age, c.waited); got != c.want {
			t.Errorf("batchWait(%s, %s) = %s, want %s", age, c.waited, got, c.want)
		}
	}
}

// publishEvents publishes n pageviews of site, a millisecond apart from base.
func (h *harness) publishEvents(t testing.TB, site int64, n int, base time.Time) {
	t.Helper()
	for i := range n {
		e, err := event.New(base.Add(time.Duration(i)*time.Millisecond), site, "pageview")
		if err != nil {
			t.Fatalf("event: %v", err)
		}
		e.Visitor, e.Path = int64(i%5), "/"
		h.publishEvent(t, &e)
	}
}

func (h *harness) publishEvent(t testing.TB, e *event.Event) {
	t.Helper()
	b, err := event.Encode(e)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	h.publish(t, e.ID.String(), b, e.SiteID)
}

// waitFor polls cond every 20 ms until it holds, or fails the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) stored(t testing.TB) int64 {
	t.Helper()
	var n int64
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n); err != nil {
		t.Fatalf("count: %v", err)
	}
	return n
}

func (h *harness) consumerInfo(t testing.TB) *jetstream.ConsumerInfo {
	t.Helper()
	cons, err := h.js.Consumer(context.Background(), h.names.Stream, event.ConsumerName)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	return info
}

func (h *harness) run(t testing.TB) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.svc.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}
}

// TestSlowWriteRedeliversNothing: while one write waits far longer than the consumer's
// ack wait (on the site's lock, held as a rollup rebuild holds it), neither its messages
// nor those the pull delivered meanwhile for the next batch are redelivered.
func TestSlowWriteRedeliversNothing(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.BatchSize = 5 })
	site := pgtest.NewSite(t, h.pool, "UTC")
	ctx := context.Background()
	cons, err := h.js.Consumer(ctx, h.names.Stream, event.ConsumerName)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	cfg := cons.CachedInfo().Config
	cfg.AckWait = 2 * time.Second
	info, err := h.js.UpdateConsumer(ctx, h.names.Stream, cfg)
	if err != nil {
		t.Fatalf("update consumer: %v", err)
	}
	h.svc.noteAckWait(info.CachedInfo())

	rebuild, err := h.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rebuild.Rollback(ctx) //nolint:errcheck
	if _, err := rebuild.Exec(ctx, `SELECT pg_advisory_xact_lock(1751220853, ($1::bigint % 2147483647)::int)`, site); err != nil {
		t.Fatal(err)
	}
	stop := h.run(t)
	defer stop()
	h.publishEvents(t, site, 10, h.clock.Now())
	time.Sleep(3 * cfg.AckWait)
	if err := rebuild.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "10 events stored and acknowledged", func() bool {
		info := h.consumerInfo(t)
		return h.stored(t) == 10 && info.NumPending == 0 && info.NumAckPending == 0
	})
	if n := testutil.ToFloat64(h.svc.metrics.redelivered); n != 0 {
		t.Fatalf("%v messages redelivered; want none", n)
	}
}

// TestLagCountsUnacknowledged: while Postgres refuses every batch, the events wait
// delivered and NAKed, not pending delivery: the lag still counts every one of them.
func TestLagCountsUnacknowledged(t *testing.T) {
	h := newHarness(t, nil)
	site := pgtest.NewSite(t, h.pool, "UTC")
	ctx := context.Background()
	stop := h.run(t)
	defer stop()
	h.publishEvents(t, site, 1, h.clock.Now())
	waitFor(t, 20*time.Second, "the first event stored", func() bool { return h.stored(t) == 1 })
	if _, err := h.pool.Exec(ctx, `ALTER TABLE events RENAME TO events_away`); err != nil {
		t.Fatal(err)
	}
	h.publishEvents(t, site, 150, h.clock.Now().Add(time.Hour))
	waitFor(t, 20*time.Second, "batches failing", func() bool { return testutil.ToFloat64(h.svc.metrics.batchErrors) >= 2 })
	var lag float64 // read by the failure message
	waitFor(t, 20*time.Second, "a lag of the 150 events unstored", func() bool {
		lag = testutil.ToFloat64(h.svc.metrics.pending)
		return lag == 150
	})
}

// TestPartialWriteAnnouncedAndCounted: a batch split around a bad event whose good half
// commits before the bad one's dead letter fails (dead_letters away, as in an outage)
// announces and counts the stored half at once; the retry finds it stored and cannot.
func TestPartialWriteAnnouncedAndCounted(t *testing.T) {
	h := newHarness(t, nil)
	site := pgtest.NewSite(t, h.pool, "UTC")
	ctx := context.Background()
	updated := make(chan *nats.Msg, 16)
	sub, err := h.nc.ChanSubscribe(h.names.UpdatedSubject(site), updated)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck
	if _, err := h.pool.Exec(ctx, `ALTER TABLE dead_letters RENAME TO dead_letters_away`); err != nil {
		t.Fatal(err)
	}
	at := h.clock.Now().UTC().Truncate(time.Microsecond)
	good, err := event.New(at, site, "pageview")
	if err != nil {
		t.Fatal(err)
	}
	bad, err := event.New(at.Add(time.Second), site, "pageview")
	if err != nil {
		t.Fatal(err)
	}
	bad.DurationMS = -5
	// Both in the stream before the writer pulls: one batch.
	h.publishEvent(t, &good)
	h.publishEvent(t, &bad)
	stop := h.run(t)
	defer stop()
	select {
	case m := <-updated:
		u, err := event.DecodeUpdated(m.Data)
		if err != nil || u.Events != 1 || !u.From.Equal(at) {
			t.Fatalf("updated message %+v (err %v), want the good event", u, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no updated message for the stored half")
	}
	if rows, errs := testutil.ToFloat64(h.svc.metrics.rowsWritten), testutil.ToFloat64(h.svc.metrics.batchErrors); rows != 1 || errs < 1 {
		t.Fatalf("rows written %v, batch errors %v; want 1 and at least 1", rows, errs)
	}
	if _, err := h.pool.Exec(ctx, `ALTER TABLE dead_letters_away RENAME TO dead_letters`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the bad event dead-lettered", func() bool { return testutil.ToFloat64(h.svc.metrics.deadLettered) == 1 })
	if rows := testutil.ToFloat64(h.svc.metrics.rowsWritten); rows != 1 {
		t.Fatalf("rows written %v after the retry, want 1", rows)
	}
}

// TestUndecodableTerminatedWithReason: a message that cannot be decoded leaves the
// stream with the decode error as the reason in the server's advisory.
func TestUndecodableTerminatedWithReason(t *testing.T) {
	h := newHarness(t, nil)
	advisories := make(chan *nats.Msg, 4)
	sub, err := h.nc.ChanSubscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED."+h.names.Stream+"."+event.ConsumerName, advisories)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck
	h.publish(t, "poison", []byte(`{"v":1}`), 1)
	stop := h.run(t)
	defer stop()
	select {
	case m := <-advisories:
		var adv struct {
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(m.Data, &adv); err != nil {
			t.Fatalf("advisory %s: %v", m.Data, err)
		}
		if !strings.HasPrefix(adv.Reason, "undecodable event: ") {
			t.Fatalf("termination reason %q, want the decode error", adv.Reason)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no termination advisory")
	}
}

func TestTermTakesReason(t *testing.T) {
	tests := []struct {
		version string
		want    bool
	}{
		{"2.9.10", false},
		{"2.10.0", true},
		{"2.15.2", true},
		{"3.0.0-beta", true},
		{"", false},
	}
	for _, tt := range tests {
		if got := termTakesReason(tt.version); got != tt.want {
			t.Errorf("termTakesReason(%q) = %v, want %v", tt.version, got, tt.want)
		}
	}
}

// TestNewerVersionLeftForANewerWriter: a message of a wire format newer than the
// writer's (a rolling upgrade that moved ingest first) is neither stored nor terminated:
// it stays in the stream for an upgraded writer, while the rest are stored.
func TestNewerVersionLeftForANewerWriter(t *testing.T) {
	h := newHarness(t, nil)
	site := pgtest.NewSite(t, h.pool, "UTC")
	terminated := make(chan *nats.Msg, 4)
	sub, err := h.nc.ChanSubscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.>", terminated)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck
	newer, err := event.New(h.clock.Now(), site, "pageview")
	if err != nil {
		t.Fatal(err)
	}
	newer.V = event.Version + 1
	h.publishEvent(t, &newer)
	h.publishEvents(t, site, 3, h.clock.Now())
	stop := h.run(t)
	defer stop()
	waitFor(t, 10*time.Second, "the current events stored", func() bool { return h.stored(t) == 3 })
	waitFor(t, 10*time.Second, "the newer one deferred", func() bool { return testutil.ToFloat64(h.svc.metrics.deferred) >= 1 })
	// The stored ones are acked just after their commit; the newer one stays.
	waitFor(t, 5*time.Second, "only the newer event left in the stream", func() bool {
		info := h.consumerInfo(t)
		return uint64(info.NumAckPending)+info.NumPending == 1
	})
	select {
	case m := <-terminated:
		t.Fatalf("terminated: %s", m.Data)
	case <-time.After(500 * time.Millisecond):
	}
}

// TestStragglerPastRetentionDropped: an event whose month is past retention, arriving
// late, is acked and counted, not stored: storing it would bring the dropped month's
// partition back with that one event in it.
func TestStragglerPastRetentionDropped(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.RetentionDays = 45 }) // clock 2026-06-15: April and before are past
	site := pgtest.NewSite(t, h.pool, "UTC")
	for _, ts := range []time.Time{
		time.Date(2026, 4, 30, 23, 59, 0, 0, time.UTC), // April ends before the cutoff, May 1
		time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 6, 15, 11, 0, 0, 0, time.UTC),
	} {
		e, err := event.New(ts, site, "pageview")
		if err != nil {
			t.Fatal(err)
		}
		h.publishEvent(t, &e)
	}
	stop := h.run(t)
	defer stop()
	waitFor(t, 10*time.Second, "two events stored", func() bool { return h.stored(t) == 2 })
	waitFor(t, 5*time.Second, "the straggler counted", func() bool {
		return testutil.ToFloat64(h.svc.metrics.skipped.WithLabelValues(skippedPastRetention)) == 1
	})
	var april bool
	if err := h.pool.QueryRow(context.Background(), `SELECT to_regclass('events_y2026m04') IS NOT NULL`).Scan(&april); err != nil {
		t.Fatal(err)
	}
	if april {
		t.Fatal("the straggler's month has a partition again")
	}
	waitFor(t, 5*time.Second, "nothing left in the stream", func() bool {
		info := h.consumerInfo(t)
		return info.NumPending == 0 && info.NumAckPending == 0
	})
}
