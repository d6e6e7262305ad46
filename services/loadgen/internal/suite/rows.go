package suite

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/haru-analytics/haru/services/loadgen/internal/load"
	"github.com/haru-analytics/haru/services/loadgen/internal/rig"
	"github.com/haru-analytics/haru/services/loadgen/internal/traffic"
)

// split divides the rig's sites: the last n are probe sites (watched, sent pageviews
// one at a time), the rest get realistic traffic.
func split(sites []rig.Site, n int) (others, probes []rig.Site) {
	n = min(n, len(sites)-1)
	return sites[:len(sites)-n], sites[len(sites)-n:]
}

func trafficOf(sites []rig.Site) []traffic.Site {
	out := make([]traffic.Site, len(sites))
	for i, s := range sites {
		out[i] = s.Site
	}
	return out
}

// freshnessGoalRate is the rate the freshness goal is stated at.
const freshnessGoalRate = 10000

// pipelineRows runs haru -target=all on a fresh database: the ramp (row 3), then
// freshness at the lower of the goal's rate and the last flat rate (row 4), and reports
// the process's peak RSS. It returns the rate freshness ran at too: the box's
// sustained rate, capped at the goal's.
func pipelineRows(ctx context.Context, o Options, p plan, log io.Writer) ([]Row, float64) {
	const section3, section4 = "3 pipeline", "4 freshness"
	r, err := rig.New(ctx, rig.Options{Bin: o.Bin, DatabaseURL: o.DatabaseURL, Sites: p.sites, Log: o.Log})
	if err != nil {
		return []Row{failed(section3, err)}, 0
	}
	defer r.Close()
	all, err := r.Start(ctx, "all")
	if err != nil {
		return []Row{failed(section3, err)}, 0
	}
	others, probes := split(r.Sites, p.probeSites)

	var rows []Row
	steps, err := runPipeline(ctx, all, trafficOf(others), pipelineOptions{
		Rates: Rates(p.rampStart, p.rampStep, p.rampTop), Refine: p.refine, Hold: p.hold, Seed: o.Seed, Pool: 50000,
	}, log)
	flat := LastFlat(steps)
	if err != nil {
		rows = append(rows, failed(section3, err))
	} else {
		res := "none flat"
		if low := lowestNotFlat(steps); flat == 0 && !math.IsInf(low, 1) {
			res = "below " + perSec(low)
		}
		if flat > 0 {
			res = perSec(flat)
		}
		measure := fmt.Sprintf("highest steady rate with a flat backlog (haru -target=all; steps of %s held %s)", perSec(p.rampStep), p.hold)
		for _, s := range steps {
			if !s.Flat && s.Rate == lowestNotFlat(steps) {
				measure += fmt.Sprintf("; at %s: %s", perSec(s.Rate), s.Reason)
			}
		}
		rows = append(rows, Row{Section: section3, Measure: measure, Result: res, Goal: ">= 20,000/s", Verdict: atLeast(flat, 20000)})
	}

	rate := min(p.freshRate, flat)
	if low := lowestNotFlat(steps); flat == 0 && !math.IsInf(low, 1) {
		// Nothing held: below the lowest rate tried.
		rate = low / 2
	} else if flat == 0 {
		rate = p.freshRate // the ramp did not run
	}
	before, _ := all.Metrics(ctx)
	if err := waitDrained(ctx, all, 60*time.Second); err != nil {
		rows = append(rows, failed(section4, err))
	} else if fr, err := runFreshness(ctx, all, r.Key, probes, others, freshnessOptions{
		Rate: rate, Duration: p.freshDur, Conns: connsFor(rate), Seed: o.Seed + 1, Pool: 50000, ProbeRate: p.freshProbeRate,
	}, log); err != nil {
		rows = append(rows, failed(section4, err))
	} else {
		after, _ := all.Metrics(ctx)
		batches, commit := commitsBetween(before, after)
		// Met only at the goal's rate: a p99 under 1 s at a lower rate is not the claim.
		v := atMost(fr.P99.Seconds(), 1)
		if fr.Unmatched > 0 || fr.Matched == 0 || rate < freshnessGoalRate {
			v = Missed
		}
		rows = append(rows, Row{Section: section4,
			Measure: fmt.Sprintf("beacon 202 -> SSE frame showing it, p50 / p99 (max), at %s (%d pageviews on %d watched sites, %d never shown; the writer committed %d batches, %s each on average)",
				perSec(rate), fr.Matched, len(probes), fr.Unmatched, batches, msDur(commit)),
			Result: fmt.Sprintf("%s / %s (%s)", msDur(fr.P50), msDur(fr.P99), msDur(fr.Max)), Goal: "p99 <= 1 s at 10,000/s", Verdict: v})
	}
	if mem, err := all.Memory(); err == nil {
		rows = append(rows, Row{Section: "7 RSS", Measure: "peak RSS, haru -target=all (embedded NATS, ingest, writer, query) after rows 3 and 4", Result: mib(mem.Peak)})
	}
	return rows, rate
}

