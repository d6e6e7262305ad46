// Command loadgen is Haru's load harness. It sends realistic beacons to a collect endpoint
// on this machine and reports counts per status, throughput and latency quantiles:
//
//	go run ./services/loadgen -url http://127.0.0.1:4000/api/collect -tokens TOKEN -duration 30s
//
// or, with -bench ingest, starts the real ingest service with an embedded JetStream server
// and a bare Fiber endpoint in this process and compares the two:
//
//	go run ./services/loadgen -bench ingest -duration 10s
//
// or, with -bench suite, runs the whole benchmark suite against haru processes it
// starts on fresh databases and prints one table (and writes it as markdown):
//
//	go run ./services/loadgen -bench suite -mode quick -out bench/results.md
//
// A target started on its own must trust the generator as a proxy
// (HARU_TRUSTED_PROXIES=127.0.0.1/32) to see the visitors' addresses, and should have its
// rate limit off (HARU_RATE_LIMIT=0). Only loopback targets are accepted.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/haru-analytics/haru/pkg/pgutil"
	"github.com/haru-analytics/haru/pkg/server"
	"github.com/haru-analytics/haru/pkg/telemetry"
	"github.com/haru-analytics/haru/services/loadgen/internal/bench"
	"github.com/haru-analytics/haru/services/loadgen/internal/load"
	"github.com/haru-analytics/haru/services/loadgen/internal/suite"
	"github.com/haru-analytics/haru/services/loadgen/internal/traffic"
)

func main() { server.Main(run) }

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var (
		url        = fs.String("url", "http://127.0.0.1:4000/api/collect", "collect endpoint; must resolve to a loopback address")
		tokens     = fs.String("tokens", "", "comma-separated site tokens, each optionally token=domain (pages are generated on domain)")
		sitesFrom  = fs.String("sites-from", "", "file with one site per line: token [domain]; # starts a comment")
		conns      = fs.Int("conns", 50, "keep-alive connections, each with one request in flight")
		rate       = fs.Float64("rate", 0, "beacons per second over all connections; 0 is as fast as possible")
		n          = fs.Int64("n", 0, "at most this many measured beacons (0: no bound)")
		duration   = fs.Duration("duration", 10*time.Second, "measured time (0: no bound, then -n must be set)")
		warmup     = fs.Duration("warmup", time.Second, "time sent before measuring, not counted")
		seed       = fs.Uint64("seed", 1, "traffic seed; the same seed sends the same beacons")
		pool       = fs.Int("pool", 100000, "beacons generated before the run and sent round-robin")
		benchMode  = fs.String("bench", "", "self-contained benchmark: \"ingest\" runs ingest and a bare endpoint in-process; \"suite\" runs every benchmark")
		benchSites = fs.Int("sites", 200, "with -bench: sites in the registry")
		steady     = fs.Float64("steady-rate", 5000, "with -bench: also run ingest at this fixed rate and report its p99; 0 skips")
		cpuprofile = fs.String("cpuprofile", "", "with -bench: write a CPU profile of the full-speed ingest run to this file")
		mode       = fs.String("mode", "quick", "with -bench suite: quick (a few minutes) or full")
		out        = fs.String("out", "", "with -bench suite: write the table as markdown to this file")
		only       = fs.String("only", "", "with -bench suite: comma-separated sections to run ("+strings.Join(suite.Sections, ", ")+"; writer includes drain); empty runs all")
		dashBench  = fs.String("dashboard-bench", "", "with -bench suite: the dashboard benchmark, \"<package> <bench regexp>\" run with go test -bench (default "+suite.DefaultDashboardBench+")")
		haruBin    = fs.String("haru-bin", "", "with -bench suite: the haru binary (default: built from this module)")
		viewers    = fs.Int("viewers", 0, "with -bench suite: SSE viewers (default 10000)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *n == 0 && *duration == 0 {
		return errors.New("set -n or -duration to bound the run")
	}

	switch *benchMode {
	case "":
	case "ingest":
		log, err := telemetry.NewLogger(os.Stderr, "warn")
		if err != nil {
			return err
		}
		_, err = bench.Run(ctx, bench.Options{
			Duration: *duration, Warmup: *warmup, N: *n, Conns: *conns, SteadyRate: *steady,
			Sites: *benchSites, Seed: *seed, Pool: *pool, CPUProfile: *cpuprofile, Log: log,
		}, stdout)
		return err
	case "suite":
		log, err := telemetry.NewLogger(os.Stderr, "warn")
		if err != nil {
			return err
		}
		var sections []string
		for _, s := range strings.Split(*only, ",") {
			if s = strings.TrimSpace(s); s != "" {
				sections = append(sections, s)
			}
		}
		dbURL := getenv("HARU_DATABASE_URL")
		if dbURL == "" {
			dbURL = pgutil.DefaultURL
		}
		_, err = suite.Run(ctx, suite.Options{
			Mode: suite.Mode(*mode), Only: sections, DatabaseURL: dbURL, Bin: *haruBin, Out: *out,
			DashboardBench: *dashBench, Viewers: *viewers, Seed: *seed, Log: log,
		}, stdout)
		return err
	default:
		return fmt.Errorf("unknown -bench %q: want ingest or suite", *benchMode)
	}

	sites, err := readSites(*tokens, *sitesFrom)
	if err != nil {
		return err
	}
	res, err := load.Run(ctx, load.Options{
		URL: *url, Conns: *conns, Rate: *rate, N: *n, Duration: *duration, Warmup: *warmup, Seed: *seed, Pool: *pool,
	}, sites)
	if err != nil {
		return err
	}
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	fmt.Fprintf(stdout, "%s\n%s\n", b, res)
	return nil
}

// readSites takes the sites from -tokens and -sites-from.
func readSites(tokens, file string) ([]traffic.Site, error) {
	var sites []traffic.Site
	for _, t := range strings.Split(tokens, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tok, domain, _ := strings.Cut(t, "=")
			sites = append(sites, traffic.Site{Token: tok, Domain: domain})
		}
	}
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("open sites: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line, _, _ := strings.Cut(sc.Text(), "#")
			fields := strings.Fields(line)
			if len(fields) == 0 {
				continue
			}
			s := traffic.Site{Token: fields[0]}
			if len(fields) > 1 {
				s.Domain = fields[1]
			}
			sites = append(sites, s)
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read sites: %w", err)
		}
	}
	if len(sites) == 0 {
		return nil, errors.New("no sites: give -tokens or -sites-from (or use -bench ingest)")
	}
	return sites, nil
}
