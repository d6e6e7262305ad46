// Package writer turns the at-least-once events stream into exact rows in Postgres: it
// consumes the stream with a durable pull consumer shared by every writer replica, writes
// each batch in one transaction, acknowledges only after commit, and then announces which
// sites changed.
package writer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/haru-analytics/haru/pkg/clock"
	"github.com/haru-analytics/haru/pkg/config"
	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/pgutil"
	"github.com/haru-analytics/haru/pkg/server"
	"github.com/haru-analytics/haru/pkg/telemetry"
	"github.com/haru-analytics/haru/services/writer/internal/store"
)

// DefaultBatchSize is HARU_BATCH_SIZE's default (see store.DefaultBatchSize).
const DefaultBatchSize = store.DefaultBatchSize

// Config is the writer's configuration.
type Config struct {
	NATS        natsutil.Config
	DatabaseURL string
	// OpsAddr serves /metrics, /healthz and /readyz when the writer runs alone.
	OpsAddr string
	// BatchSize and BatchAge close a batch, whichever comes first.
	BatchSize int
	BatchAge  time.Duration
	// DBMaxConns bounds the writer's Postgres pool.
	DBMaxConns int
	// RetentionDays drops raw-event months older than this many days; rollups stay.
	// 0 keeps raw events forever.
	RetentionDays int
	// RebuildPoll is how often the writer looks for rollup rebuilds a timezone change
	// asked for; 0 leaves them to other writers (or to `haru admin rebuild-rollups`).
	RebuildPoll time.Duration
	// Migrate applies pending migrations at start.
	Migrate  bool
	LogLevel string
	// MemoryLimit is the Go runtime's soft memory limit for the writer running alone (0:
	// none); GOMEMLIMIT, when set, wins. Mid-write, a heap profile showed about 4 KiB in use
	// per event held (its message, and the statements' encoded arrays), two batches held
	// at once: without a limit the collector lets the heap grow to twice that.
	MemoryLimit int64
}

// ConfigFromEnv reads the HARU_* variables of the writer.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	env := config.NewEnv(getenv)
	cfg := Config{
		NATS:          natsutil.ConfigFromEnv(env),
		DatabaseURL:   env.String("HARU_DATABASE_URL", pgutil.DefaultURL),
		OpsAddr:       env.String("HARU_OPS_ADDR", "127.0.0.1:4021"),
		BatchSize:     env.Int("HARU_BATCH_SIZE", store.DefaultBatchSize),
		BatchAge:      env.Duration("HARU_BATCH_AGE", 200*time.Millisecond),
		DBMaxConns:    env.Int("HARU_DB_MAX_CONNS", 4),
		RetentionDays: env.Int("HARU_RETENTION_DAYS", 0),
		RebuildPoll:   env.Duration("HARU_REBUILD_POLL", 10*time.Second),
		Migrate:       env.Bool("HARU_MIGRATE", true),
		LogLevel:      env.String("HARU_LOG_LEVEL", "info"),
		MemoryLimit:   env.Int64("HARU_MEMORY_LIMIT", 96<<20),
	}
	return cfg, env.Err()
}

// Validate reports every setting the writer cannot start with.
func (c Config) Validate(requireNATS bool) error {
	var errs []error
	if err := c.NATS.Validate(requireNATS); err != nil {
		errs = append(errs, err)
	}
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("HARU_DATABASE_URL is required"))
	}
	if c.BatchSize < 1 || c.BatchSize > 50000 {
		errs = append(errs, fmt.Errorf("HARU_BATCH_SIZE %d: want 1..50000", c.BatchSize))
	}
	if c.BatchAge < time.Millisecond || c.BatchAge > 10*time.Second {
		errs = append(errs, fmt.Errorf("HARU_BATCH_AGE %s: want 1ms..10s", c.BatchAge))
	}
	if c.RetentionDays < 0 || c.RetentionDays > maxRetentionDays {
		// A huge value meaning "keep forever" would overflow the cutoff's date into the
		// future, or past what Postgres's dates hold, and drop everything.
		errs = append(errs, fmt.Errorf("HARU_RETENTION_DAYS %d: want 0 (forever) to %d", c.RetentionDays, maxRetentionDays))
	}
	if c.RebuildPoll < 0 || c.RebuildPoll > time.Hour {
		errs = append(errs, fmt.Errorf("HARU_REBUILD_POLL %s: want 0 (none) to 1h", c.RebuildPoll))
	}
	if c.MemoryLimit != 0 && c.MemoryLimit < 64<<20 {
		errs = append(errs, fmt.Errorf("HARU_MEMORY_LIMIT %d: want 0 (none) or at least 64MiB", c.MemoryLimit))
	}
	if c.DBMaxConns < 1 || c.DBMaxConns > pgutil.MaxConns {
		errs = append(errs, fmt.Errorf("HARU_DB_MAX_CONNS %d: want 1..%d", c.DBMaxConns, pgutil.MaxConns))
	}
	return errors.Join(errs...)
}

