package suite

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/haru-analytics/haru/services/loadgen/internal/load"
	"github.com/haru-analytics/haru/services/loadgen/internal/rig"
)

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
goarch: amd64
pkg: github.com/haru-analytics/haru/services/writer/internal/store
cpu: AMD EPYC
BenchmarkWrite/full-2         	      30	  98765432 ns/op	     50623 events/s
BenchmarkWrite/events_only-2  	      30	  45678901 ns/op	    109460 events/s	  1024 B/op
BenchmarkWrite/raw_copy       	      30	  12345678 ns/op	    405000 events/s
BenchmarkBroken-2 	 notanumber	 1 ns/op
--- BENCH: BenchmarkWrite
PASS
ok  	github.com/haru-analytics/haru/services/writer/internal/store	12.3s
`
	got, err := ParseGoBench(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []Bench{
		{Name: "BenchmarkWrite/full", Iterations: 30, Metrics: map[string]float64{"ns/op": 98765432, "events/s": 50623}},
		{Name: "BenchmarkWrite/events_only", Iterations: 30, Metrics: map[string]float64{"ns/op": 45678901, "events/s": 109460, "B/op": 1024}},
		{Name: "BenchmarkWrite/raw_copy", Iterations: 30, Metrics: map[string]float64{"ns/op": 12345678, "events/s": 405000}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("benchmarks (-want +got):\n%s", diff)
	}
	if b, ok := Find(got, "BenchmarkWrite/events_only"); !ok || b.Metrics["events/s"] != 109460 {
		t.Fatalf("Find = %+v, %v", b, ok)
	}
	if _, ok := Find(got, "BenchmarkWrite"); ok {
		t.Fatal("Find matched a prefix")
	}
}

func TestTableMarkdownAndText(t *testing.T) {
	tb := &Table{Title: "Haru benchmarks", Setup: []string{"mode quick"}, Notes: []string{"a note"}}
	tb.Add(
		Row{Section: "1 ingest", Measure: "accepted/s", Result: perSec(41234.4), Baseline: perSec(80000), Ratio: ratio(41234.4, 80000), Goal: ">= 40,000/s", Verdict: atLeast(41234.4, 40000)},
		Row{Section: "4 freshness", Measure: "p50 | p99", Result: ms(1234), Goal: "<= 1 s", Verdict: atMost(1.234, 1)},
	)
	var md strings.Builder
	if err := tb.Markdown(&md); err != nil {
		t.Fatal(err)
	}
	wantMD := `# Haru benchmarks

- mode quick

| benchmark | measure | result | baseline | ratio | goal | met |
|---|---|---|---|---|---|---|
| 1 ingest | accepted/s | 41,234/s | 80,000/s | 0.52x | >= 40,000/s | yes |
| 4 freshness | p50 \| p99 | 1234 ms |  |  | <= 1 s | NO |

