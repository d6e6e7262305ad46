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
	// CPU time each part used over the drain: the writer process, every postgres
	// process on the machine (the server the rig's database lives on) and the nats-server.
	WriterCPU, PostgresCPU, NATSCPU time.Duration
}

// PerEvent is d's CPU time per event in µs.
func (d Drain) PerEvent(cpu time.Duration) float64 {
	if d.Events <= 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / float64(d.Events)
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
	ns, err := r.StartNATS()
	if err != nil {
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
	cpu0, err := drainCPU(w.Pid(), ns.Pid())
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
			cpu1, err := drainCPU(w.Pid(), ns.Pid())
			if err != nil {
				return d, err
			}
			d.WriterCPU, d.PostgresCPU, d.NATSCPU = cpu1[0]-cpu0[0], cpu1[1]-cpu0[1], cpu1[2]-cpu0[2]
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

// drainCPU reads the CPU time of the writer, of Postgres and of the nats-server.
func drainCPU(writerPid, natsPid int) ([3]time.Duration, error) {
	var c [3]time.Duration
	var err error
	if c[0], err = rig.CPUTime(writerPid); err != nil {
		return c, err
	}
	if c[1], err = rig.CPUTimeOf("postgres"); err != nil {
		return c, err
	}
	c[2], err = rig.CPUTime(natsPid)
	return c, err
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
		drainCPURow(d),
		{Section: "7 RSS", Measure: "peak RSS, writer process draining a backlog (every batch full: its worst case)",
			Result: mib(d.PeakRSS), Goal: "<= 128 MiB", Verdict: atMost(float64(d.PeakRSS), 128*1024)},
	}
}

// drainCPURow is the drain's CPU time per event, which holds still on a shared machine
// where the rate does not, and the rate the three would reach on two whole cores.
func drainCPURow(d Drain) Row {
	w, pg, n := d.PerEvent(d.WriterCPU), d.PerEvent(d.PostgresCPU), d.PerEvent(d.NATSCPU)
	r := Row{Section: writerSection,
		Measure: "CPU per event while draining: writer + Postgres + nats-server; the rate the three would reach on 2 whole cores",
		Result:  fmt.Sprintf("%.1f + %.1f + %.1f µs", w, pg, n)}
	if sum := w + pg + n; sum > 0 {
		r.Result += ": " + perSec(2e6/sum)
	}
	return r
}