// Deps are what the writer is given rather than builds.
type Deps struct {
	Log     *slog.Logger
	Metrics prometheus.Registerer
	Health  *telemetry.Health
	Clock   clock.Clock
	NATS    *nats.Conn
	Pool    *pgxpool.Pool
	// Tracing is optional; nil traces nothing.
	Tracing *telemetry.Tracing
}

// Service is a running writer.
type Service struct {
	cfg     Config
	log     *slog.Logger
	clock   clock.Clock
	nc      *nats.Conn
	names   event.Names
	js      jetstream.JetStream
	store   *store.Store
	metrics *metrics
	tracer  trace.Tracer
	prop    propagation.TextMapPropagator

	// consumer's handle names the consumer, so it still serves after a pull that found
	// the consumer gone declared it again. Its ack wait, read back from the server, paces
	// the in-progress signals of a long write.
	consumer jetstream.Consumer
	ackWait  atomic.Int64
	// held are the messages taken from the consumer and not yet settled, all kept in
	// progress (see keepHeldInProgress).
	held held
	// pullErr is why pulling failed, until a pull runs again: the writer is not ready
	// meanwhile.
	pullErr atomic.Pointer[error]
	// rebuilds runs the rollup rebuilds timezone changes ask for.
	rebuilds *rebuilder
}

// noteAckWait keeps the consumer's ack wait as the server has it: an operator may change
// it under a running writer.
func (s *Service) noteAckWait(info *jetstream.ConsumerInfo) {
	if info != nil && info.Config.AckWait > 0 {
		s.ackWait.Store(int64(info.Config.AckWait))
	}
}

// New sets up the stream and the shared durable consumer and returns the writer.
func New(ctx context.Context, cfg Config, deps Deps) (*Service, error) {
	if deps.Log == nil || deps.Metrics == nil || deps.Health == nil || deps.Clock == nil || deps.NATS == nil || deps.Pool == nil {
		return nil, errors.New("writer: nil dependency")
	}
	names := cfg.NATS.Names()
	js, err := jetstream.New(deps.NATS)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if _, err := natsutil.EnsureStream(ctx, js, names, cfg.NATS.Stream); err != nil {
		return nil, err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, names.Stream, ConsumerConfig(cfg))
	if err != nil {
		return nil, fmt.Errorf("ensure consumer: %w", err)
	}
	tracing := deps.Tracing
	if tracing == nil {
		tracing = telemetry.NoTracing()
	}
	st, err := store.New(deps.Pool, store.WithTracerProvider(tracing.Provider))
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, err
	}
	if err := telemetry.RegisterPool(deps.Metrics, "writer", deps.Pool); err != nil {
		return nil, err
	}
	rebuilt, err := newRebuildMetrics(deps.Metrics)
	if err != nil {
		return nil, err
	}
	svc := &Service{cfg: cfg, log: deps.Log, clock: deps.Clock, nc: deps.NATS, js: js, names: names,
		consumer: cons, store: st, metrics: m, tracer: tracing.Provider.Tracer("haru/writer"), prop: tracing.Propagator,
		rebuilds: &rebuilder{pool: deps.Pool, log: deps.Log, result: rebuilt}}
	svc.held.msgs = map[jetstream.Msg]struct{}{}
	svc.ackWait.Store(int64(AckWait))
	svc.noteAckWait(cons.CachedInfo())
	deps.Health.Add("writer_postgres", func(ctx context.Context) error { return deps.Pool.Ping(ctx) })
	deps.Health.Add("writer_consuming", func(context.Context) error {
		if err := svc.pullErr.Load(); err != nil {
			return fmt.Errorf("pulling from the consumer: %w", *err)
		}
		return nil
	})
	deps.Health.Add("writer_nats", func(context.Context) error {
		if !deps.NATS.IsConnected() {
			return errors.New("not connected")
		}
		return nil
	})
	return svc, nil
}