- a note
`
	if diff := cmp.Diff(wantMD, md.String()); diff != "" {
		t.Fatalf("markdown (-want +got):\n%s", diff)
	}
	var txt strings.Builder
	if err := tb.Text(&txt); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(txt.String(), "\n")
	// Title, setup, header, rule, two rows, note.
	if len(lines) != 8 || !strings.HasPrefix(lines[2], "benchmark    measure") || !strings.HasPrefix(lines[3], "-----------  ---") {
		t.Fatalf("text table:\n%s", txt.String())
	}
	if strings.Index(lines[4], "41,234/s") != strings.Index(lines[5], "1234 ms") {
		t.Fatalf("result column not aligned:\n%s", txt.String())
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.6: "1,234,568", -45000: "-45,000"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
}

// samples makes one backlog sample a second from values.
func samples(values ...float64) []Sample {
	out := make([]Sample, len(values))
	for i, v := range values {
		out[i] = Sample{At: time.Duration(i+1) * time.Second, Backlog: v}
	}
	return out
}

func TestJudge(t *testing.T) {
	ok := load.Result{Sent: 100000, Accepted: 100000, SentPerSec: 10000}
	hold := 12 * time.Second
	tests := []struct {
		name    string
		res     load.Result
		samples []Sample
		flat    bool
		reason  string
	}{
		// A batch sawtooth: peaks level at about 9,000.
		{"flat sawtooth", ok, samples(500, 9000, 800, 9100, 300, 8800, 700, 9000, 1100, 9050, 600, 8900), true, ""},
		// Peaks growing 2,000/s over the judged part (from 4 s on).
		{"growing", ok, samples(0, 0, 0, 2000, 100, 6000, 200, 10000, 300, 14000, 400, 18000), false, "backlog growing"},
		{"level but ending high", ok, samples(45000, 45000, 45000, 45000, 45000, 45000, 45000, 45000, 45000, 45000), false, "events at the end"},
		{"generator fell short", load.Result{Sent: 80000, Accepted: 80000, SentPerSec: 8000}, samples(0, 0, 0, 0, 0, 0, 0, 0, 0), false, "sent 8000/s"},
		{"refused beacons", load.Result{Sent: 100000, Accepted: 97000, SentPerSec: 10000}, samples(0, 0, 0, 0, 0, 0, 0, 0, 0), false, "accepted 97000"},
		{"too few samples", ok, samples(0, 0, 0, 0, 0), false, "only 2 backlog samples"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, flat, reason := Judge(10000, tt.res, tt.samples, hold)
			if flat != tt.flat || !strings.Contains(reason, tt.reason) {
				t.Fatalf("Judge = %v %q; want %v %q", flat, reason, tt.flat, tt.reason)
			}
		})
	}
}

func TestEnvelope(t *testing.T) {
	got := envelope(samples(1, 5, 2, 3, 9), 2*time.Second)
	want := []Sample{{At: 2 * time.Second, Backlog: 5}, {At: 4 * time.Second, Backlog: 3}, {At: 6 * time.Second, Backlog: 9}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("envelope (-want +got):\n%s", diff)
	}
}

func TestSlopeOf(t *testing.T) {
	if got := slopeOf(samples(10, 20, 30, 40)); got < 9.999 || got > 10.001 {
		t.Fatalf("slope = %v, want 10", got)
	}
	if got := slopeOf(samples(5)); got != 0 {
		t.Fatalf("slope of one sample = %v, want 0", got)
	}
}

// walk runs NextRate against a box that keeps rates up to capacity flat.
func walk(ramp []float64, refine int, capacity float64) (rates []float64, flat float64) {
	var steps []Step
	for {
		r, ok := NextRate(steps, ramp, refine)
		if !ok {
			return rates, LastFlat(steps)
		}
		if len(rates) > 50 {
			panic("ramp does not end")
		}
		rates = append(rates, r)
		steps = append(steps, Step{Rate: r, Flat: r <= capacity})
	}
}

func TestRamp(t *testing.T) {
	ramp := Rates(2500, 2500, 20000)
	if diff := cmp.Diff([]float64{2500, 5000, 7500, 10000, 12500, 15000, 17500, 20000}, ramp); diff != "" {
		t.Fatalf("Rates (-want +got):\n%s", diff)
	}
	tests := []struct {
		name      string
		refine    int
		capacity  float64
		wantRates []float64
		wantFlat  float64
	}{
		{"stops at the first step not flat", 0, 8000, []float64{2500, 5000, 7500, 10000}, 7500},
		{"bisects after it", 2, 8000, []float64{2500, 5000, 7500, 10000, 8750, 8250}, 7500},
		{"bisects up when the middle holds", 2, 9000, []float64{2500, 5000, 7500, 10000, 8750, 9500}, 8750},
		{"below the first step", 2, 1000, []float64{2500, 1250, 750}, 750},
		{"nothing holds", 3, 0, []float64{2500, 1250, 750, 500}, 0},
		{"everything holds", 1, 1e9, ramp, 20000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rates, flat := walk(ramp, tt.refine, tt.capacity)
			if diff := cmp.Diff(tt.wantRates, rates); diff != "" {
				t.Fatalf("rates (-want +got):\n%s", diff)
			}
			if flat != tt.wantFlat {
				t.Fatalf("last flat %v, want %v", flat, tt.wantFlat)
			}
		})
	}
}

func TestMatcher(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	m := NewMatcher([]int64{1, 2})
	m.Accept(1, at(0))
	m.Accept(1, at(100))
	m.Accept(2, at(50))
	m.Shown(1, 1, at(400))  // first of site 1: 400 ms
	m.Shown(1, 1, at(900))  // same count again: nothing new
	m.Shown(2, 1, at(1050)) // site 2: 1000 ms
	m.Accept(1, at(1000))
	m.Shown(1, 3, at(1300)) // second: 1200 ms, third: 300 ms
	// A frame ahead of the answers: the pageview it shows is matched at 0 when accepted.
	m.Shown(2, 2, at(1400))
	m.Accept(2, at(1450))
	m.Accept(1, at(2000)) // never shown
	h := m.Latencies()
	if h.Count() != 5 {
		t.Fatalf("matched %d, want 5", h.Count())
	}
	if got := m.Unmatched(); got != 1 {
		t.Fatalf("unmatched %d, want 1", got)
	}
	if h.Max() != 1200*time.Millisecond {
		t.Fatalf("max %s, want 1.2s", h.Max())
	}
	// Sorted: 0, 300, 400, 1000, 1200 ms; the median is 400 ms within the histogram's 1.6%.
	if med := h.Quantile(.5); med < 394*time.Millisecond || med > 406*time.Millisecond {
		t.Fatalf("median %s, want about 400ms", med)
	}
}

func TestDashboardRows(t *testing.T) {
	out := `BenchmarkDashboard/24h/rollups-2   20  1 ns/op  3.1 p50_ms  4.2 p95_ms
