// Package all is the one Haru binary: `haru -target=all` runs ingest, writer and query in
// one process with an embedded JetStream server and one HTTP port; `-target=ingest`,
// `writer` or `query` runs one of them against an external NATS; `haru admin ...` runs
// the operators' commands.
package all

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/haru-analytics/haru/pkg/clock"
	"github.com/haru-analytics/haru/pkg/config"
	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/pgutil"
	"github.com/haru-analytics/haru/pkg/server"
	"github.com/haru-analytics/haru/pkg/telemetry"
	"github.com/haru-analytics/haru/services/ingest"
	"github.com/haru-analytics/haru/services/query"
	"github.com/haru-analytics/haru/services/writer"
)

// Main is the binary's entry: it dispatches on the target or the admin command.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "admin" {
		return Admin(ctx, args[1:], getenv, stdout)
	}
	if len(args) > 0 && args[0] == "nats" {
		return NATS(ctx, args[1:], stdout)
	}
	fs := flag.NewFlagSet("haru", flag.ContinueOnError)
	fs.SetOutput(stdout)
	target := fs.String("target", "all", "what to run: all, ingest, writer or query")
	fs.Usage = func() {
		fmt.Fprintln(stdout, "usage: haru [-target=all|ingest|writer|query]\n       haru admin <command> (haru admin help)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unknown command %q: want haru [-target=all|ingest|writer|query] or haru admin <command> (did you mean haru admin %s?)", fs.Arg(0), fs.Arg(0))
	}
	switch *target {
	case "all":
		cfg, err := ConfigFromEnv(getenv)
		if err != nil {
			return err
		}
		// Tracing follows the standard OTEL_* variables and is a no-op without them; it
		// is flushed last, after every service has stopped.
		base, err := telemetry.NewServiceBase(ctx, stdout, cfg.Query.LogLevel, getenv, "all")
		if err != nil {
			return err
		}
		defer base.Close(ctx)
		return Run(ctx, cfg, base, stdout)
	case "ingest":
		return ingest.Main(ctx, getenv, stdout)
	case "writer":
		return writer.Main(ctx, getenv, stdout)
	case "query":
		return query.Main(ctx, getenv, stdout)
	default:
		return fmt.Errorf("unknown -target %q: want all, ingest, writer or query", *target)
	}
}

// Config is the single binary's configuration: each service's own, read from the same
// variables, with one public and one ops listener for all three.
type Config struct {
	Ingest   ingest.Config
	Writer   writer.Config
	Query    query.Config
	HTTPAddr string
	OpsAddr  string
	DataDir  string
	// NATSListen opens a client port on the embedded server (for `nats` CLI or an extra
	// ingest replica); empty keeps it in-process only.
	NATSListen string
	// NATSSyncAlways fsyncs every JetStream write: survives power loss, costs throughput.
	NATSSyncAlways bool
}

// ConfigFromEnv reads the single binary's configuration.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	var cfg Config
	var errs []error
	var err error
	if cfg.Ingest, err = ingest.ConfigFromEnv(getenv); err != nil {
		errs = append(errs, err)
	}
	if cfg.Writer, err = writer.ConfigFromEnv(getenv); err != nil {
		errs = append(errs, err)
	}
	if cfg.Query, err = query.ConfigFromEnv(getenv); err != nil {
		errs = append(errs, err)
	}
	env := config.NewEnv(getenv)
	cfg.HTTPAddr = env.String("HARU_HTTP_ADDR", ":4000")
	cfg.OpsAddr = env.String("HARU_OPS_ADDR", "127.0.0.1:4001")
	cfg.DataDir = env.String("HARU_DATA_DIR", "./data")
	cfg.NATSListen = env.String("HARU_NATS_LISTEN", "")
	cfg.NATSSyncAlways = env.Bool("HARU_NATS_SYNC_ALWAYS", false)
	errs = append(errs, env.Err())
	return cfg, errors.Join(errs...)
}

// Validate checks every service's configuration; NATS may be left empty (embedded).
func (c Config) Validate() error {
	return errors.Join(c.Ingest.Validate(false), c.Writer.Validate(false), c.Query.Validate(false))
}

// printable is what Run prints: the shared settings once, not three times.
type printable struct {
	HTTPAddr, OpsAddr, DataDir, NATSListen string
	NATSSyncAlways                         bool
	NATS                                   natsutil.Config
	DatabaseURL                            string
	Writer                                 struct{ BatchSize, BatchAge string }
	TrustedProxies                         []string
}

