package suite

import (
	"context"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"github.com/haru-analytics/haru/services/loadgen/internal/load"
	"github.com/haru-analytics/haru/services/loadgen/internal/rig"
	"github.com/haru-analytics/haru/services/loadgen/internal/traffic"
	"github.com/haru-analytics/haru/services/writer"
)

// Sample is the backlog at a moment of a step.
type Sample struct {
	At time.Duration // since the step began
	// Backlog is events accepted by ingest and not yet written (or skipped) by the writer.
	Backlog float64
	// Pending is the writer's consumer pending gauge (refreshed every few seconds).
	Pending float64
}

// Step is one held rate of the ramp and the verdict on it.
type Step struct {
	Rate       float64
	Load       load.Result
	Slope      float64 // backlog growth, events/s, over the judged part of the hold
	EndBacklog float64
	MaxPending float64
	Flat       bool
	Reason     string // why the step is not flat
}

// Judge thresholds: a step is flat when the generator delivered the rate, nearly every
// beacon was accepted, and the backlog's upper envelope neither grew by more than
// slopeShare of the rate per second nor ended above backlogSeconds of traffic plus
// batchSlack. The writer works in batches (one written while the next is pulled), so the
// backlog is a sawtooth: its peaks per envelope window are what must stay level.
const (
	sentShare      = 0.95
	acceptShare    = 0.99
	slopeShare     = 0.05
	minSlope       = 100
	backlogSeconds = 2
	batchSlack     = 2 * writer.DefaultBatchSize
	envelopeWindow = 2 * time.Second
)

// Judge decides whether a step held its rate with a flat backlog. The first third of the
// hold is left out: the backlog settles there.
func Judge(rate float64, res load.Result, samples []Sample, hold time.Duration) (slope float64, flat bool, reason string) {
	var judged []Sample
	for _, s := range samples {
		if s.At >= hold/3 {
			judged = append(judged, s)
		}
	}
	env := envelope(judged, envelopeWindow)
	if len(env) < 2 {
		return 0, false, fmt.Sprintf("only %d backlog samples", len(judged))
	}
	slope = slopeOf(env)
	end := env[len(env)-1].Backlog
	switch {
	case res.SentPerSec < sentShare*rate:
		return slope, false, fmt.Sprintf("sent %.0f/s of %.0f/s", res.SentPerSec, rate)
	case res.Sent > 0 && float64(res.Accepted) < acceptShare*float64(res.Sent):
		return slope, false, fmt.Sprintf("accepted %d of %d (status %v, errors %d)", res.Accepted, res.Sent, res.Status, res.Errors)
	case slope > max(slopeShare*rate, minSlope):
		return slope, false, fmt.Sprintf("backlog growing %.0f events/s", slope)
	case end > backlogSeconds*rate+batchSlack:
		return slope, false, fmt.Sprintf("backlog %.0f events at the end", end)
	}
	return slope, true, ""
}

// envelope keeps the highest sample of each window (counted from the first sample),
// placed at the window's middle.
func envelope(s []Sample, window time.Duration) []Sample {
	var out []Sample
	if len(s) == 0 {
		return nil
	}
	origin := s[0].At
	for _, p := range s {
		i := int((p.At - origin) / window)
		at := origin + time.Duration(i)*window + window/2
		if n := len(out); n > 0 && out[n-1].At == at {
			out[n-1].Backlog = max(out[n-1].Backlog, p.Backlog)
			continue
		}
		out = append(out, Sample{At: at, Backlog: p.Backlog, Pending: p.Pending})
	}
	return out
}