BenchmarkDashboard/24h/raw-2       20  1 ns/op  30.5 p50_ms  41.0 p95_ms
BenchmarkDashboard/30d/rollups-2   20  1 ns/op  20.0 p50_ms  60.0 p95_ms
BenchmarkDashboard/30d/raw-2       20  1 ns/op  200.0 p50_ms  300.0 p95_ms
BenchmarkDashboard/30d/filter-2    20  1 ns/op  700.0 first_ms  120.0 p50_ms  240.0 p95_ms
BenchmarkDashboard/30d/filter-one-statement-2    20  1 ns/op  2400.0 p50_ms  2600.0 p95_ms
BenchmarkDashboard/12mo/extra-2    20  5 ns/op
`
	bs, err := ParseGoBench(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	got := DashboardRows("5 dashboard", 10_000_000, bs)
	want := []Row{
		{Section: "5 dashboard", Measure: "dashboard 24h, 10,000,000 events: p50 / p95 (raw events as baseline)", Result: "3.1 ms / 4.2 ms", Baseline: "30.5 ms / 41.0 ms", Ratio: "0.10x"},
		{Section: "5 dashboard", Measure: "dashboard 30d, 10,000,000 events: p50 / p95 (raw events as baseline)", Result: "20.0 ms / 60.0 ms", Baseline: "200 ms / 300 ms", Ratio: "0.20x",
			Goal: "p95 <= 50 ms at 10 M", Verdict: Missed},
		{Section: "5 dashboard", Measure: "dashboard 30d with one filter, 10,000,000 events: p50 / p95 (first view; the former single statement as baseline)",
			Result: "120 ms / 240 ms (first 700 ms)", Baseline: "2400 ms / 2600 ms", Ratio: "0.092x", Goal: "p95 <= 500 ms at 10 M", Verdict: Met},
		{Section: "5 dashboard", Measure: "Dashboard/12mo/extra, 10,000,000 events", Result: "5 ns/op"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("rows (-want +got):\n%s", diff)
	}
	// Below 10 M the goals are shown without a verdict.
	if v := DashboardRows("5 dashboard", 1_000_000, bs)[1].Verdict; v != NoGoal {
		t.Fatalf("verdict at 1 M = %q, want none", v)
	}
}

func TestCommitsBetween(t *testing.T) {
	before := rig.Metrics{"haru_writer_commit_seconds_count": 10, "haru_writer_commit_seconds_sum": 4}
	after := rig.Metrics{"haru_writer_commit_seconds_count": 14, "haru_writer_commit_seconds_sum": 6}
	if n, mean := commitsBetween(before, after); n != 4 || mean != 500*time.Millisecond {
		t.Fatalf("commitsBetween = %d, %s; want 4, 500ms", n, mean)
	}
	if n, mean := commitsBetween(after, after); n != 0 || mean != 0 {
		t.Fatalf("no commits: %d, %s", n, mean)
	}
}

func TestIngestProcessRows(t *testing.T) {
	out := "BenchmarkIngestProcess-2   1   12000000000 ns/op   13500 accepted/s   25.0 p99-ms   4.5 steady-p99-ms   5000 steady-rate/s   55.2 ingest-peak-RSS-MiB   35.0 ingest-cpu-µs/beacon   15.0 nats-cpu-µs/beacon\n"
	bs, err := ParseGoBench(strings.NewReader(out))
	if err != nil || len(bs) != 1 {
		t.Fatalf("parse: %v %v", bs, err)
	}
	got := IngestProcessRows(bs[0])
	if len(got) != 4 {
		t.Fatalf("rows: %+v", got)
	}
	if got[0].Result != "13,500/s, 25.0 ms" || got[0].Verdict != Missed {
		t.Errorf("rate row %+v", got[0])
	}
	if !strings.Contains(got[1].Measure, "5,000/s") || got[1].Result != "4.5 ms" || got[1].Verdict != Met {
		t.Errorf("steady row %+v", got[1])
	}
	if got[2].Result != "35.0 + 15.0 µs: 40,000/s" {
		t.Errorf("cpu row %+v", got[2])
	}
	if got[3].Section != "7 RSS" || got[3].Result != "55.2 MiB" || got[3].Verdict != Met {
		t.Errorf("rss row %+v", got[3])
	}
	// A steady p99 over 5 ms misses the goal.
	slow, _ := ParseGoBench(strings.NewReader(strings.Replace(out, "4.5 steady", "5.5 steady", 1)))
	if got := IngestProcessRows(slow[0]); got[1].Verdict != Missed {
		t.Errorf("slow steady row %+v", got[1])
	}
}

func TestRatio(t *testing.T) {
	for _, c := range []struct {
		a, b float64
		want string
	}{{1, 2, "0.50x"}, {165, 38593, "0.0043x"}, {5.5, 18989, "0.00029x"}, {0.06, 1, "0.06x"}, {3, 0, ""}, {41, 40, "1.02x"}} {
		if got := ratio(c.a, c.b); got != c.want {
			t.Errorf("ratio(%v, %v) = %q, want %q", c.a, c.b, got, c.want)
		}
	}
}

func TestWriterRows(t *testing.T) {
	out := `BenchmarkWrite/spread-2    10  303232878 ns/op  10000 batch_events  75724 events_only_events/s  24858 full_events/s  0.3283 ratio  138682 raw_copy_events/s
