// Package suite runs Haru's benchmark suite and writes one table: ingest beside a bare
// endpoint, the writer beside its baselines, the whole pipeline's highest steady rate,
// freshness from beacon to dashboard frame, the dashboard queries (their benchmark is
// called through a hook), SSE fan-out and its memory, and each service's peak RSS.
// Every service runs as a real process against a fresh database; only loopback is used.
package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/haru-analytics/haru/pkg/proctest"
	"github.com/haru-analytics/haru/services/loadgen/internal/bench"
	"github.com/haru-analytics/haru/services/loadgen/internal/rig"
)

// Mode is how long the suite runs.
type Mode string

const (
	// Quick finishes in a few minutes, for everyday use.
	Quick Mode = "quick"
	// Full holds every step longer and connects every viewer, for the README.
	Full Mode = "full"
)

// Sections are the parts Options.Only can pick.
var Sections = []string{"ingest", "writer", "drain", "pipeline", "dashboard", "fanout"}

// Options configure the suite.
type Options struct {
	Mode Mode
	// Only, when set, runs just these sections: ingest, writer, pipeline (with
	// freshness), dashboard, fanout (with rss).
	Only []string
	// DatabaseURL names the Postgres server the fresh databases are made on.
	DatabaseURL string
	// Bin is the haru binary; empty builds it.
	Bin string
	// Out is where the markdown table goes; empty writes none.
	Out string
	// DashboardBench is the dashboard benchmark hook: "<package> <bench regexp>", run
	// with go test -bench; empty runs DefaultDashboardBench.
	DashboardBench string
	// Viewers overrides the mode's SSE viewer count (0 keeps it).
	Viewers int
	Seed    uint64
	Log     *slog.Logger
}

// plan is what a mode runs.
type plan struct {
	ingestDur      time.Duration
	writerTimes    string
	drainEvents    int64
	rampStart      float64
	rampStep       float64
	rampTop        float64
	refine         int
	hold           time.Duration
	freshRate      float64
	freshDur       time.Duration
	viewers        int
	rounds         int
	rssDur         time.Duration
	dashBenchtime  string
	dashEvents     []int
	dashRawRuns    int
	sites          int
	probeSites     int
	freshProbeRate float64
}

func planFor(m Mode) plan {
	if m == Full {
		return plan{ingestDur: 20 * time.Second, writerTimes: "30x", drainEvents: 500_000, rampStart: 2500, rampStep: 2500, rampTop: 60000, refine: 3,
			hold: 20 * time.Second, freshRate: 10000, freshDur: 30 * time.Second, viewers: 10000, rounds: 10,
			rssDur: 30 * time.Second, dashBenchtime: "20x", dashEvents: []int{1_000_000, 10_000_000}, dashRawRuns: 3, sites: 200, probeSites: 20, freshProbeRate: 20}
	}
	return plan{ingestDur: 5 * time.Second, writerTimes: "10x", drainEvents: 200_000, rampStart: 2500, rampStep: 2500, rampTop: 60000, refine: 2,
		hold: 15 * time.Second, freshRate: 10000, freshDur: 10 * time.Second, viewers: 10000, rounds: 3,
		rssDur: 10 * time.Second, dashBenchtime: "5x", dashEvents: []int{200_000}, dashRawRuns: 1, sites: 100, probeSites: 10, freshProbeRate: 20}
}

