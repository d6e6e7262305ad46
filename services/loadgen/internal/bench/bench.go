// Package bench measures the real ingest service in one process: an embedded JetStream
// server, ingest on a loopback port, and beside it a bare Fiber endpoint that only parses
// the same JSON (the ceiling any collect handler on this stack could reach). Both are
// driven with the same traffic, one after the other.
package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/haru-analytics/haru/pkg/clock"
	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/server"
	"github.com/haru-analytics/haru/pkg/telemetry"
	"github.com/haru-analytics/haru/services/ingest"
	"github.com/haru-analytics/haru/services/loadgen/internal/load"
	"github.com/haru-analytics/haru/services/loadgen/internal/traffic"
)

// Options configure a benchmark run.
type Options struct {
	// Duration is measured per target, after Warmup.
	Duration time.Duration
	Warmup   time.Duration
	// N bounds each target's measured beacons as well (0: no bound).
	N     int64
	Conns int
	// SteadyRate is the fixed rate of the steady run (beacons/s); 0 skips it.
	SteadyRate float64
	// Sites is how many sites the registry holds and the traffic spreads over.
	Sites int
	Seed  uint64
	// Pool is how many beacons are generated before each run (see load.Options).
	Pool int
	// CPUProfile, when set, receives a CPU profile of the ingest run at full speed.
	CPUProfile string
	// Log receives the services' warnings and errors.
	Log *slog.Logger
}

// Report is every run of a benchmark.
type Report struct {
	Bare   load.Result  `json:"bare"`
	Ingest load.Result  `json:"ingest"`
	Steady *load.Result `json:"steady,omitempty"`
	// BareSteady is the bare endpoint at the steady rate: the harness's own latency floor
	// at that rate, since the sender's timers share the CPUs with the servers.
	BareSteady *load.Result `json:"bare_steady,omitempty"`
	// Stored is how many events the full-speed ingest run left in the stream: those
	// answered 202 and not dropped as bots or foreign hosts.
	Stored     uint64 `json:"ingest_stored"`
	PeakRSSKiB int64  `json:"peak_rss_kib"`
	CPUs       int    `json:"cpus"`
	GoMaxProcs int    `json:"gomaxprocs"`
}

// Run starts the servers, drives each in turn, writes the results to stdout and stops
// everything it started.
func Run(ctx context.Context, o Options, stdout io.Writer) (Report, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Conns <= 0 {
		o.Conns = 50
	}
	if o.Sites <= 0 {
		o.Sites = 200
	}
	if o.Duration <= 0 && o.N <= 0 {
		return Report{}, errors.New("bench: set a duration or n")
	}
	srv, err := startIngest(ctx, o.Sites, o.Log)
	if err != nil {
		return Report{}, err
	}
	defer srv.stop()
	bare, err := startBare(o.Log)
	if err != nil {
		return Report{}, err
	}
	defer bare.stop()

	rep := Report{CPUs: runtime.NumCPU(), GoMaxProcs: runtime.GOMAXPROCS(0)}
	lo := load.Options{Conns: o.Conns, N: o.N, Duration: o.Duration, Warmup: o.Warmup, Seed: o.Seed, Pool: o.Pool}

	lo.URL = bare.url
	if rep.Bare, err = load.Run(ctx, lo, srv.sites); err != nil {
		return rep, fmt.Errorf("bare run: %w", err)
	}
	rep.Bare.Target = "bare fiber + json.Unmarshal"
	printResult(stdout, rep.Bare)

	lo.URL = srv.url
	stopProfile, err := startProfile(o.CPUProfile)
	if err != nil {
		return rep, err
	}
	rep.Ingest, err = load.Run(ctx, lo, srv.sites)
	stopProfile()
	if err != nil {
		return rep, fmt.Errorf("ingest run: %w", err)
	}
	rep.Ingest.Target = "ingest (JetStream PubAck)"
	printResult(stdout, rep.Ingest)
	if rep.Stored, err = srv.stored(ctx); err != nil {
		return rep, err
	}
	fmt.Fprintf(stdout, "ingest stored %d events in the stream (warmup included)\n", rep.Stored)
	if err := srv.purge(ctx); err != nil {
		return rep, err
	}

	if o.SteadyRate > 0 {
		lo.Rate = o.SteadyRate
		r, err := load.Run(ctx, lo, srv.sites)
		if err != nil {
			return rep, fmt.Errorf("steady run: %w", err)
		}
		r.Target = fmt.Sprintf("ingest at %.0f/s", o.SteadyRate)
		printResult(stdout, r)
		rep.Steady = &r
		if err := srv.purge(ctx); err != nil {
			return rep, err
		}
		lo.URL = bare.url
		b, err := load.Run(ctx, lo, srv.sites)
		if err != nil {
			return rep, fmt.Errorf("bare steady run: %w", err)
		}
		b.Target = fmt.Sprintf("bare at %.0f/s", o.SteadyRate)
		printResult(stdout, b)
		rep.BareSteady = &b
	}
	rep.PeakRSSKiB = peakRSS()
	printTable(stdout, rep)
	return rep, nil
}

