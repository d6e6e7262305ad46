// Package query is what site owners reach: accounts, sites and API keys (Postgres is
// their source of truth, mirrored into the NATS site registry for ingest), the stats API,
// and live streams that push new figures when the writer announces an update.
package query

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/haru-analytics/haru/pkg/clientip"
	"github.com/haru-analytics/haru/pkg/clock"
	"github.com/haru-analytics/haru/pkg/config"
	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/pgutil"
	"github.com/haru-analytics/haru/pkg/server"
	"github.com/haru-analytics/haru/pkg/telemetry"
	"github.com/haru-analytics/haru/services/query/internal/account"
	"github.com/haru-analytics/haru/services/query/internal/live"
	"github.com/haru-analytics/haru/services/query/internal/mirror"
	"github.com/haru-analytics/haru/services/query/internal/stats"
)

// Config is the query service's configuration.
type Config struct {
	NATS        natsutil.Config
	DatabaseURL string
	// DatabaseReadURL, when set, is a streaming replica the stats reads go to; accounts,
	// sites and the registry mirror stay on DatabaseURL, the primary.
	DatabaseReadURL string
	HTTPAddr        string
	OpsAddr         string
	// MirrorInterval is how often the site registry is fully reconciled with Postgres,
	// besides the change notifications.
	MirrorInterval time.Duration
	// Heartbeat is how often an idle live stream sends a comment, so a vanished viewer
	// is noticed and proxies keep the connection open.
	Heartbeat time.Duration
	// LiveRefresh is how often every open live view is recomputed without an update, so
	// "online now" falls by itself when traffic stops; at least 1s from the environment
	// (a Config built in code may leave it 0: only on updates).
	LiveRefresh time.Duration
	// APIRateLimit is how many stats API requests one API key may make a minute.
	APIRateLimit int
	DBMaxConns   int
	Migrate      bool
	LogLevel     string
	// PublicURL is where people reach Haru (https://stats.example.com): the dashboard's
	// origin for CSRF checks, share links and Secure cookies. Empty: taken per request.
	PublicURL string
	// IngestURL is the origin the tracking snippet loads haru.js from and sends beacons
	// to, when ingest is not served at PublicURL.
	IngestURL string
	// TrustedProxies (CIDRs) may tell the client's address in ClientIPHeader and the
	// scheme in X-Forwarded-Proto: the dashboard's rate limits count by that address.
	TrustedProxies []string
	ClientIPHeader string
}

// defaultAPIRateLimit is the stats API requests an API key may make a minute.
const defaultAPIRateLimit = 600

// ConfigFromEnv reads the HARU_* variables of the query service.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	env := config.NewEnv(getenv)
	cfg := Config{
		NATS:            natsutil.ConfigFromEnv(env),
		DatabaseURL:     env.String("HARU_DATABASE_URL", pgutil.DefaultURL),
		DatabaseReadURL: env.String("HARU_DATABASE_READ_URL", ""),
		HTTPAddr:        env.String("HARU_HTTP_ADDR", ":4030"),
		OpsAddr:         env.String("HARU_OPS_ADDR", "127.0.0.1:4031"),
		MirrorInterval:  env.Duration("HARU_MIRROR_INTERVAL", 30*time.Second),
		Heartbeat:       env.Duration("HARU_SSE_HEARTBEAT", 15*time.Second),
		LiveRefresh:     env.Duration("HARU_LIVE_REFRESH", time.Minute),
		APIRateLimit:    env.Int("HARU_API_RATE_LIMIT", defaultAPIRateLimit),
		DBMaxConns:      env.Int("HARU_DB_MAX_CONNS", 8),
		Migrate:         env.Bool("HARU_MIGRATE", true),
		LogLevel:        env.String("HARU_LOG_LEVEL", "info"),
		PublicURL:       strings.TrimSuffix(env.String("HARU_PUBLIC_URL", ""), "/"),
		IngestURL:       strings.TrimSuffix(env.String("HARU_INGEST_URL", ""), "/"),
		TrustedProxies:  env.List("HARU_TRUSTED_PROXIES", nil),
		ClientIPHeader:  env.String("HARU_CLIENT_IP_HEADER", fiber.HeaderXForwardedFor),
	}
	return cfg, env.Err()
}

