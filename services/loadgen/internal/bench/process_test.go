package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/proctest"
	"github.com/haru-analytics/haru/services/loadgen/internal/load"
	"github.com/haru-analytics/haru/services/loadgen/internal/rig"
	"github.com/haru-analytics/haru/services/loadgen/internal/traffic"
)

var (
	procDuration = flag.Duration("ingest-duration", 10*time.Second, "BenchmarkIngestProcess: length of each run")
	procSteady   = flag.Float64("ingest-steady-rate", 5000, "BenchmarkIngestProcess: rate of the steady run")
	procEnv      = flag.String("ingest-env", "", "BenchmarkIngestProcess: extra KEY=VALUE,... for the ingest process")
)

// BenchmarkIngestProcess measures ingest as it is deployed: its own command running
// alone, against its own nats-server process, driven over loopback by 50
// keep-alive connections from this process. It reports the full-speed run, the steady
// run, and the ingest process's peak RSS (VmHWM), which excludes the JetStream server and
// the load client. Run it with -benchtime 1x:
//
//	go test -run '^$' -bench IngestProcess -benchtime 1x ./services/loadgen/internal/bench/
func BenchmarkIngestProcess(b *testing.B) {
	ns := proctest.StartNATS(b)
	// The per-service command, as an ingest-only image runs it (the haru binary with
	// -target=ingest works the same and maps ~4 MiB more of its larger text).
	bin := filepath.Join(b.TempDir(), "ingest")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/haru-analytics/haru/services/ingest/cmd").CombinedOutput(); err != nil {
		b.Fatalf("build ingest: %v\n%s", err, out)
	}
	ctx := context.Background()
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	names, err := event.NewNames(event.DefaultPrefix)
	if err != nil {
		b.Fatal(err)
	}
	kv, err := natsutil.EnsureSites(ctx, js, names, 1)
	if err != nil {
		b.Fatal(err)
	}
	var sites []traffic.Site
	for i := range 200 {
		site := event.Site{ID: int64(i + 1), Token: fmt.Sprintf("bench%05d", i+1), Domain: fmt.Sprintf("site%d.example", i+1),
			Timezone: timezones[i%len(timezones)], Version: 1}
		v, err := event.EncodeSite(site)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := kv.Put(ctx, event.SiteKey(site.Token), v); err != nil {
			b.Fatal(err)
		}
		sites = append(sites, traffic.Site{Token: site.Token, Domain: site.Domain})
	}

	httpAddr, opsAddr := proctest.FreeAddr(b), proctest.FreeAddr(b)
	env := map[string]string{
		"HARU_NATS_URL": ns.URL(), "HARU_HTTP_ADDR": httpAddr, "HARU_OPS_ADDR": opsAddr,
		"HARU_RATE_LIMIT": "0", "HARU_TRUSTED_PROXIES": "127.0.0.1/32", "HARU_STREAM_MAX_BYTES": "4GiB",
		"HARU_PUBLISH_TIMEOUT": "5s", "HARU_LOG_LEVEL": "warn",
	}
	for _, kv := range strings.Split(*procEnv, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	ing := proctest.Start(b, "ingest", bin, nil, env)
	ing.WaitReady(b, "http://"+opsAddr+"/readyz")
	idle := peakRSSOf(fmt.Sprintf("/proc/%d/status", ing.Pid()))
	stream, err := js.Stream(ctx, names.Stream)
	if err != nil {
		b.Fatal(err)
	}

	lo := load.Options{URL: "http://" + httpAddr + "/api/collect", Conns: 50, Duration: *procDuration, Warmup: time.Second, Seed: 1}
	b.ResetTimer()
	natsPid := pidOf(b, ns.StoreDir)
	cpu0, natsCPU0 := cpuTime(b, ing.Pid()), cpuTime(b, natsPid)
	full, err := load.Run(ctx, lo, sites)
	if err != nil {
		b.Fatal(err)
	}
	natsUsed := cpuTime(b, natsPid) - natsCPU0
	// CPU time per beacon holds still far better than the rate on a shared machine. The
	// stream has no consumer, so it counts every beacon accepted, the warmup's too.
	used := cpuTime(b, ing.Pid()) - cpu0
	info, err := stream.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	cpuPerBeacon := used.Seconds() * 1e6 / float64(info.State.Msgs)
	natsPerBeacon := natsUsed.Seconds() * 1e6 / float64(info.State.Msgs)
	if err := stream.Purge(ctx); err != nil {
		b.Fatal(err)
	}
	lo.Rate = *procSteady
	steady, err := load.Run(ctx, lo, sites)
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	_ = stream.Purge(ctx)
	rss := peakRSSOf(fmt.Sprintf("/proc/%d/status", ing.Pid()))
	full.Target, steady.Target = "ingest process", fmt.Sprintf("ingest process at %.0f/s", *procSteady)
	b.Logf("\n%s\n%s\ningest process peak RSS %.1f MiB (%.1f MiB when ready, before load); at full speed, CPU per beacon: ingest %.1f µs, nats-server %.1f µs",
		full, steady, float64(rss)/1024, float64(idle)/1024, cpuPerBeacon, natsPerBeacon)
	for _, r := range []load.Result{full, steady} {
		if r.Accepted != r.Sent || r.Errors != 0 {
			b.Errorf("%s: not every beacon accepted", r)
		}
	}
	b.ReportMetric(full.AcceptedPS, "accepted/s")
	b.ReportMetric(full.P99, "p99-ms")
	b.ReportMetric(steady.P99, "steady-p99-ms")
	b.ReportMetric(*procSteady, "steady-rate/s")
	b.ReportMetric(float64(rss)/1024, "ingest-peak-RSS-MiB")
	b.ReportMetric(cpuPerBeacon, "ingest-cpu-µs/beacon")
	b.ReportMetric(natsPerBeacon, "nats-cpu-µs/beacon")
}

// pidOf finds the nats-server process started on storeDir.
func pidOf(b *testing.B, storeDir string) int {
	b.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		b.Fatal(err)
	}
	for _, path := range dirs {
		raw, err := os.ReadFile(path)
		if err != nil || !strings.Contains(string(raw), "\x00"+storeDir+"\x00") {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		if err == nil {
			return pid
		}
	}
	b.Fatalf("no process runs on %s", storeDir)
	return 0
}

// cpuTime is the user plus system CPU time process pid has used.
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	d, err := rig.CPUTime(pid)
	if err != nil {
		b.Fatal(err)
	}
	return d
}