// maxRetentionDays is the longest retention: a hundred years.
const maxRetentionDays = 36500

// Ack timing. A batch's messages are redelivered to another writer AckWait after this one
// stops acknowledging them (a crash), so it is short; a write that runs long, up to
// WriteTimeout, keeps them with "in progress" signals. Those go to every message the
// writer holds, not only to the batch being written: the pull delivers the next batch's
// messages during the write, and their ack wait runs from then (see consumeOnce).
//
// An AckWait above WriteTimeout plus the batch age would cover those messages without
// any signal, but a killed writer's events would then wait minutes instead of seconds
// for another writer: signalling every message held keeps crash recovery at AckWait.
const (
	AckWait      = 30 * time.Second
	WriteTimeout = 2 * time.Minute
)

// ConsumerConfig is the durable pull consumer all writers share. MaxAckPending lets a few
// batches be in flight across replicas; redelivery is unlimited, so an outage of Postgres
// never drops events.
func ConsumerConfig(cfg Config) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       event.ConsumerName,
		Description:   "Haru writers: events into Postgres",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 4 * cfg.BatchSize,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// Run consumes until ctx ends, then finishes and acknowledges the batch in hand.
func (s *Service) Run(ctx context.Context) error {
	if err := s.ensureAhead(ctx); err != nil {
		return err
	}
	// The pull's own buffer (a batch's worth) is the queue: the channel only hands each
	// message over, so no more than two batches are held at once.
	msgs := make(chan jetstream.Msg, 1)
	// The signals outlive ctx as the batch loop does, until the last batch is settled.
	stopSignals := s.keepHeldInProgress()
	defer stopSignals()
	pumpDone := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	go func() {
		defer close(pumpDone)
		defer close(msgs)
		s.pump(gctx, msgs)
	}()
	g.Go(func() error { return s.partitionsAhead(gctx) })
	g.Go(func() error { return s.watchPending(gctx) })
	g.Go(func() error { return s.rebuildRequested(gctx) })
	g.Go(func() error {
		// The batch loop ends when the pump closes msgs, not on ctx, so the last batch is
		// written and acked; its writes use a context that outlives ctx for that reason.
		s.batchLoop(context.WithoutCancel(ctx), msgs)
		return nil
	})
	err := g.Wait()
	<-pumpDone
	// The last batch's acks are buffered on the connection: send them before returning,
	// so a writer that stops does not hand its last batch to another as a redelivery.
	if ferr := s.nc.FlushTimeout(5 * time.Second); ferr != nil {
		s.log.Warn("flush acks", "err", ferr)
	}
	return err
}