// Validate reports every setting the query service cannot start with.
func (c Config) Validate(requireNATS bool) error {
	var errs []error
	if err := c.NATS.Validate(requireNATS); err != nil {
		errs = append(errs, err)
	}
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("HARU_DATABASE_URL is required"))
	}
	if c.MirrorInterval < time.Second {
		errs = append(errs, fmt.Errorf("HARU_MIRROR_INTERVAL %s: want at least 1s", c.MirrorInterval))
	}
	if c.Heartbeat < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("HARU_SSE_HEARTBEAT %s: want at least 100ms", c.Heartbeat))
	}
	if c.LiveRefresh < time.Second {
		errs = append(errs, fmt.Errorf("HARU_LIVE_REFRESH %s: want at least 1s", c.LiveRefresh))
	}
	for name, u := range map[string]string{"HARU_PUBLIC_URL": c.PublicURL, "HARU_INGEST_URL": c.IngestURL} {
		if p, err := url.Parse(u); u != "" && (err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.Path != "") {
			errs = append(errs, fmt.Errorf("%s %q: want an origin such as https://stats.example.com", name, u))
		}
	}
	if c.APIRateLimit < 1 {
		errs = append(errs, fmt.Errorf("HARU_API_RATE_LIMIT %d: want at least 1 request a minute", c.APIRateLimit))
	}
	if _, err := clientip.New(c.TrustedProxies, c.ClientIPHeader); err != nil {
		errs = append(errs, fmt.Errorf("HARU_TRUSTED_PROXIES: %w", err))
	}
	if c.DBMaxConns < 2 || c.DBMaxConns > pgutil.MaxConns {
		errs = append(errs, fmt.Errorf("HARU_DB_MAX_CONNS %d: want 2 (one listens for site changes) to %d", c.DBMaxConns, pgutil.MaxConns))
	}
	return errors.Join(errs...)
}

// Deps are what the query service is given rather than builds.
type Deps struct {
	Log     *slog.Logger
	Metrics prometheus.Registerer
	Health  *telemetry.Health
	Clock   clock.Clock
	NATS    *nats.Conn
	Pool    *pgxpool.Pool
	// ReadPool is optional: where stats are read from (a replica); nil reads from Pool.
	ReadPool *pgxpool.Pool
	// Tracing is optional; nil traces nothing.
	Tracing *telemetry.Tracing
}

// Service is a running query service.
type Service struct {
	cfg      Config
	log      *slog.Logger
	clock    clock.Clock
	nc       *nats.Conn
	names    event.Names
	accounts *account.Store
	stats    *stats.Querier
	mirror   *mirror.Mirror
	hub      *live.Hub
	// heartbeat paces the comments of idle streams.
	heartbeat *heartbeat
	streams   running
	metrics   *metrics
	tracer    trace.Tracer
	web       *webState
}

// New builds the service and makes sure the site registry bucket exists.
func New(ctx context.Context, cfg Config, deps Deps) (*Service, error) {
	if deps.Log == nil || deps.Metrics == nil || deps.Health == nil || deps.Clock == nil || deps.NATS == nil || deps.Pool == nil {
		return nil, errors.New("query: nil dependency")
	}
	names := cfg.NATS.Names()
	js, err := jetstream.New(deps.NATS)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	sitesKV, err := natsutil.EnsureSites(ctx, js, names, cfg.NATS.Stream.Replicas)
	if err != nil {
		return nil, err
	}
	accounts, err := account.New(deps.Pool)
	if err != nil {
		return nil, err
	}
	reads := deps.Pool
	if deps.ReadPool != nil {
		reads = deps.ReadPool
		deps.Health.Add("query_postgres_read", func(ctx context.Context) error { return reads.Ping(ctx) })
	}
	st, err := stats.New(reads)
	if err != nil {
		return nil, err
	}
	mir, err := mirror.New(deps.Pool, sitesKV, deps.Log, cfg.MirrorInterval)
	if err != nil {
		return nil, err
	}
	deps.Health.Add("query_postgres", func(ctx context.Context) error { return deps.Pool.Ping(ctx) })
	deps.Health.Add("query_nats", func(context.Context) error {
		if !deps.NATS.IsConnected() {
			return errors.New("not connected")
		}
		return nil
	})
	deps.Health.Add("query_site_mirror", func(context.Context) error {
		if !mir.Synced() {
			return errors.New("site registry not mirrored yet")
		}
		return nil
	})
	if cfg.APIRateLimit <= 0 {
		cfg.APIRateLimit = defaultAPIRateLimit
	}
	tracing := deps.Tracing
	if tracing == nil {
		tracing = telemetry.NoTracing()
	}
	st.WithTracer(tracing.Provider)
	svc := &Service{cfg: cfg, log: deps.Log, clock: deps.Clock, nc: deps.NATS, names: names,
		accounts: accounts, stats: st, mirror: mir, tracer: tracing.Provider.Tracer("haru/query")}
	svc.hub = live.NewHub(svc.renderView, 5*time.Second, func(site int64, view string, err error) {
		deps.Log.Warn("live view", "site_id", site, "view", view, "err", err)
	})
	svc.heartbeat = newHeartbeat(cfg.Heartbeat, svc.hub.Closing())
	if svc.web, err = newWebState(cfg, deps.Clock.Now); err != nil {
		return nil, err
	}
	if svc.metrics, err = newMetrics(deps.Metrics, func() float64 { return float64(svc.hub.Len()) }); err != nil {
		return nil, err
	}
	if err := telemetry.RegisterPool(deps.Metrics, "query", deps.Pool); err != nil {
		return nil, err
	}
	return svc, nil
}

