package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/haru-analytics/haru/services/loadgen/internal/load"
	"github.com/haru-analytics/haru/services/loadgen/internal/rig"
	"github.com/haru-analytics/haru/services/writer"
)

// Drain is one writer process draining a backlog.
type Drain struct {
	Events  int64         // accepted by ingest while no writer ran
	Took    time.Duration // from the writer's readiness to the last event written
	PeakRSS int64         // KiB, the writer's VmHWM
}

// Rate is the drain's events per second.
func (d Drain) Rate() float64 {
	if d.Took <= 0 {
		return 0
	}
	return float64(d.Events) / d.Took.Seconds()
}

// runDrain measures the writer as a process of its own at full batches: with ingest and
// a writer over a private nats-server on a fresh database, the writer is stopped, n
// beacons are accepted into the stream, and a writer starts and writes them all. Every
// batch it writes is full, so its peak RSS is the writer's worst case, and its rate
// includes what the store benchmark leaves out: the pull, decoding and acknowledging.
func runDrain(ctx context.Context, o Options, sites int, n int64, log io.Writer) (Drain, error) {
	var d Drain
	r, err := rig.New(ctx, rig.Options{Bin: o.Bin, DatabaseURL: o.DatabaseURL, Sites: sites, Log: o.Log})
	if err != nil {
		return d, err
	}
	defer r.Close()
	if _, err := r.StartNATS(); err != nil {
		return d, err
	}
	// The first writer creates the stream ingest publishes to, then leaves.
	w, err := r.Start(ctx, "writer")
	if err != nil {
		return d, err
	}
	w.Stop(10 * time.Second)
	// The query service publishes the site registry ingest checks tokens against.
	if _, err := r.Start(ctx, "query"); err != nil {
		return d, err
	}
	in, err := r.Start(ctx, "ingest")
	if err != nil {
		return d, err
	}
	res, err := load.Run(ctx, load.Options{
		URL: "http://" + in.HTTPAddr + "/api/collect", Conns: 50, N: n, Seed: o.Seed + 3, Pool: 50000,
	}, trafficOf(r.Sites))
	if err != nil {
		return d, err
	}
	fmt.Fprintf(log, "drain backlog: %s\n", res)
	if res.Accepted == 0 {
		return d, errors.New("drain: no beacon accepted")
	}
	d.Events = res.Accepted
	w, err = r.Start(ctx, "writer")
	if err != nil {
		return d, err
	}
	start := time.Now()
	deadline := start.Add(10 * time.Minute)
	for {
		m, err := w.Metrics(ctx)
		if err != nil {
			return d, err
		}
		written, _ := m.Sum("haru_writer_rows_written_total")
		skipped, _ := m.Sum("haru_writer_events_skipped_total")
		if written+skipped >= float64(d.Events) {
			d.Took = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			return d, fmt.Errorf("drain: %.0f of %d events written after %s", written+skipped, d.Events, time.Since(start).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return d, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	mem, err := w.Memory()
	if err != nil {
		return d, err
	}
	d.PeakRSS = mem.Peak
	return d, nil
}

// drainRows runs runDrain: the writer process's rate (row 2) and peak RSS (row 7).
func drainRows(ctx context.Context, o Options, p plan, log io.Writer) []Row {
	d, err := runDrain(ctx, o, p.sites, p.drainEvents, log)
	if err != nil {
		return []Row{failed(writerSection, err)}
	}
	fmt.Fprintf(log, "drain: %d events in %s\n", d.Events, d.Took.Round(time.Millisecond))
	rate := d.Rate()
	return []Row{
		{Section: writerSection,
			Measure: fmt.Sprintf("the writer as its own process draining a backlog of %s events: pull, decode, batches of %s, write, ack", thousands(float64(d.Events)), thousands(writer.DefaultBatchSize)),
			Result:  perSec(rate), Goal: ">= 50,000/s", Verdict: atLeast(rate, 50000)},
		{Section: "7 RSS", Measure: "peak RSS, writer process draining a backlog (every batch full: its worst case)",
			Result: mib(d.PeakRSS), Goal: "<= 128 MiB", Verdict: atMost(float64(d.PeakRSS), 128*1024)},
	}
}