// pump feeds msgs from the consumer until ctx ends, then drains what was pulled. A pull
// that fails (the consumer lost with its stream's leader, deleted by an operator) is
// taken up again with backoff: a writer that stopped consuming but kept running would
// leave the backlog growing with every health check green.
func (s *Service) pump(ctx context.Context, msgs chan<- jetstream.Msg) {
	backoff := 100 * time.Millisecond
	for {
		n, err := s.consumeOnce(ctx, msgs)
		if ctx.Err() != nil || s.nc.IsClosed() {
			return
		}
		if errors.Is(err, errHandedOver) {
			continue
		}
		if n > 0 {
			backoff = 100 * time.Millisecond
		}
		s.metrics.consumeRestarts.Inc()
		failed := err
		s.pullErr.Store(&failed)
		s.log.Error("consume interrupted; resuming", "err", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
		// The consumer may be gone: declare it again (a no-op when it exists).
		cons, err := s.js.CreateOrUpdateConsumer(ctx, s.names.Stream, ConsumerConfig(s.cfg))
		if err != nil {
			failed := fmt.Errorf("declare consumer: %w", err)
			s.pullErr.Store(&failed)
			s.log.Warn("declare consumer", "err", err)
			continue
		}
		s.noteAckWait(cons.CachedInfo())
	}
}

// pullHeartbeat is the heartbeat asked of the server for each pull; its library default
// (half the 30 s pull expiry) would leave a stalled pull unnoticed for 30 s.
const pullHeartbeat = 5 * time.Second

// errHandedOver ends a pull that consumeOnce stopped while the batch loop was busy, once
// everything it had buffered is handed over: the next pull starts at once.
var errHandedOver = errors.New("pull stopped while the batch loop was busy")

// consumeOnce runs one Messages iterator until it fails or ctx ends, and returns how many
// messages it passed on. Every message it takes joins s.held, kept in progress.
//
// The iterator buffers up to a batch ahead, delivered by the server and so on their ack
// wait, but out of reach of any in-progress signal until taken from it. While a write
// runs long, the batch loop takes nothing: after handoverWait, consumeOnce stops the
// pull and takes what it buffered, held and signalled until the batch loop is ready for
// it. Memory stays as before: the batch being written and at most a batch ahead.
func (s *Service) consumeOnce(ctx context.Context, msgs chan<- jetstream.Msg) (n int, err error) {
	// A pull whose heartbeats stop (its consumer lost with a node or deleted with its
	// stream, which no status message announces) ends after two missed beats.
	iter, err := s.consumer.Messages(jetstream.PullMaxMessages(s.cfg.BatchSize), jetstream.PullHeartbeat(pullHeartbeat))
	if err != nil {
		return 0, fmt.Errorf("consume: %w", err)
	}
	s.pullErr.Store(nil)
	// Stop pulling when asked; what was already pulled still comes out of Next.
	stop := context.AfterFunc(ctx, iter.Drain)
	defer stop()
	defer iter.Stop()
	var wait *time.Timer
	for {
		msg, err := iter.Next()
		if err != nil {
			return n, err
		}
		n++
		s.held.add(msg)
		select {
		case msgs <- msg:
			continue
		default:
		}
		if wait == nil {
			wait = time.NewTimer(s.handoverWait())
		} else {
			wait.Reset(s.handoverWait())
		}
		select {
		case msgs <- msg:
			wait.Stop()
			continue
		case <-wait.C:
		}
		iter.Drain()
		rest := []jetstream.Msg{msg}
		for {
			m, err := iter.Next()
			if err != nil {
				break
			}
			s.held.add(m)
			rest = append(rest, m)
		}
		for _, m := range rest {
			msgs <- m
		}
		return n + len(rest) - 1, errHandedOver
	}
}

// handoverWait is how long consumeOnce waits for the batch loop before it stops the pull:
// a third of the ack wait, so a message buffered meanwhile is signalled (within another
// third) before its ack wait runs out.
func (s *Service) handoverWait() time.Duration {
	return time.Duration(s.ackWait.Load()) / 3
}

// batchWait is how long a batch may stay open when its first event has already waited
// in the stream (from its store time): BatchAge counts from then, so the events that queued
// while the previous batch was written do not wait a whole BatchAge once more. It is at
// least a quarter of BatchAge, time enough to take in what queued, and at most BatchAge,
// whatever the clocks of the writer and the server say.
func batchWait(batchAge, waited time.Duration) time.Duration {
	return min(batchAge, max(batchAge-waited, batchAge/4))
}

// batchLoop collects messages into batches closed by size or age and writes each.
func (s *Service) batchLoop(ctx context.Context, msgs <-chan jetstream.Msg) {
	batch := make([]jetstream.Msg, 0, s.cfg.BatchSize)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func() {
		if len(batch) > 0 {
			s.handleBatch(ctx, batch)
			batch = batch[:0]
		}
		timer.Stop()
	}
	for {
		select {
		case msg, ok := <-msgs:
			if !ok {
				flush()
				return
			}
			if len(batch) == 0 {
				var waited time.Duration
				if md, err := msg.Metadata(); err == nil {
					waited = time.Since(md.Timestamp)
				}
				timer.Reset(batchWait(s.cfg.BatchAge, waited))
			}
			batch = append(batch, msg)
			if len(batch) >= s.cfg.BatchSize {
				flush()
			}
		case <-timer.C:
			flush()
		}
	}
}

// handleBatch is a batch's whole path: decode, write in one transaction, ack after
// commit, announce.
func (s *Service) handleBatch(ctx context.Context, msgs []jetstream.Msg) {
	defer s.held.settle(msgs)
	start := time.Now()
	events := make([]event.Event, 0, len(msgs))
	good := make([]jetstream.Msg, 0, len(msgs))
	withReason := termTakesReason(s.nc.ConnectedServerVersion())
	cut, pruning := s.retentionCutoff()
	for _, m := range msgs {
		if md, err := m.Metadata(); err == nil && md.NumDelivered > 1 {
			s.metrics.redelivered.Inc()
		}
		e, err := event.Decode(m.Data())
		if errors.Is(err, event.ErrNewerVersion) {
			// Written by a newer ingest: left for an upgraded writer, never terminated.
			s.metrics.deferred.Inc()
			s.log.Warn("event of a newer version left for an upgraded writer", "subject", m.Subject(), "err", err)
			_ = m.NakWithDelay(newerVersionDelay)
			continue
		}
		if err != nil {
			// Poison: retrying cannot help. Terminate it so it leaves the stream, with
			// the reason for the server's advisory where the server reads one: a 2.9
			// server ignores "+TERM <reason>" and would leave the message pending,
			// redelivered every ack wait for ever.
			s.metrics.terminated.Inc()
			s.log.Error("terminating undecodable message", "subject", m.Subject(), "err", err)
			if withReason {
				_ = m.TermWithReason("undecodable event: " + err.Error())
			} else {
				_ = m.Term()
			}
			continue
		}
		if pruning && !monthEnd(e.Time).After(cut) {
			// Its month is past retention, dropped or about to be: storing it would bring
			// the month's partition back with a straggler in it, which a rebuild would
			// take for the month's events.
			s.metrics.skipped.WithLabelValues(skippedPastRetention).Inc()
			_ = m.Ack()
			continue
		}
		events = append(events, e)
		good = append(good, m)
	}
	if len(events) == 0 {
		return
	}
	ctx, span := s.tracer.Start(ctx, "writer batch", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithNewRoot(), trace.WithLinks(s.links(good)...),
		trace.WithAttributes(attribute.String("messaging.system", "nats"),
			attribute.Int("messaging.batch.message_count", len(msgs))))
	defer span.End()
	wctx, cancel := context.WithTimeout(ctx, WriteTimeout)
	res, err := s.store.Write(wctx, events)
	cancel()
	span.SetAttributes(attribute.Int("haru.events.inserted", res.Inserted), attribute.Int("haru.events.dead_lettered", res.DeadLettered))
	// A failed write may still have committed part of a split batch: its retry finds
	// those events stored, so they are counted and announced now or never.
	s.metrics.rowsWritten.Add(float64(res.Inserted))
	s.metrics.skipped.WithLabelValues(skippedDuplicate).Add(float64(res.Duplicates))
	s.metrics.skipped.WithLabelValues(skippedSiteDeleted).Add(float64(res.SiteDeleted))
	s.metrics.deadLettered.Add(float64(res.DeadLettered))
	if res.DeadLettered > 0 {
		s.log.Warn("events dead-lettered", "events", res.DeadLettered)
	}
	s.announce(res)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "write batch failed")
		s.metrics.batchErrors.Inc()
		delay := retryDelay(good[0])
		s.log.Error("write batch failed; will retry", "events", len(events), "committed", res.Inserted+res.DeadLettered,
			"retry_in", delay.String(), "err", err)
		for _, m := range good {
			_ = m.NakWithDelay(delay)
		}
		return
	}
	for _, m := range good {
		// A lost ack only means a redelivery, which the unique key turns into a no-op.
		_ = m.Ack()
	}
	s.metrics.batchSize.Observe(float64(len(events)))
	s.metrics.commitSeconds.Observe(time.Since(start).Seconds())
}