// Run runs the suite, printing progress and then the table to stdout.
func Run(ctx context.Context, o Options, stdout io.Writer) (*Table, error) {
	if o.Mode == "" {
		o.Mode = Quick
	}
	if o.Mode != Quick && o.Mode != Full {
		return nil, fmt.Errorf("mode %q: want quick or full", o.Mode)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	for _, s := range o.Only {
		if !slices.Contains(Sections, s) {
			return nil, fmt.Errorf("section %q: want one of %s", s, strings.Join(Sections, ", "))
		}
	}
	p := planFor(o.Mode)
	if o.Viewers > 0 {
		p.viewers = o.Viewers
	}
	run := func(section string) bool {
		if len(o.Only) == 0 {
			return true
		}
		for _, s := range o.Only {
			if s == section {
				return true
			}
		}
		return false
	}
	nofile, err := rig.RaiseFileLimit()
	if err != nil {
		return nil, err
	}
	// Each viewer is an open file here and in the query process (which inherits the limit).
	if limit := int(nofile) - 1000; p.viewers > limit {
		fmt.Fprintf(stdout, "fan-out: %d viewers capped to %d by the open files limit (%d)\n", p.viewers, limit, nofile)
		p.viewers = limit
	}
	if o.Bin == "" && (run("writer") || run("drain") || run("pipeline") || run("fanout")) {
		dir, err := os.MkdirTemp("", "haru-bench-bin-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		o.Bin = filepath.Join(dir, "haru")
		fmt.Fprintln(stdout, "building haru")
		if err := rig.Build(ctx, o.Bin); err != nil {
			return nil, err
		}
	}
	// The services apart run over a private nats-server: the version this module embeds,
	// as haru -target=all runs it, unless HARU_NATS_SERVER names another.
	if os.Getenv("HARU_NATS_SERVER") == "" && (run("ingest") || run("drain") || run("fanout")) {
		dir, err := os.MkdirTemp("", "haru-bench-nats-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		bin := filepath.Join(dir, "nats-server")
		fmt.Fprintln(stdout, "building nats-server")
		if err := rig.BuildNATS(ctx, bin); err != nil {
			return nil, err
		}
		os.Setenv("HARU_NATS_SERVER", bin)
		defer os.Unsetenv("HARU_NATS_SERVER")
	}
	natsVersion := "none"
	if bin, err := proctest.NATSServer(); err == nil {
		natsVersion = "of unknown version"
		if out, err := exec.CommandContext(ctx, bin, "--version").Output(); err == nil {
			natsVersion = strings.TrimSpace(strings.TrimPrefix(string(out), "nats-server: "))
		}
	}
	host, _ := os.Hostname()
	t := &Table{
		Title: "Haru benchmarks",
		Setup: []string{
			fmt.Sprintf("mode %s, %s, %d CPUs, %s/%s, %s; open files limit %d", o.Mode, time.Now().UTC().Format("2006-01-02 15:04 UTC"),
				runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, host, nofile),
			"the load generator runs on the same machine as the services; every target is 127.0.0.1",
			fmt.Sprintf("nats-server %s for the services apart; haru -target=all and the in-process ingest row embed %s", natsVersion, embeddedNATS()),
		},
	}
	if run("ingest") {
		fmt.Fprintln(stdout, "== 1 ingest")
		t.Add(ingestRows(ctx, o, p, stdout)...)
	}
	if run("writer") && ctx.Err() == nil {
		fmt.Fprintln(stdout, "== 2 writer")
		t.Add(writerRows(ctx, p, stdout)...)
	}
	if (run("writer") || run("drain")) && ctx.Err() == nil {
		fmt.Fprintln(stdout, "== 2 writer draining a backlog")
		t.Add(drainRows(ctx, o, p, stdout)...)
	}
	// The rate the box sustains, capped at the freshness goal's; the fan-out's load uses it.
	sustained := p.freshRate
	if run("pipeline") && ctx.Err() == nil {
		fmt.Fprintln(stdout, "== 3 pipeline, 4 freshness")
		rows, rate := pipelineRows(ctx, o, p, stdout)
		t.Add(rows...)
		if rate > 0 {
			sustained = rate
		}
		t.Notes = append(t.Notes,
			"pipeline: the backlog is events ingest stored in JetStream minus events the writer wrote or skipped, sampled every 250 ms; a step is flat when the generator sent >= 95% of the rate, >= 99% were accepted, and over the last two thirds of the hold the backlog's peaks (per 2 s) grew by <= 5% of the rate per second and ended under 2 s of traffic + "+thousands(batchSlack)+" events (two of the writer's batches); after the first step that is not flat the rate is bisected",
			"freshness: probe sites get pageviews one at a time; each is timed from its 202 to the first SSE frame whose pageview count includes it; the other sites get realistic traffic for the rest of the rate")
	}
	if run("dashboard") && ctx.Err() == nil {
		fmt.Fprintln(stdout, "== 5 dashboard")
		t.Add(dashboardRows(ctx, o, p, stdout)...)
	}
	if run("fanout") && ctx.Err() == nil {
		fmt.Fprintln(stdout, "== 6 fan-out, 7 RSS")
		t.Add(fanoutRows(ctx, o, p, sustained, stdout)...)
		t.Notes = append(t.Notes,
			"fan-out: memory per viewer is the query process's VmRSS growth from one viewer to all, divided by the added viewers; updates are one pageview per site per round, timed from its 202 to each viewer's frame",
			"RSS: VmHWM of each process of the three-process run (ingest, writer, query over a private nats-server) after the fan-out and a realistic load with the viewers still open; all-in-one is haru -target=all after the pipeline ramp and freshness runs")
	}
	if ctx.Err() != nil {
		t.Setup = append(t.Setup, "INTERRUPTED: the rows after the interruption are incomplete")
	}
	// Sections ran in the order their rigs allow; the table reads in their numbers' order.
	sort.SliceStable(t.Rows, func(i, j int) bool { return t.Rows[i].Section < t.Rows[j].Section })
	fmt.Fprintln(stdout)
	if err := t.Text(stdout); err != nil {
		return t, err
	}
	if o.Out != "" {
		if err := writeMarkdown(o.Out, t); err != nil {
			return t, err
		}
		fmt.Fprintf(stdout, "\nwrote %s\n", o.Out)
	}
	return t, ctx.Err()
}

func writeMarkdown(path string, t *Table) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("results directory: %w", err)
	}
	var b strings.Builder
	if err := t.Markdown(&b); err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// failed is a row for a section that could not run.
func failed(section string, err error) Row {
	return Row{Section: section, Measure: "run failed", Result: firstLine(err.Error(), 200), Verdict: Failed}
}

// firstLine is s up to its first line break, at most n bytes.
func firstLine(s string, n int) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}

func ingestRows(ctx context.Context, o Options, p plan, log io.Writer) []Row {
	const section = "1 ingest"
	rep, err := bench.Run(ctx, bench.Options{
		Duration: p.ingestDur, Warmup: time.Second, Conns: 50, SteadyRate: 5000,
		Sites: 200, Seed: o.Seed, Pool: 100000, Log: o.Log,
	}, log)
	if err != nil {
		return []Row{failed(section, err)}
	}
	rows := []Row{
		{Section: section, Measure: "accepted beacons/s, 50 connections (bare Fiber + JSON parse as baseline)",
			Result: perSec(rep.Ingest.AcceptedPS), Baseline: perSec(rep.Bare.AcceptedPS), Ratio: ratio(rep.Ingest.AcceptedPS, rep.Bare.AcceptedPS),
			Goal: ">= 40,000/s and >= 0.5x", Verdict: both(atLeast(rep.Ingest.AcceptedPS, 40000), atLeast(rep.Ingest.AcceptedPS, 0.5*rep.Bare.AcceptedPS))},
		{Section: section, Measure: "latency p50 / p99 at full speed",
			Result: ms(rep.Ingest.P50) + " / " + ms(rep.Ingest.P99), Baseline: ms(rep.Bare.P50) + " / " + ms(rep.Bare.P99),
			Goal: "p99 <= 15 ms", Verdict: atMost(rep.Ingest.P99, 15)},
	}
	if rep.Steady != nil {
		r := Row{Section: section, Measure: fmt.Sprintf("latency p50 / p99 at a steady %s (one heap with the embedded JetStream and the generator)", perSec(rep.Steady.Rate)),
			Result: ms(rep.Steady.P50) + " / " + ms(rep.Steady.P99), Goal: "p99 <= 5 ms", Verdict: atMost(rep.Steady.P99, 5)}
		if rep.BareSteady != nil {
			r.Baseline = ms(rep.BareSteady.P50) + " / " + ms(rep.BareSteady.P99)
		}
		rows = append(rows, r)
	}
	rows = append(rows, Row{Section: section, Measure: "peak RSS of the in-process run (JetStream, ingest, bare endpoint, generator)", Result: mib(rep.PeakRSSKiB)})
	return append(rows, ingestProcessRows(ctx, p, log)...)
}

// ingestProcessRows runs BenchmarkIngestProcess: ingest as its own process against its
// own nats-server, with the CPU time per beacon, which holds still on a shared machine
// where the rate does not.
func ingestProcessRows(ctx context.Context, p plan, log io.Writer) []Row {
	const section = "1 ingest"
	bs, err := RunGoBench(ctx, log, GoBench{Pkg: "./services/loadgen/internal/bench/", Pattern: "BenchmarkIngestProcess$", Benchtime: "1x",
		Args: []string{"-ingest-duration", p.ingestDur.String()}})
	if errors.Is(err, ErrNoBenchmarks) {
		return nil
	}
	if err != nil {
		return []Row{failed(section, err)}
	}
	b, ok := Find(bs, "BenchmarkIngestProcess")
	if !ok {
		return []Row{failed(section, fmt.Errorf("BenchmarkIngestProcess: no result"))}
	}
	return IngestProcessRows(b)
}

// IngestProcessRows turns BenchmarkIngestProcess's metrics into rows.
func IngestProcessRows(b Bench) []Row {
	const section = "1 ingest"
	m := b.Metrics
	var rows []Row
	if rate, ok := m["accepted/s"]; ok {
		rows = append(rows, Row{Section: section, Measure: "ingest as its own process against its own nats-server: accepted beacons/s, p99 at full speed",
			Result: fmt.Sprintf("%s, %s", perSec(rate), ms(m["p99-ms"])), Goal: ">= 40,000/s, p99 <= 15 ms",
			Verdict: both(atLeast(rate, 40000), atMost(m["p99-ms"], 15))})
	}
	if p99, ok := m["steady-p99-ms"]; ok {
		rows = append(rows, Row{Section: section, Measure: fmt.Sprintf("ingest as its own process: latency p99 at a steady %s", perSec(m["steady-rate/s"])),
			Result: ms(p99), Goal: "p99 <= 5 ms", Verdict: atMost(p99, 5)})
	}
	ing, ok1 := m["ingest-cpu-µs/beacon"]
	nats, ok2 := m["nats-cpu-µs/beacon"]
	if ok1 && ok2 && ing+nats > 0 {
		rows = append(rows, Row{Section: section, Measure: "CPU per beacon: ingest + nats-server (steadier than the rate on a shared machine); the rate both would reach on 2 whole cores",
			Result: fmt.Sprintf("%.1f + %.1f µs: %s", ing, nats, perSec(2e6/(ing+nats)))})
	}
	if rss, ok := m["ingest-peak-RSS-MiB"]; ok {
		rows = append(rows, Row{Section: "7 RSS", Measure: "peak RSS, ingest alone (its own command) at full speed", Result: fmt.Sprintf("%.1f MiB", rss),
			Goal: "<= 64 MiB", Verdict: atMost(rss, 64)})
	}
	return rows
}

// both is Met when every verdict is.
func both(vs ...Verdict) Verdict {
	for _, v := range vs {
		if v != Met {
			return Missed
		}
	}
	return Met
}

const writerPkg = "./services/writer/internal/store/"

func writerRows(ctx context.Context, p plan, log io.Writer) []Row {
	bs, err := RunGoBench(ctx, log, GoBench{Pkg: writerPkg, Pattern: "BenchmarkWrite$", Benchtime: p.writerTimes})
	if err != nil {
		return []Row{failed(writerSection, err)}
	}
	return WriterRows(bs)
}

const writerSection = "2 writer"

// WriterRows turns BenchmarkWrite's results into rows: for each traffic shape (a
// sub-benchmark reporting full_events/s, events_only_events/s and raw_copy_events/s), the
// full write beside the idempotent events-only insert, and beside raw COPY.
func WriterRows(bs []Bench) []Row {
	var rows []Row
	for _, b := range bs {
		full, ok1 := b.Metrics["full_events/s"]
		only, ok2 := b.Metrics["events_only_events/s"]
		if !ok1 || !ok2 {
			continue
		}
		shape := strings.TrimPrefix(strings.TrimPrefix(b.Name, "BenchmarkWrite"), "/")
		rows = append(rows, Row{Section: writerSection,
			Measure: fmt.Sprintf("events/s, %s traffic, %s-event batches with rollups and idempotency (idempotent events-only insert as baseline)", shape, thousands(b.Metrics["batch_events"])),
			Result:  perSec(full), Baseline: perSec(only), Ratio: ratio(full, only),
			Goal: ">= 50,000/s and >= 0.5x", Verdict: both(atLeast(full, 50000), atLeast(full, 0.5*only))})
		if raw, ok := b.Metrics["raw_copy_events/s"]; ok {
			rows = append(rows, Row{Section: writerSection, Measure: fmt.Sprintf("the same, %s traffic, against raw COPY into events", shape),
				Result: perSec(full), Baseline: perSec(raw), Ratio: ratio(full, raw)})
		}
	}
	if len(rows) == 0 {
		return []Row{failed(writerSection, errors.New("BenchmarkWrite reported no full_events/s and events_only_events/s"))}
	}
	return rows
}

// DefaultDashboardBench is the dashboard benchmark the suite runs: whole dashboards of a
// seeded site, unfiltered from the rollups, from raw events (the baseline) and with one
// filter, for 24h, 30d and 12mo, each reporting p50_ms and p95_ms. HARU_BENCH_EVENTS sets
// the seeded events.
const DefaultDashboardBench = "./services/query/internal/stats/ BenchmarkDashboard$"

// dashboardRows runs the dashboard benchmark hook once per seeded size.
func dashboardRows(ctx context.Context, o Options, p plan, log io.Writer) []Row {
	const section = "5 dashboard"
	hook := o.DashboardBench
	if hook == "" {
		hook = DefaultDashboardBench
	}
	pkg, pattern, ok := strings.Cut(strings.TrimSpace(hook), " ")
	if !ok {
		return []Row{failed(section, fmt.Errorf("-dashboard-bench %q: want \"<package> <bench regexp>\"", hook))}
	}
	var rows []Row
	for _, events := range p.dashEvents {
		fmt.Fprintf(log, "dashboard benchmark at %s events: go test -bench %s %s\n", thousands(float64(events)), pattern, pkg)
		// The raw-events baseline is slow (tens of seconds a 12-month view at 1 M events):
		// a few runs of it are enough, one beyond 1 M.
		rawRuns := p.dashRawRuns
		if events > 1_000_000 {
			rawRuns = 1
		}
		bs, err := RunGoBench(ctx, log, GoBench{Pkg: pkg, Pattern: strings.TrimSpace(pattern), Benchtime: p.dashBenchtime,
			Env: []string{fmt.Sprintf("HARU_BENCH_EVENTS=%d", events), fmt.Sprintf("HARU_BENCH_RAW_RUNS=%d", rawRuns)}})
		if errors.Is(err, ErrNoBenchmarks) {
			return []Row{{Section: section, Measure: "full-dashboard query p50/p95", Result: fmt.Sprintf("no %s in %s on this tree yet", pattern, pkg), Verdict: Pending}}
		}
		if err != nil {
			rows = append(rows, failed(section, err))
			continue
		}
		rows = append(rows, DashboardRows(section, events, bs)...)
	}
	return rows
}

// dashboardGoals are the p95 goals at 10 M events, by period and case, in ms.
var dashboardGoals = map[string]float64{"30d/rollups": 50, "12mo/rollups": 150, "30d/filter": 500}

// DashboardRows turns BenchmarkDashboard's results into rows: per period, the rollups
// beside the raw-events baseline, and the filtered view; goals apply from 10 M events.
// Results it does not recognise are listed with every metric.
func DashboardRows(section string, events int, bs []Bench) []Row {
	quant := func(b Bench) (string, float64, bool) {
		p50, ok1 := b.Metrics["p50_ms"]
		p95, ok2 := b.Metrics["p95_ms"]
		return ms(p50) + " / " + ms(p95), p95, ok1 && ok2
	}
	size := thousands(float64(events)) + " events"
	var rows []Row
	used := map[string]bool{}
	for _, period := range []string{"24h", "30d", "12mo"} {
		for _, c := range []string{"rollups", "filter"} {
			name := "BenchmarkDashboard/" + period + "/" + c
			b, ok := Find(bs, name)
			if !ok {
				continue
			}
			res, p95, ok := quant(b)
			if !ok {
				continue
			}
			used[name] = true
			row := Row{Section: section, Result: res}
			if c == "rollups" {
				row.Measure = fmt.Sprintf("dashboard %s, %s: p50 / p95 (raw events as baseline)", period, size)
				if raw, ok := Find(bs, "BenchmarkDashboard/"+period+"/raw"); ok {
					if base, rawP95, ok := quant(raw); ok {
						used[raw.Name] = true
						row.Baseline, row.Ratio = base, ratio(p95, rawP95)
					}
				}
			} else {
				row.Measure = fmt.Sprintf("dashboard %s with one filter, %s: p50 / p95 (first view; the former single statement as baseline)", period, size)
				if first, ok := b.Metrics["first_ms"]; ok {
					row.Result += " (first " + ms(first) + ")"
				}
				if one, ok := Find(bs, "BenchmarkDashboard/"+period+"/filter-one-statement"); ok {
					if base, oneP95, ok := quant(one); ok {
						used[one.Name] = true
						row.Baseline, row.Ratio = base, ratio(p95, oneP95)
					}
				}
			}
			if g, ok := dashboardGoals[period+"/"+c]; ok {
				row.Goal = fmt.Sprintf("p95 <= %.0f ms at 10 M", g)
				if events >= 10_000_000 {
					row.Verdict = atMost(p95, g)
				}
			}
			rows = append(rows, row)
		}
	}
	for _, b := range bs {
		if used[b.Name] {
			continue
		}
		var parts []string
		for _, unit := range sortedUnits(b.Metrics) {
			parts = append(parts, fmt.Sprintf("%s %s", trimFloat(b.Metrics[unit]), unit))
		}
		rows = append(rows, Row{Section: section, Measure: strings.TrimPrefix(b.Name, "Benchmark") + ", " + size, Result: strings.Join(parts, ", ")})
	}
	return rows
}

// embeddedNATS is the version of the nats-server module this binary embeds.
func embeddedNATS() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "github.com/nats-io/nats-server/v2" {
				return d.Version
			}
		}
	}
	return "unknown"
}