func printResult(w io.Writer, r load.Result) {
	b, _ := json.Marshal(r)
	fmt.Fprintf(w, "%s\n%s\n", b, r)
}

func printTable(w io.Writer, rep Report) {
	fmt.Fprintf(w, "\n%d CPUs (GOMAXPROCS %d), %d connections, %.0fs per target; generator, client and servers share this process.\n\n",
		rep.CPUs, rep.GoMaxProcs, rep.Ingest.Conns, rep.Ingest.Seconds)
	fmt.Fprintln(w, "| target | accepted/s | p50 | p99 | non-202 | vs bare |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	ceiling := rep.Bare.AcceptedPS
	row := func(r load.Result) {
		ratio := "-"
		if ceiling > 0 && r.Rate == 0 {
			ratio = fmt.Sprintf("%.2f", r.AcceptedPS/ceiling)
		}
		fmt.Fprintf(w, "| %s | %.0f | %.2f ms | %.2f ms | %d | %s |\n", r.Target, r.AcceptedPS, r.P50, r.P99, r.Sent-r.Accepted, ratio)
	}
	row(rep.Bare)
	row(rep.Ingest)
	if rep.Steady != nil {
		row(*rep.Steady)
	}
	if rep.BareSteady != nil {
		row(*rep.BareSteady)
	}
	fmt.Fprintf(w, "\npeak RSS %.1f MiB (VmHWM of the whole process: the embedded JetStream server, ingest, the bare endpoint, the generator's beacon pool and the client)\n",
		float64(rep.PeakRSSKiB)/1024)
}

func startProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// peakRSS is the process's VmHWM in KiB, 0 where /proc is missing.
func peakRSS() int64 { return peakRSSOf("/proc/self/status") }

// peakRSSOf reads VmHWM in KiB from a /proc/<pid>/status file; 0 if unreadable.
func peakRSSOf(statusPath string) int64 {
	f, err := os.Open(statusPath)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// ingestServer is ingest with its own embedded JetStream in a temporary directory.
type ingestServer struct {
	url    string
	sites  []traffic.Site
	dir    string
	emb    *natsutil.Embedded
	nc     *nats.Conn
	stream jetstream.Stream
	cancel context.CancelFunc
	done   chan error
	log    *slog.Logger
}

func startIngest(ctx context.Context, nSites int, log *slog.Logger) (s *ingestServer, err error) {
	dir, err := os.MkdirTemp("", "haru-bench-")
	if err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	s = &ingestServer{dir: dir, log: log}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	if s.emb, err = natsutil.StartEmbedded(natsutil.EmbeddedOptions{StoreDir: dir}); err != nil {
		return s, err
	}
	if s.nc, err = natsutil.Connect("", "haru-bench", log, s.emb.ConnectOption()); err != nil {
		return s, err
	}
	cfg := ingest.Config{
		NATS: natsutil.Config{Prefix: event.DefaultPrefix, Stream: natsutil.DefaultStreamSettings()},
		// The load generator sends each visitor's address in X-Forwarded-For from loopback.
		TrustedProxies: []string{"127.0.0.1/32"},
		ClientIPHeader: fiber.HeaderXForwardedFor,
		PublishTimeout: 5 * time.Second,
		RateLimit:      0,
	}
	cfg.NATS.Stream.MaxBytes = 4 << 30
	if err = cfg.Validate(false); err != nil {
		return s, fmt.Errorf("ingest config: %w", err)
	}
	names := cfg.NATS.Names()
	js, err := jetstream.New(s.nc)
	if err != nil {
		return s, fmt.Errorf("jetstream: %w", err)
	}
	// The registry is filled before ingest starts watching it, as the query service's
	// mirror would have done.
	kv, err := natsutil.EnsureSites(ctx, js, names, 1)
	if err != nil {
		return s, err
	}
	for i := range nSites {
		site := event.Site{ID: int64(i + 1), Token: fmt.Sprintf("bench%05d", i+1), Domain: fmt.Sprintf("site%d.example", i+1),
			Timezone: timezones[i%len(timezones)], Version: 1}
		b, err := event.EncodeSite(site)
		if err != nil {
			return s, err
		}
		if _, err := kv.Put(ctx, event.SiteKey(site.Token), b); err != nil {
			return s, fmt.Errorf("put site: %w", err)
		}
		s.sites = append(s.sites, traffic.Site{Token: site.Token, Domain: site.Domain})
	}
	health := telemetry.NewHealth()
	ing, err := ingest.New(ctx, cfg, ingest.Deps{Log: log, Metrics: prometheus.NewRegistry(), Health: health, Clock: clock.System{}, NATS: s.nc})
	if err != nil {
		return s, err
	}
	if s.stream, err = js.Stream(ctx, names.Stream); err != nil {
		return s, fmt.Errorf("open stream: %w", err)
	}
	app := fiber.New(ingest.AppConfig(log))
	ing.Register(app)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return s, fmt.Errorf("listen: %w", err)
	}
	s.url = "http://" + ln.Addr().String() + "/api/collect"
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.done = make(chan error, 2)
	go func() { s.done <- ing.Run(runCtx) }()
	go func() { s.done <- server.Serve(runCtx, app, ln, log, nil) }()

	deadline := time.Now().Add(15 * time.Second)
	for {
		if err = health.Ready(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("ingest not ready: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s, nil
}

var timezones = []string{"UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Europe/London", "America/Los_Angeles", "Australia/Sydney", "Asia/Kolkata"}

// stored is how many events the stream holds.
func (s *ingestServer) stored(ctx context.Context) (uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", err)
	}
	return info.State.Msgs, nil
}

// purge empties the stream, which has no consumer here, so runs do not fill the disk.
func (s *ingestServer) purge(ctx context.Context) error {
	if err := s.stream.Purge(ctx); err != nil {
		return fmt.Errorf("purge stream: %w", err)
	}
	return nil
}

// stop shuts down in the services' order: HTTP, then the NATS connection, then the
// server; the store directory goes last.
func (s *ingestServer) stop() {
	if s.cancel != nil {
		s.cancel()
		for range 2 {
			if err := <-s.done; err != nil {
				s.log.Warn("bench ingest stopped", "err", err)
			}
		}
	}
	if s.stream != nil {
		_ = s.purge(context.Background())
	}
	if s.nc != nil {
		natsutil.Drain(s.nc, s.log)
	}
	if s.emb != nil {
		s.emb.Shutdown()
	}
	if err := os.RemoveAll(s.dir); err != nil {
		s.log.Warn("remove bench store", "err", err)
	}
}

// bareServer is the ceiling: Fiber with the same app config, reading the same JSON.
type bareServer struct {
	url  string
	app  *fiber.App
	done chan error
}

// barePayload mirrors the collect fields.
type barePayload struct {
	Path     string            `json:"p"`
	Referrer string            `json:"r"`
	ScreenW  int               `json:"sw"`
	ScreenH  int               `json:"sh"`
	Name     string            `json:"n"`
	Duration int64             `json:"d"`
	URL      string            `json:"u"`
	Hash     bool              `json:"h"`
	Props    map[string]string `json:"props"`
}

func startBare(log *slog.Logger) (*bareServer, error) {
	app := fiber.New(ingest.AppConfig(log))
	app.Post("/api/collect", func(c *fiber.Ctx) error {
		var p barePayload
		if err := json.Unmarshal(c.Body(), &p); err != nil {
			return c.Status(fiber.StatusBadRequest).JSON(fiber.Map{"error": "invalid JSON"})
		}
		return c.SendStatus(fiber.StatusAccepted)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	b := &bareServer{url: "http://" + ln.Addr().String() + "/api/collect", app: app, done: make(chan error, 1)}
	go func() { b.done <- app.Listener(ln) }()
	return b, nil
}

func (b *bareServer) stop() {
	_ = b.app.ShutdownWithTimeout(5 * time.Second)
	<-b.done
}