// newerVersionDelay is how long a message of a newer wire format waits before it is
// offered again, to this writer or to an upgraded one.
const newerVersionDelay = 30 * time.Second

// termTakesReason reports whether a server of version v reads a reason after "+TERM":
// from 2.10 on. An unknown version gets the bare "+TERM" every server reads.
func termTakesReason(v string) bool {
	var major, minor int
	if _, err := fmt.Sscanf(v, "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major > 2 || major == 2 && minor >= 10
}

// maxLinks bounds the trace links of a batch span; the SDK keeps 128 by default.
const maxLinks = 128

// links are the distinct trace contexts the messages carry (ingest injects the beacon's
// traceparent): a batch serves many traces, so its span links to them rather than
// belonging to one.
func (s *Service) links(msgs []jetstream.Msg) []trace.Link {
	var out []trace.Link
	seen := map[trace.SpanID]bool{}
	for _, m := range msgs {
		h := m.Headers()
		if len(h) == 0 {
			continue
		}
		sc := trace.SpanContextFromContext(s.prop.Extract(context.Background(), telemetry.HeaderCarrier(h)))
		if !sc.IsValid() || seen[sc.SpanID()] {
			continue
		}
		seen[sc.SpanID()] = true
		out = append(out, trace.Link{SpanContext: sc})
		if len(out) == maxLinks {
			break
		}
	}
	return out
}

// held is a set of messages taken from the consumer and not yet acked, NAKed or
// terminated.
type held struct {
	mu   sync.Mutex
	msgs map[jetstream.Msg]struct{}
}

func (h *held) add(m jetstream.Msg) {
	h.mu.Lock()
	h.msgs[m] = struct{}{}
	h.mu.Unlock()
}

// settle takes msgs out of the set once they are acked, NAKed or terminated.
func (h *held) settle(msgs []jetstream.Msg) {
	h.mu.Lock()
	for _, m := range msgs {
		delete(h.msgs, m)
	}
	h.mu.Unlock()
}

func (h *held) list() []jetstream.Msg {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]jetstream.Msg, 0, len(h.msgs))
	for m := range h.msgs {
		out = append(out, m)
	}
	return out
}