// fanoutRows runs the three services apart over a private nats-server: SSE fan-out
// (row 6), then a realistic load with the viewers still open, then every process's peak
// RSS (row 7).
func fanoutRows(ctx context.Context, o Options, p plan, rate float64, log io.Writer) []Row {
	const section6, section7 = "6 SSE fan-out", "7 RSS"
	r, err := rig.New(ctx, rig.Options{Bin: o.Bin, DatabaseURL: o.DatabaseURL, Sites: p.sites, Log: o.Log})
	if err != nil {
		return []Row{failed(section6, err)}
	}
	defer r.Close()
	procs := map[string]*rig.Proc{}
	if procs["nats-server"], err = r.StartNATS(); err != nil {
		return []Row{failed(section6, err)}
	}
	// The writer first: it creates the stream ingest publishes to.
	for _, target := range []string{"writer", "query", "ingest"} {
		if procs[target], err = r.Start(ctx, target); err != nil {
			return []Row{failed(section6, err)}
		}
	}
	_, watched := split(r.Sites, p.probeSites)
	var rows []Row
	phase := fmt.Sprintf("after fan-out and %s of load at %s", p.rssDur, perSec(rate))
	// Every viewer holds a loopback port of this process, beside the load's connections:
	// stay well inside the ephemeral range.
	if ports, err := rig.EphemeralPorts(); err == nil && p.viewers > ports-2000 {
		fmt.Fprintf(log, "fan-out: %d viewers capped to %d by the ephemeral port range (%d ports)\n", p.viewers, ports-2000, ports)
		p.viewers = ports - 2000
	}
	fo, closeViewers, err := runFanout(ctx, procs["query"], procs["ingest"], r.Key, watched, fanoutOptions{
		Viewers: p.viewers, Rounds: p.rounds, DialConcurrency: 32,
	}, log)
	if err != nil {
		rows = append(rows, failed(section6, err))
		phase = "the fan-out failed: no load"
	} else {
		v := both(atLeast(float64(fo.Viewers), 10000), atMost(fo.P99.Seconds(), 1))
		if fo.Missed > 0 {
			v = Missed
		}
		measure := fmt.Sprintf("SSE viewers on one query process (%d sites), updates p50 / p99 (max) from 202 to frame; %d of %d within 1 s; first to last viewer of a site at most %s",
			len(watched), fo.WithinSecond, fo.Updates, msDur(fo.Spread))
		if fo.DialError != "" {
			measure += "; connecting stopped: " + firstLine(fo.DialError, 160)
		}
		rows = append(rows,
			Row{Section: section6, Measure: measure,
				Result: fmt.Sprintf("%s viewers: %s / %s (%s)", thousands(float64(fo.Viewers)), msDur(fo.P50), msDur(fo.P99), msDur(fo.Max)),
				Goal:   ">= 10,000 viewers, p99 <= 1 s, none missed", Verdict: v},
			Row{Section: section6, Measure: fmt.Sprintf("query RSS per viewer (%s with 1 viewer, %s with %d; per viewer the Go heap in use grew %.1f KiB, goroutine stacks %.1f KiB, goroutines %.1f)",
				mib(fo.RSSBefore), mib(fo.RSSAfter), fo.Viewers, fo.HeapPerViewer, fo.StackPerViewer, fo.GoroutinesPerViewer),
				Result: fmt.Sprintf("%.1f KiB", fo.PerViewer), Goal: "<= 32 KiB", Verdict: atMost(fo.PerViewer, 32)})
		res, err := load.Run(ctx, load.Options{
			URL: "http://" + procs["ingest"].HTTPAddr + "/api/collect", Conns: connsFor(rate), Rate: rate, Duration: p.rssDur, Seed: o.Seed + 2, Pool: 50000,
		}, trafficOf(r.Sites))
		closeViewers()
		if err != nil {
			rows = append(rows, failed(section7, err))
			phase = "the load failed"
		} else {
			fmt.Fprintf(log, "rss load: %s\n", res)
		}
	}
	goals := map[string]float64{"ingest": 64, "writer": 128}
	for _, name := range []string{"ingest", "writer", "query", "nats-server"} {
		mem, err := procs[name].Memory()
		if err != nil {
			rows = append(rows, failed(section7, err))
			continue
		}
		row := Row{Section: section7, Measure: fmt.Sprintf("peak RSS, %s process (%s)", name, phase), Result: mib(mem.Peak)}
		if g, ok := goals[name]; ok {
			row.Goal = fmt.Sprintf("<= %.0f MiB", g)
			row.Verdict = atMost(float64(mem.Peak), g*1024)
		}
		rows = append(rows, row)
	}
	return rows
}

// sortedUnits lists a benchmark's units in order.
func sortedUnits(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// trimFloat formats v in as few digits as represent it.
func trimFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// commitsBetween is how many batches the writer committed between two readings of its
// metrics, and their mean commit time.
func commitsBetween(before, after rig.Metrics) (batches int64, mean time.Duration) {
	n0, _ := before.Sum("haru_writer_commit_seconds_count")
	n1, _ := after.Sum("haru_writer_commit_seconds_count")
	s0, _ := before.Sum("haru_writer_commit_seconds_sum")
	s1, _ := after.Sum("haru_writer_commit_seconds_sum")
	if n1 <= n0 {
		return 0, 0
	}
	return int64(n1 - n0), time.Duration((s1 - s0) / (n1 - n0) * float64(time.Second))
}