// Register mounts the query service's routes: every route of the service is here.
func (s *Service) Register(r fiber.Router) {
	// Middleware is per route, not per group: in the single binary ingest's routes share
	// the /api prefix and must not pass through these.
	m := s.metrics.observe
	r.Get("/api/sites", m, mapErrors, s.requireAPIKey, s.handleSites)
	s.mountStats(prepend{r.Group("/api/v1/sites/:site"), []fiber.Handler{m, mapErrors, s.requireAPIKey, s.rateLimit(), s.withSite, s.trackStream}})
	s.registerWeb(r)
}

// prepend is a router whose GET routes run handlers first, per route as above.
type prepend struct {
	fiber.Router
	handlers []fiber.Handler
}

func (p prepend) Get(path string, handlers ...fiber.Handler) fiber.Router {
	return p.Router.Get(path, append(slices.Clone(p.handlers), handlers...)...)
}

// Run mirrors the site registry and relays update signals until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	sub, err := s.hub.Subscribe(s.nc, s.names.UpdatedWildcard())
	if err != nil {
		return fmt.Errorf("subscribe to updates: %w", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck
	// Live streams missed the updates sent while NATS was away: refresh them all once
	// it is back. The connection's own handler (a log line) still runs first.
	prev := s.nc.Opts.ReconnectedCB
	s.nc.SetReconnectHandler(func(c *nats.Conn) {
		if prev != nil {
			prev(c)
		}
		s.hub.PublishAll()
	})
	go s.refreshLive(ctx)
	return s.mirror.Run(ctx)
}

// refreshLive recomputes every open live view each LiveRefresh until ctx ends: the
// figures of a quiet site change too, as visitors leave "online now".
func (s *Service) refreshLive(ctx context.Context) {
	if s.cfg.LiveRefresh <= 0 {
		return
	}
	tick := time.NewTicker(s.cfg.LiveRefresh)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.hub.PublishAll()
		}
	}
}

// CloseStreams ends every open event stream and waits, up to 5 s, until each has sent the
// end of its body and closed its connection (a viewer that reads nothing is let go by its
// stream's write deadline later). Call it before HTTP shutdown, which does not wait for
// the connections streams took over.
func (s *Service) CloseStreams() {
	const patience = 5 * time.Second
	s.hub.Close()
	if !s.streams.wait(patience) {
		s.log.Warn("event streams still open after closing them", "waited", patience.String())
	}
}

// Run is the composition root of the query service running alone.
func Run(ctx context.Context, cfg Config, deps Deps, stdout io.Writer) error {
	if err := cfg.Validate(true); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	config.Print(stdout, "query", cfg)
	pool, err := pgutil.Open(ctx, cfg.DatabaseURL, int32(cfg.DBMaxConns), "haru-query")
	if err != nil {
		return err
	}
	defer pool.Close()
	if cfg.Migrate {
		if _, err := pgutil.Migrate(ctx, pool); err != nil {
			return err
		}
	}
	if cfg.DatabaseReadURL != "" {
		if deps.ReadPool, err = pgutil.Open(ctx, cfg.DatabaseReadURL, int32(cfg.DBMaxConns), "haru-query-read"); err != nil {
			return err
		}
		defer deps.ReadPool.Close()
	}
	nc, err := natsutil.Connect(cfg.NATS.URL, "haru-query", deps.Log)
	if err != nil {
		return err
	}
	defer nc.Close()
	deps.NATS, deps.Pool = nc, pool
	svc, err := New(ctx, cfg, deps)
	if err != nil {
		return err
	}
	app := NewApp(AppConfig(deps.Log))
	svc.Register(app)
	err = server.Alone{
		Log: deps.Log, Run: svc.Run, App: app, HTTPAddr: cfg.HTTPAddr, BeforeShutdown: svc.CloseStreams,
		Ops: telemetry.OpsApp(telemetry.GathererOf(deps.Metrics), deps.Health), OpsAddr: cfg.OpsAddr,
	}.Serve(ctx)
	natsutil.Drain(nc, deps.Log)
	return err
}

// NewApp returns the Fiber app to register the query service's routes on, configured
// with cfg (AppConfig, or more). Its server leaves a connection that a live stream takes
// over to the stream, which closes it, rather than keeping the request's buffers and
// state for as long as the stream lasts.
func NewApp(cfg fiber.Config) *fiber.App {
	app := fiber.New(cfg)
	app.Server().KeepHijackedConns = true
	return app
}

// AppConfig is the Fiber configuration of the query service's routes, for NewApp.
func AppConfig(log *slog.Logger) fiber.Config {
	return fiber.Config{
		DisableStartupMessage: true,
		// Values read from a request (a dimension, a filter, an email) are kept after
		// the answer, as cache keys and streams' views: they must be copies, not views
		// of buffers the server reuses.
		Immutable:    true,
		ReadTimeout:  10 * time.Second,
		IdleTimeout:  120 * time.Second,
		ErrorHandler: server.ErrorHandler(log),
	}
}