// keepHeldInProgress tells JetStream every third of the ack wait that every message the
// writer holds is still being worked on: those of the batch being written, of the batch
// gathering, and those consumeOnce took out of a stopped pull. A slow but healthy write
// then redelivers none of them to another writer. A message is signalled from when it
// is taken, not from when its write starts, so a wait for the batch loop counts too.
// Every message held is signalled, however recently taken: one the pull buffered for a
// while before handing it over is already partway through its ack wait, and a signal
// costs about what an ack does, for the roughly one batch held at any moment. The
// returned func stops it and waits.
func (s *Service) keepHeldInProgress() (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTimer(s.handoverWait())
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				// A message settled since the list was taken refuses the signal.
				for _, m := range s.held.list() {
					_ = m.InProgress()
				}
				t.Reset(s.handoverWait())
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// announce tells query replicas, over core NATS, which sites have new data.
func (s *Service) announce(res store.Result) {
	now := s.clock.Now().UTC()
	for _, sc := range res.Sites {
		data, err := event.EncodeUpdated(event.Updated{SiteID: sc.SiteID, Events: sc.Inserted, From: sc.From, To: sc.To, At: now})
		if err != nil {
			continue
		}
		if err := s.nc.Publish(s.names.UpdatedSubject(sc.SiteID), data); err != nil {
			s.log.Warn("announce update", "site_id", sc.SiteID, "err", err)
		}
	}
}

// retryDelay backs off with the number of deliveries: 1s, 2s, 4s … up to 30s.
func retryDelay(m jetstream.Msg) time.Duration {
	n := uint64(1)
	if md, err := m.Metadata(); err == nil {
		n = md.NumDelivered
	}
	d := time.Second << min(n-1, 5)
	return min(d, 30*time.Second)
}

// partitionsAhead keeps next months' partitions created and, with a retention set,
// drops raw months past it, checking hourly.
func (s *Service) partitionsAhead(ctx context.Context) error {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if err := s.ApplyRetention(ctx); err != nil {
			s.log.Warn("apply retention", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.ensureAhead(ctx); err != nil {
				s.log.Warn("create partitions ahead", "err", err)
			}
		}
	}
}

// ensureAhead creates the partitions of the months around now, but none that retention
// would drop at once.
func (s *Service) ensureAhead(ctx context.Context) error {
	now := s.clock.Now()
	from := now.AddDate(0, -1, 0)
	if cut, ok := s.retentionCutoff(); ok && from.Before(cut) {
		from = cut
	}
	return s.store.EnsureAhead(ctx, from, now.AddDate(0, 2, 0))
}

// monthEnd is the start of the UTC month after t's: raw events are kept and dropped by
// UTC month.
func monthEnd(t time.Time) time.Time {
	y, m, _ := t.UTC().Date()
	return time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC)
}

func (s *Service) retentionCutoff() (time.Time, bool) {
	if s.cfg.RetentionDays <= 0 {
		return time.Time{}, false
	}
	return s.clock.Now().UTC().AddDate(0, 0, -s.cfg.RetentionDays), true
}