// Run is the composition root of the single binary.
func Run(ctx context.Context, cfg Config, base telemetry.Base, stdout io.Writer) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	p := printable{HTTPAddr: cfg.HTTPAddr, OpsAddr: cfg.OpsAddr, DataDir: cfg.DataDir, NATSListen: cfg.NATSListen,
		NATSSyncAlways: cfg.NATSSyncAlways, NATS: cfg.Ingest.NATS, DatabaseURL: cfg.Query.DatabaseURL,
		TrustedProxies: cfg.Ingest.TrustedProxies}
	p.Writer.BatchSize, p.Writer.BatchAge = fmt.Sprint(cfg.Writer.BatchSize), cfg.Writer.BatchAge.String()
	config.Print(stdout, "haru (all)", p)
	log := base.Log

	// Postgres: the one outside dependency.
	if _, err := pgutil.EnsureDatabase(ctx, cfg.Query.DatabaseURL); err != nil {
		return err
	}
	pool, err := pgutil.Open(ctx, cfg.Query.DatabaseURL, int32(cfg.Query.DBMaxConns+cfg.Writer.DBMaxConns), "haru")
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := pgutil.Migrate(ctx, pool); err != nil {
		return err
	}

	// NATS: embedded unless a URL is given.
	nc, stopNATS, err := connectNATS(cfg, log)
	if err != nil {
		return err
	}
	defer stopNATS()

	clk := clock.System{}
	ing, err := ingest.New(ctx, cfg.Ingest, ingest.Deps{Log: log.With("service", "ingest"), Metrics: base.Registry, Health: base.Health, Clock: clk, NATS: nc, Tracing: base.Tracing})
	if err != nil {
		return err
	}
	wr, err := writer.New(ctx, cfg.Writer, writer.Deps{Log: log.With("service", "writer"), Metrics: base.Registry, Health: base.Health, Clock: clk, NATS: nc, Pool: pool, Tracing: base.Tracing})
	if err != nil {
		return err
	}
	qry, err := query.New(ctx, cfg.Query, query.Deps{Log: log.With("service", "query"), Metrics: base.Registry, Health: base.Health, Clock: clk, NATS: nc, Pool: pool, Tracing: base.Tracing})
	if err != nil {
		return err
	}

	// One port serves the collect endpoint, the dashboard and the API.
	appCfg := query.AppConfig(log)
	appCfg.BodyLimit = ingest.AppConfig(log).BodyLimit
	app := query.NewApp(appCfg)
	ing.Register(app)
	qry.Register(app)

	ln, err := server.Listen(cfg.HTTPAddr)
	if err != nil {
		return err
	}
	opsLn, err := server.Listen(cfg.OpsAddr)
	if err != nil {
		ln.Close()
		return err
	}
	// Shutdown order: HTTP stops accepting (live streams closed first) and finishes
	// in-flight beacons; the writer writes and acks its last batch; then NATS drains and
	// the pool closes (deferred above).
	httpCtx, stopHTTP := context.WithCancel(ctx)
	defer stopHTTP()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return server.Serve(httpCtx, app, ln, log, qry.CloseStreams) })
	g.Go(func() error { return server.Serve(gctx, telemetry.OpsApp(base.Registry, base.Health), opsLn, log, nil) })
	g.Go(func() error { return ing.Run(gctx) })
	g.Go(func() error { return qry.Run(gctx) })
	g.Go(func() error { return wr.Run(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		stopHTTP()
		return nil
	})
	return g.Wait()
}

// connectNATS dials HARU_NATS_URL, or starts the embedded server under the data dir and
// connects in-process. The returned stop drains the connection and stops the server.
func connectNATS(cfg Config, log *slog.Logger) (*nats.Conn, func(), error) {
	if cfg.Ingest.NATS.URL != "" {
		nc, err := natsutil.Connect(cfg.Ingest.NATS.URL, "haru", log, natsutil.PublishFailFast())
		if err != nil {
			return nil, nil, err
		}
		return nc, func() { natsutil.Drain(nc, log) }, nil
	}
	emb, err := natsutil.StartEmbedded(natsutil.EmbeddedOptions{
		StoreDir:   filepath.Join(cfg.DataDir, "nats"),
		Listen:     cfg.NATSListen,
		SyncAlways: cfg.NATSSyncAlways,
	})
	if err != nil {
		return nil, nil, err
	}
	if u := emb.ClientURL(); u != "" {
		log.Info("embedded nats listening", "url", u)
	}
	nc, err := natsutil.Connect("", "haru", log, emb.ConnectOption())
	if err != nil {
		emb.Shutdown()
		return nil, nil, err
	}
	return nc, func() {
		natsutil.Drain(nc, log)
		emb.Shutdown()
	}, nil
}