// slopeOf is the least-squares slope of backlog over time, per second.
func slopeOf(s []Sample) float64 {
	n := float64(len(s))
	var sx, sy, sxx, sxy float64
	for _, p := range s {
		x := p.At.Seconds()
		sx += x
		sy += p.Backlog
		sxx += x * x
		sxy += x * p.Backlog
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// Rates is the ramp: from start by step up to at most top.
func Rates(start, step, top float64) []float64 {
	var out []float64
	for r := start; r <= top && step > 0; r += step {
		out = append(out, r)
	}
	return out
}

// rateGrain is what refined rates are rounded to.
const rateGrain = 250

// NextRate decides the next step: up the ramp until a step is not flat, then up to
// refine bisections between the highest flat rate below it (0 if none) and the lowest
// rate that was not flat. ok is false when the ramp is done.
func NextRate(steps []Step, ramp []float64, refine int) (rate float64, ok bool) {
	failed := -1
	for i, s := range steps {
		if !s.Flat {
			failed = i
			break
		}
	}
	if failed < 0 {
		if len(steps) < len(ramp) {
			return ramp[len(steps)], true
		}
		return 0, false
	}
	if len(steps)-1-failed >= refine {
		return 0, false
	}
	lo, hi := LastFlat(steps), lowestNotFlat(steps)
	mid := math.Round((lo+hi)/2/rateGrain) * rateGrain
	if mid <= lo || mid >= hi || mid < rateGrain {
		return 0, false
	}
	return mid, true
}

// lowestNotFlat is the lowest rate of a step that was not flat.
func lowestNotFlat(steps []Step) float64 {
	low := math.Inf(1)
	for _, s := range steps {
		if !s.Flat {
			low = min(low, s.Rate)
		}
	}
	return low
}

// LastFlat is the highest flat rate below every rate that was not flat, 0 if none.
func LastFlat(steps []Step) float64 {
	limit := lowestNotFlat(steps)
	best := 0.0
	for _, s := range steps {
		if s.Flat && s.Rate < limit {
			best = max(best, s.Rate)
		}
	}
	return best
}

// backlogOf reads the backlog from a process's metrics: events ingest stored in the
// stream minus those the writer has finished with.
func backlogOf(m rig.Metrics) (backlog, pending float64) {
	acc, _ := m.Sum("haru_ingest_events_accepted_total")
	var done float64
	for _, name := range []string{"haru_writer_rows_written_total", "haru_writer_events_skipped_total",
		"haru_writer_events_dead_lettered_total", "haru_writer_messages_terminated_total"} {
		v, _ := m.Sum(name)
		done += v
	}
	pending, _ = m.Sum("haru_writer_consumer_pending_messages")
	return acc - done, pending
}

// pipelineOptions shape the ramp.
type pipelineOptions struct {
	Rates []float64
	// Refine is how many bisections follow the first step that is not flat.
	Refine int
	Hold   time.Duration
	Seed   uint64
	Pool   int
}

// runPipeline holds each rate NextRate picks against the collect endpoint of all (whose
// ops metrics carry both ingest's and the writer's counters).
func runPipeline(ctx context.Context, all *rig.Proc, sites []traffic.Site, o pipelineOptions, log io.Writer) ([]Step, error) {
	var steps []Step
	for {
		rate, ok := NextRate(steps, o.Rates, o.Refine)
		if !ok {
			return steps, nil
		}
		if err := waitDrained(ctx, all, 30*time.Second); err != nil {
			return steps, err
		}
		stop := sampleBacklog(ctx, all, 250*time.Millisecond)
		res, err := load.Run(ctx, load.Options{
			URL: "http://" + all.HTTPAddr + "/api/collect", Conns: connsFor(rate), Rate: rate,
			Duration: o.Hold, Seed: o.Seed, Pool: o.Pool,
		}, sites)
		got := stop()
		if err != nil {
			return steps, fmt.Errorf("pipeline at %.0f/s: %w", rate, err)
		}
		st := Step{Rate: rate, Load: res}
		st.Slope, st.Flat, st.Reason = Judge(rate, res, got, o.Hold)
		if len(got) > 0 {
			st.EndBacklog = got[len(got)-1].Backlog
		}
		for _, s := range got {
			st.MaxPending = max(st.MaxPending, s.Pending)
		}
		fmt.Fprintf(log, "pipeline %6.0f/s: sent %.0f/s accepted %.0f/s p99 %.1fms, backlog slope %+.0f/s end %.0f, pending max %.0f: flat=%v %s\n",
			rate, res.SentPerSec, res.AcceptedPS, res.P99, st.Slope, st.EndBacklog, st.MaxPending, st.Flat, st.Reason)
		steps = append(steps, st)
	}
}

// sampleBacklog reads the backlog every interval until the returned stop is called,
// which returns the samples.
func sampleBacklog(ctx context.Context, p *rig.Proc, every time.Duration) (stop func() []Sample) {
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	var out []Sample
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			m, err := p.Metrics(ctx)
			if err != nil {
				continue
			}
			b, pend := backlogOf(m)
			mu.Lock()
			out = append(out, Sample{At: time.Since(start), Backlog: b, Pending: pend})
			mu.Unlock()
		}
	}()
	return func() []Sample {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return out
	}
}

// waitDrained waits until the backlog is empty, at most timeout.
func waitDrained(ctx context.Context, p *rig.Proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := 0.0
	for time.Now().Before(deadline) {
		m, err := p.Metrics(ctx)
		if err != nil {
			return err
		}
		if last, _ = backlogOf(m); last <= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("backlog of %.0f events not drained within %s", last, timeout)
}

// connsFor is how many connections carry a fixed rate: each has one request in flight,
// so a slow answer must not cap the rate the generator can offer (at 250/s per
// connection, answers may take up to 4 ms on average).
func connsFor(rate float64) int { return int(min(max(rate/250, 64), 1000)) }