BenchmarkWrite/sessions-2  10  274059370 ns/op  5000 batch_events  76087 events_only_events/s  60000 full_events/s  0.79 ratio
`
	bs, err := ParseGoBench(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	got := WriterRows(bs)
	want := []Row{
		{Section: "2 writer", Measure: "events/s, spread traffic, 10,000-event batches with rollups and idempotency (idempotent events-only insert as baseline)",
			Result: "24,858/s", Baseline: "75,724/s", Ratio: "0.33x", Goal: ">= 50,000/s and >= 0.5x", Verdict: Missed},
		{Section: "2 writer", Measure: "the same, spread traffic, against raw COPY into events", Result: "24,858/s", Baseline: "138,682/s", Ratio: "0.18x"},
		{Section: "2 writer", Measure: "events/s, sessions traffic, 5,000-event batches with rollups and idempotency (idempotent events-only insert as baseline)",
			Result: "60,000/s", Baseline: "76,087/s", Ratio: "0.79x", Goal: ">= 50,000/s and >= 0.5x", Verdict: Met},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("rows (-want +got):\n%s", diff)
	}
	if rows := WriterRows(nil); len(rows) != 1 || rows[0].Verdict != Failed {
		t.Fatalf("no results: %+v", rows)
	}
}

func TestDrainCPURow(t *testing.T) {
	d := Drain{Events: 200_000, WriterCPU: 4 * time.Second, PostgresCPU: 10 * time.Second, NATSCPU: 2 * time.Second}
	r := drainCPURow(d)
	// 20 + 50 + 10 µs per event: 80 µs, so 25,000 events/s on two whole cores.
	if r.Result != "20.0 + 50.0 + 10.0 µs: 25,000/s" || r.Section != writerSection {
		t.Fatalf("row %+v", r)
	}
	if r := drainCPURow(Drain{}); r.Result != "0.0 + 0.0 + 0.0 µs" {
		t.Fatalf("empty drain row %+v", r)
	}
}
