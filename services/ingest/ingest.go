// Package ingest is the beacon endpoint: it checks the site token against the registry
// held in NATS KV, derives the cookieless visitor id, enriches the event and publishes it
// to JetStream, answering 202 only once JetStream has stored it. It keeps no database
// connection, so replicas scale out freely.
package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/haru-analytics/haru/pkg/clientip"
	"github.com/haru-analytics/haru/pkg/clock"
	"github.com/haru-analytics/haru/pkg/config"
	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/server"
	"github.com/haru-analytics/haru/pkg/telemetry"
	"github.com/haru-analytics/haru/services/ingest/internal/collect"
	"github.com/haru-analytics/haru/services/ingest/internal/enrich"
	"github.com/haru-analytics/haru/services/ingest/internal/ratelimit"
	"github.com/haru-analytics/haru/services/ingest/internal/registry"
	"github.com/haru-analytics/haru/services/ingest/internal/salt"
	"github.com/haru-analytics/haru/services/ingest/internal/uacache"
	"github.com/haru-analytics/haru/tracker"
)

// Config is the ingest service's configuration.
type Config struct {
	NATS natsutil.Config
	// HTTPAddr serves the collect endpoint when ingest runs alone.
	HTTPAddr string
	// OpsAddr serves /metrics, /healthz and /readyz when ingest runs alone.
	OpsAddr string
	// TrustedProxies are CIDRs whose ClientIPHeader is believed.
	TrustedProxies []string
	ClientIPHeader string
	// PublishTimeout bounds the wait for JetStream's PubAck; past it the beacon gets 503.
	PublishTimeout time.Duration
	// RateLimit is how many beacons one client address may send per RateWindow to one
	// replica; 0 turns the limit off.
	RateLimit  int
	RateWindow time.Duration
	// BatchRateLimit is how many events one site may send per RateWindow to one replica
	// through the batch endpoint; 0 turns the limit off.
	BatchRateLimit int
	// IdempotencyTTL is how long the batch endpoint remembers an idempotency key; 0 is
	// DefaultIdempotencyTTL.
	IdempotencyTTL time.Duration
	// CountryHeader and RegionHeader are a CDN's geolocation headers, believed only from
	// TrustedProxies; without them the country comes from the database in the binary.
	CountryHeader string
	RegionHeader  string
	// RegionDB is an optional city database (MaxMind DB format: GeoLite2/GeoIP2 City,
	// DB-IP City Lite) giving the region when no trusted CDN header does.
	RegionDB string
	LogLevel string
	// MemoryLimit is the Go runtime's soft memory limit for ingest running alone (0: none);
	// GOMEMLIMIT, when set, wins. It keeps the garbage collector from letting the heap
	// double past the ~21 MiB ingest holds live (the user-agent and country tables). A
	// registry of very many sites holds more: raise it then, or the collector runs hot.
	MemoryLimit int64
}

// ConfigFromEnv reads the HARU_* variables of the ingest service.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	env := config.NewEnv(getenv)
	cfg := Config{
		NATS:           natsutil.ConfigFromEnv(env),
		HTTPAddr:       env.String("HARU_HTTP_ADDR", ":4010"),
		OpsAddr:        env.String("HARU_OPS_ADDR", "127.0.0.1:4011"),
		TrustedProxies: env.List("HARU_TRUSTED_PROXIES", nil),
		ClientIPHeader: env.String("HARU_CLIENT_IP_HEADER", fiber.HeaderXForwardedFor),
		PublishTimeout: env.Duration("HARU_PUBLISH_TIMEOUT", time.Second),
		RateLimit:      env.Int("HARU_RATE_LIMIT", 100),
		RateWindow:     env.Duration("HARU_RATE_WINDOW", time.Minute),
		BatchRateLimit: env.Int("HARU_BATCH_RATE_LIMIT", 60000),
		IdempotencyTTL: env.Duration("HARU_IDEMPOTENCY_TTL", DefaultIdempotencyTTL),
		CountryHeader:  env.String("HARU_COUNTRY_HEADER", "CF-IPCountry"),
		RegionHeader:   env.String("HARU_REGION_HEADER", "CF-Region-Code"),
		RegionDB:       env.String("HARU_REGION_DB", ""),
		LogLevel:       env.String("HARU_LOG_LEVEL", "info"),
		MemoryLimit:    env.Int64("HARU_MEMORY_LIMIT", 40<<20),
	}
	return cfg, env.Err()
}

