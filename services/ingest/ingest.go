// Package ingest is the beacon endpoint: it checks the site token against the registry
// held in NATS KV, derives the cookieless visitor id, enriches the event and publishes it
// to JetStream, answering 202 only once JetStream has stored it. It keeps no database
// connection, so replicas scale out freely.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/haru-analytics/haru/pkg/clientip"
	"github.com/haru-analytics/haru/pkg/clock"
	"github.com/haru-analytics/haru/pkg/config"
	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/server"
	"github.com/haru-analytics/haru/pkg/telemetry"
	"github.com/haru-analytics/haru/services/ingest/internal/enrich"
	"github.com/haru-analytics/haru/services/ingest/internal/ratelimit"
	"github.com/haru-analytics/haru/services/ingest/internal/registry"
	"github.com/haru-analytics/haru/services/ingest/internal/salt"
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
	// CountryHeader and RegionHeader are a CDN's geolocation headers, believed only from
	// TrustedProxies; without them the country comes from the database in the binary.
	CountryHeader string
	RegionHeader  string
	LogLevel      string
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
		CountryHeader:  env.String("HARU_COUNTRY_HEADER", "CF-IPCountry"),
		RegionHeader:   env.String("HARU_REGION_HEADER", "CF-Region-Code"),
		LogLevel:       env.String("HARU_LOG_LEVEL", "info"),
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
	if c.RateLimit < 0 {
		errs = append(errs, fmt.Errorf("HARU_RATE_LIMIT %d: want 0 (off) or more", c.RateLimit))
	}
	if c.RateLimit > 0 && (c.RateWindow < time.Second || c.RateWindow > 24*time.Hour) {
		errs = append(errs, fmt.Errorf("HARU_RATE_WINDOW %s: want 1s..24h", c.RateWindow))
	}
	return errors.Join(errs...)
}

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
	js       jetstream.JetStream
	sites    *registry.Registry
	salts    *salt.Store
	clientIP *clientip.Resolver
	zones    *zoneCache
	agents   *enrich.Agents
	limiter  *ratelimit.Limiter // nil when RateLimit is 0
	metrics  *metrics

	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
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
	salts, err := salt.New(saltsKV)
	if err != nil {
		return nil, err
	}
	ipr, err := clientip.New(cfg.TrustedProxies, cfg.ClientIPHeader)
	if err != nil {
		return nil, err
	}
	var limiter *ratelimit.Limiter
	if cfg.RateLimit > 0 {
		if limiter, err = ratelimit.New(cfg.RateLimit, cfg.RateWindow); err != nil {
			return nil, err
		}
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, err
	}
	enrich.WarmUp()
	s := &Service{
		cfg: cfg, log: deps.Log, clock: deps.Clock, names: names, js: js,
		sites: sites, salts: salts, clientIP: ipr, zones: newZoneCache(),
		agents: enrich.NewAgents(), limiter: limiter, metrics: m,
	}
	tracing := deps.Tracing
	if tracing == nil {
		tracing = telemetry.NoTracing()
	}
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
	r.Post("/api/collect", s.countStatus, s.traceRequest, s.cors, s.handleCollect)
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
	nc, err := natsutil.Connect(cfg.NATS.URL, "haru-ingest", deps.Log)
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