// ApplyRetention drops the raw-event months that ended more than RetentionDays ago and
// the per-visitor first-sighting records older than that. Rollups and visits are kept.
// It does nothing when RetentionDays is 0.
func (s *Service) ApplyRetention(ctx context.Context) error {
	cut, ok := s.retentionCutoff()
	if !ok {
		return nil
	}
	dropped, err := s.store.DropPartitionsBefore(ctx, cut)
	for _, name := range dropped {
		s.log.Info("dropped raw events past retention", "partition", name)
	}
	if err != nil {
		return err
	}
	return s.store.PruneSeen(ctx, cut)
}

// watchPending publishes the consumer's backlog, the writers' lag, every few seconds:
// the messages not yet delivered and those delivered but not yet acknowledged.
func (s *Service) watchPending(ctx context.Context) error {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		info, err := s.consumer.Info(ctx)
		if err == nil {
			// Delivered but unacknowledged messages are unstored too: during a Postgres
			// outage every event waits there, NAKed and redelivered, not in NumPending.
			s.metrics.pending.Set(float64(info.NumPending) + float64(info.NumAckPending))
			s.noteAckWait(info)
		} else if ctx.Err() == nil {
			s.log.Debug("read consumer info", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// RebuildRollups recomputes a site's rollups for the local days from..to (inclusive;
// only their dates count) from raw events in one transaction, while ingestion goes on: a
// writer batch holding an event of that site waits for the rebuild to commit, and the
// stream keeps what arrives meanwhile. It refuses a range whose raw events retention has
// dropped.
func RebuildRollups(ctx context.Context, pool *pgxpool.Pool, siteID int64, from, to time.Time) error {
	if pool == nil {
		return errors.New("rebuild rollups: nil pool")
	}
	return store.Rebuild(ctx, pool, siteID, from, to)
}

// RebuildRollupsInChunks is RebuildRollups over the local days from..to, chunk days per
// transaction, so the site's writers wait for one chunk at a time rather than the whole
// range. done, when not nil, is told of each chunk once it has committed.
func RebuildRollupsInChunks(ctx context.Context, pool *pgxpool.Pool, siteID int64, from, to time.Time, chunk int,
	done func(from, to time.Time, took time.Duration)) error {
	if chunk < 1 {
		return fmt.Errorf("rebuild rollups: chunk of %d days, want at least 1", chunk)
	}
	day := time.Date(from.Year(), from.Month(), from.Day(), 0, 0, 0, 0, time.UTC)
	last := time.Date(to.Year(), to.Month(), to.Day(), 0, 0, 0, 0, time.UTC)
	for !day.After(last) {
		end := day.AddDate(0, 0, chunk-1)
		if end.After(last) {
			end = last
		}
		start := time.Now()
		if err := RebuildRollups(ctx, pool, siteID, day, end); err != nil {
			return fmt.Errorf("rebuild %s..%s: %w", day.Format(time.DateOnly), end.Format(time.DateOnly), err)
		}
		if done != nil {
			done(day, end, time.Since(start))
		}
		day = end.AddDate(0, 0, 1)
	}
	return nil
}

// RebuildAllRollups rebuilds every local day of a site that holds its raw events, from
// ZoneShiftDays before the first to as many after the last: after a timezone change,
// the days written in the old zone are bucketed anew, and none of the old buckets around
// the data keeps an event that a new one counts too. Days before the first raw event's
// that fall in a month retention dropped (keeping its rollups) cannot be rebuilt, and
// are left as they are. It returns the first and last day rebuilt, none when the site has
// no raw events.
func RebuildAllRollups(ctx context.Context, pool *pgxpool.Pool, siteID int64, chunk int,
	done func(from, to time.Time, took time.Duration)) (from, to time.Time, err error) {
	first, last, ok, err := store.RawEventDays(ctx, pool, siteID)
	if err != nil || !ok {
		return from, to, err
	}
	from, to = first.AddDate(0, 0, -store.ZoneShiftDays), last.AddDate(0, 0, store.ZoneShiftDays)
	// The days before the first raw event's, one at a time: one in a month whose raw
	// events are gone and whose rollups are kept is refused, and left as it is.
	var rebuilt time.Time
	for day := from; day.Before(first); day = day.AddDate(0, 0, 1) {
		start := time.Now()
		err := RebuildRollups(ctx, pool, siteID, day, day)
		if errors.Is(err, store.ErrNoRawEvents) {
			continue
		}
		if err != nil {
			return from, to, fmt.Errorf("rebuild %s: %w", day.Format(time.DateOnly), err)
		}
		if rebuilt.IsZero() {
			rebuilt = day
		}
		if done != nil {
			done(day, day, time.Since(start))
		}
	}
	if rebuilt.IsZero() {
		rebuilt = first
	}
	return rebuilt, to, RebuildRollupsInChunks(ctx, pool, siteID, first, to, chunk, done)
}

// Run is the composition root of the writer running alone.
func Run(ctx context.Context, cfg Config, deps Deps, stdout io.Writer) error {
	if err := cfg.Validate(true); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	config.Print(stdout, "writer", cfg)
	pool, err := pgutil.Open(ctx, cfg.DatabaseURL, int32(cfg.DBMaxConns), "haru-writer")
	if err != nil {
		return err
	}
	defer pool.Close()
	if cfg.Migrate {
		if _, err := pgutil.Migrate(ctx, pool); err != nil {
			return err
		}
	}
	nc, err := natsutil.Connect(cfg.NATS.URL, "haru-writer", deps.Log)
	if err != nil {
		return err
	}
	defer nc.Close()
	deps.NATS, deps.Pool = nc, pool
	svc, err := New(ctx, cfg, deps)
	if err != nil {
		return err
	}
	err = server.Alone{
		Log: deps.Log, Run: svc.Run,
		Ops: telemetry.OpsApp(telemetry.GathererOf(deps.Metrics), deps.Health), OpsAddr: cfg.OpsAddr,
	}.Serve(ctx)
	natsutil.Drain(nc, deps.Log)
	return err
}

// The reasons of haru_writer_events_skipped_total.
const (
	skippedDuplicate     = "duplicate"
	skippedSiteDeleted   = "site_deleted"
	skippedPastRetention = "past_retention"
)

// metrics are the writer's Prometheus series.
type metrics struct {
	batchSize       prometheus.Histogram
	commitSeconds   prometheus.Histogram
	rowsWritten     prometheus.Counter
	skipped         *prometheus.CounterVec
	terminated      prometheus.Counter
	deferred        prometheus.Counter
	batchErrors     prometheus.Counter
	redelivered     prometheus.Counter
	deadLettered    prometheus.Counter
	pending         prometheus.Gauge
	consumeRestarts prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "haru_writer_batch_events", Help: "Events per written batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8),
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "haru_writer_commit_seconds", Help: "Time to write and commit one batch.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 10),
		}),
		rowsWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haru_writer_rows_written_total", Help: "Events inserted into Postgres.",
		}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haru_writer_events_skipped_total",
			Help: "Events not inserted, by reason: duplicate (stored or dead-lettered before, or repeated in a batch), site_deleted, or past_retention (its month past HARU_RETENTION_DAYS).",
		}, []string{"reason"}),
		terminated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haru_writer_messages_terminated_total", Help: "Undecodable messages terminated.",
		}),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haru_writer_messages_newer_version_total", Help: "Messages of a wire format newer than this writer's, left for an upgraded writer.",
		}),
		batchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haru_writer_batch_errors_total", Help: "Batches that failed to commit and were retried.",
		}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haru_writer_messages_redelivered_total", Help: "Messages received more than once (NumDelivered > 1).",
		}),
		deadLettered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haru_writer_events_dead_lettered_total", Help: "Events Postgres refused for a data reason, kept in dead_letters.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "haru_writer_consumer_pending_messages",
			Help: "Consumer lag: messages not yet delivered to a writer (NumPending) plus delivered and not yet acknowledged (NumAckPending).",
		}),
		consumeRestarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haru_writer_consume_restarts_total", Help: "Pulls from the consumer that failed and were taken up again.",
		}),
	}
	// Both reasons are exported from the start, so a rate over them never starts empty.
	m.skipped.WithLabelValues(skippedDuplicate)
	m.skipped.WithLabelValues(skippedSiteDeleted)
	m.skipped.WithLabelValues(skippedPastRetention)
	for _, c := range []prometheus.Collector{m.batchSize, m.commitSeconds, m.rowsWritten, m.skipped, m.terminated, m.deferred, m.batchErrors, m.redelivered, m.deadLettered, m.pending, m.consumeRestarts} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register writer metrics: %w", err)
		}
	}
	return m, nil
}