// Validate reports every setting ingest cannot start with; requireNATS is false only in
// the single binary.
func (c Config) Validate(requireNATS bool) error {
	var errs []error
	if err := c.NATS.Validate(requireNATS); err != nil {
		errs = append(errs, err)
	}
	if _, err := clientip.New(c.TrustedProxies, c.ClientIPHeader); err != nil {
		errs = append(errs, err)
	}
	if c.PublishTimeout < 10*time.Millisecond || c.PublishTimeout > 30*time.Second {
		errs = append(errs, fmt.Errorf("HARU_PUBLISH_TIMEOUT %s: want 10ms..30s", c.PublishTimeout))
	}
	if c.RegionDB != "" {
		if _, err := os.Stat(c.RegionDB); err != nil {
			errs = append(errs, fmt.Errorf("HARU_REGION_DB: %w", err))
		}
	}
	if c.MemoryLimit != 0 && c.MemoryLimit < 32<<20 {
		errs = append(errs, fmt.Errorf("HARU_MEMORY_LIMIT %d: want 0 (none) or at least 32MiB", c.MemoryLimit))
	}
	if c.RateLimit < 0 {
		errs = append(errs, fmt.Errorf("HARU_RATE_LIMIT %d: want 0 (off) or more", c.RateLimit))
	}
	if c.BatchRateLimit != 0 && c.BatchRateLimit < collect.MaxBatchItems {
		errs = append(errs, fmt.Errorf("HARU_BATCH_RATE_LIMIT %d: want 0 (off) or at least %d", c.BatchRateLimit, collect.MaxBatchItems))
	}
	if c.IdempotencyTTL != 0 && c.IdempotencyTTL < time.Minute || c.IdempotencyTTL > 30*24*time.Hour {
		errs = append(errs, fmt.Errorf("HARU_IDEMPOTENCY_TTL %s: want 1m..720h", c.IdempotencyTTL))
	}
	if (c.RateLimit > 0 || c.BatchRateLimit > 0) && (c.RateWindow < time.Second || c.RateWindow > 24*time.Hour) {
		errs = append(errs, fmt.Errorf("HARU_RATE_WINDOW %s: want 1s..24h", c.RateWindow))
	}
	return errors.Join(errs...)
}

// DefaultIdempotencyTTL is how long a batch idempotency key holds by default: a sender's
// retries of one request are far closer together than a day.
const DefaultIdempotencyTTL = 24 * time.Hour

// publishWindow bounds the publishes awaiting their PubAck per replica; past it a publish
// waits for room (briefly, then fails and the beacon gets 503).
const publishWindow = 4096

// Deps are what ingest is given rather than builds.
type Deps struct {
	Log     *slog.Logger
	Metrics prometheus.Registerer
	Health  *telemetry.Health
	Clock   clock.Clock
	NATS    *nats.Conn
	// Tracing is optional; nil traces nothing.
	Tracing *telemetry.Tracing
}

// Service is a running ingest: its registry watch and its HTTP handlers.
type Service struct {
	cfg      Config
	log      *slog.Logger
	clock    clock.Clock
	names    event.Names
	pub      *publisher
	sites    *registry.Registry
	salts    *salt.Store
	clientIP *clientip.Resolver
	zones    *zoneCache
	agents   *uacache.Cache[agentVerdict]
	regions  *enrich.RegionDB               // nil without HARU_REGION_DB
	limiter  *ratelimit.Limiter[netip.Addr] // nil when RateLimit is 0
	// batchLimiter counts batch events per site id; nil when BatchRateLimit is 0.
	batchLimiter *ratelimit.Limiter[int64]
	idem         jetstream.KeyValue // idempotency keys of batch events
	metrics      *metrics
	subjects     *subjectCache
	outMsgs      sync.Pool // of *outMsg

	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	traced     bool // false: no spans at all, and no per-request context for them
}

// New sets up what ingest needs in NATS (the stream and both buckets, if missing) and
// returns the service. Call Run to start the registry watch.
func New(ctx context.Context, cfg Config, deps Deps) (*Service, error) {
	if deps.Log == nil || deps.Metrics == nil || deps.Health == nil || deps.Clock == nil || deps.NATS == nil {
		return nil, errors.New("ingest: nil dependency")
	}
	names := cfg.NATS.Names()
	js, err := jetstream.New(deps.NATS)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	stream, err := natsutil.EnsureStream(ctx, js, names, cfg.NATS.Stream)
	if err != nil {
		return nil, err
	}
	if err := deps.Metrics.Register(newStreamCollector(stream)); err != nil {
		return nil, fmt.Errorf("register stream metrics: %w", err)
	}
	sitesKV, err := natsutil.EnsureSites(ctx, js, names, cfg.NATS.Stream.Replicas)
	if err != nil {
		return nil, err
	}
	saltsKV, err := natsutil.EnsureSalts(ctx, js, names, cfg.NATS.Stream.Replicas)
	if err != nil {
		return nil, err
	}
	sites, err := registry.New(sitesKV, deps.Log)
	if err != nil {
		return nil, err
	}
	salts, err := salt.New(saltsKV, cfg.PublishTimeout)
	if err != nil {
		return nil, err
	}
	ipr, err := clientip.New(cfg.TrustedProxies, cfg.ClientIPHeader)
	if err != nil {
		return nil, err
	}
	var limiter *ratelimit.Limiter[netip.Addr]
	if cfg.RateLimit > 0 {
		if limiter, err = ratelimit.New[netip.Addr](cfg.RateLimit, cfg.RateWindow); err != nil {
			return nil, err
		}
	}
	var batchLimiter *ratelimit.Limiter[int64]
	if cfg.BatchRateLimit > 0 {
		if batchLimiter, err = ratelimit.New[int64](cfg.BatchRateLimit, cfg.RateWindow); err != nil {
			return nil, err
		}
	}
	idem, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      names.Prefix + "_idempotency",
		Description: "Haru batch idempotency keys: key hash → first event id and time",
		History:     1,
		TTL:         cmp.Or(cfg.IdempotencyTTL, DefaultIdempotencyTTL),
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.NATS.Stream.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("idempotency bucket: %w", err)
	}
	var regions *enrich.RegionDB
	if cfg.RegionDB != "" {
		// Mapped for the life of the process: handlers may look up until it exits.
		if regions, err = enrich.OpenRegionDB(cfg.RegionDB); err != nil {
			return nil, err
		}
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, err
	}
	// Publishes are asynchronous with a bounded window of unacknowledged ones; a PubAck
	// that never comes fails its publish after PublishTimeout instead of staying pending.
	pub, err := newPublisher(deps.NATS, cfg.PublishTimeout, publishWindow)
	if err != nil {
		return nil, err
	}
	enrich.WarmUp()
	agents, err := newAgentCache()
	if err != nil {
		return nil, err
	}
	s := &Service{
		cfg: cfg, log: deps.Log, clock: deps.Clock, names: names, pub: pub,
		sites: sites, salts: salts, clientIP: ipr, zones: newZoneCache(),
		agents: agents, limiter: limiter, batchLimiter: batchLimiter, idem: idem, regions: regions, metrics: m,
		subjects: newSubjectCache(names), outMsgs: sync.Pool{New: newOutMsg},
	}
	tracing := deps.Tracing
	if tracing == nil {
		tracing = telemetry.NoTracing()
	}
	_, off := tracing.Provider.(noop.TracerProvider)
	s.traced = !off
	s.tracer, s.propagator = tracing.Provider.Tracer("haru/ingest"), tracing.Propagator
	deps.Health.Add("ingest_nats", func(context.Context) error {
		if !deps.NATS.IsConnected() {
			return errors.New("not connected")
		}
		return nil
	})
	deps.Health.Add("ingest_registry", func(context.Context) error {
		if !sites.Loaded() {
			return registry.ErrNotLoaded
		}
		return nil
	})
	return s, nil
}

// Register mounts ingest's routes: every route of the service is here.
func (s *Service) Register(r fiber.Router) {
	r.Options("/api/collect", s.preflight)
	r.Post("/api/collect", s.countStatus(), s.traceRequest, s.cors, s.handleCollect)
	// Server-side senders only: no CORS, a browser page has no business with a secret.
	r.Post("/api/batch", s.countStatus(), s.traceRequest, s.handleBatch)
	// The tracker is served from the collect origin, which is its default data-api.
	tracker.Register(r)
}

// Run keeps the site registry current until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	return s.sites.Run(ctx)
}

// Run is the composition root of ingest running alone: it dials NATS, serves the
// collect endpoint and the ops listener, and stops in order when ctx ends.
func Run(ctx context.Context, cfg Config, deps Deps, stdout io.Writer) error {
	if err := cfg.Validate(true); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	config.Print(stdout, "ingest", cfg)
	nc, err := natsutil.Connect(cfg.NATS.URL, "haru-ingest", deps.Log, natsutil.PublishFailFast())
	if err != nil {
		return err
	}
	defer nc.Close()
	deps.NATS = nc
	svc, err := New(ctx, cfg, deps)
	if err != nil {
		return err
	}
	app := fiber.New(AppConfig(deps.Log))
	svc.Register(app)
	err = server.Alone{
		Log: deps.Log, Run: svc.Run, App: app, HTTPAddr: cfg.HTTPAddr,
		Ops: telemetry.OpsApp(telemetry.GathererOf(deps.Metrics), deps.Health), OpsAddr: cfg.OpsAddr,
	}.Serve(ctx)
	// HTTP has stopped accepting and in-flight requests have their PubAcks; drain what
	// the connection still buffers before closing it.
	natsutil.Drain(nc, deps.Log)
	return err
}

// AppConfig is the Fiber configuration the collect endpoint needs; the single binary
// uses it for its one app too.
func AppConfig(log *slog.Logger) fiber.Config {
	return fiber.Config{
		DisableStartupMessage: true,
		BodyLimit:             MaxRequestBytes,
		ReadTimeout:           10 * time.Second,
		IdleTimeout:           120 * time.Second,
		ReadBufferSize:        8192,
		ErrorHandler:          server.ErrorHandler(log),
	}
}
