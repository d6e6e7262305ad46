package rig

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseMetrics(t *testing.T) {
	in := `# HELP haru_ingest_events_accepted_total Events stored in JetStream and answered 202.
# TYPE haru_ingest_events_accepted_total counter
haru_ingest_events_accepted_total 12345
haru_ingest_requests_total{status="202"} 10
haru_ingest_requests_total{status="400"} 2
haru_query_http_request_seconds_bucket{route="/api/x y",le="+Inf"} 7 1700000000000

haru_writer_consumer_pending_messages 1.5e+06
go_gc_duration_seconds{quantile="0.5"} NaN
`
	m, err := ParseMetrics(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if got := m["haru_ingest_events_accepted_total"]; got != 12345 {
		t.Errorf("accepted = %v, want 12345", got)
	}
	if got := m[`haru_query_http_request_seconds_bucket{route="/api/x y",le="+Inf"}`]; got != 7 {
		t.Errorf("bucket with a space in a label and a timestamp = %v, want 7", got)
	}
	if got, ok := m.Sum("haru_ingest_requests_total"); !ok || got != 12 {
		t.Errorf("Sum(requests) = %v, %v; want 12, true", got, ok)
	}
	if got, ok := m.Sum("haru_writer_consumer_pending_messages"); !ok || got != 1.5e6 {
		t.Errorf("Sum(pending) = %v, %v; want 1.5e6, true", got, ok)
	}
	// A name that is a prefix of another is not summed with it.
	if got, ok := m.Sum("haru_ingest_requests"); ok {
		t.Errorf("Sum(haru_ingest_requests) = %v, want none", got)
	}
}

func TestParseMetricsRejectsGarbage(t *testing.T) {
	for _, in := range []string{"name_without_value\n", "x{a=\"b\" 1\n", "x one\n", "x 1 2 3\n"} {
		if _, err := ParseMetrics(strings.NewReader(in)); err == nil {
			t.Errorf("ParseMetrics(%q): want an error", in)
		}
	}
}

func TestParseStatus(t *testing.T) {
	in := "Name:\tharu\nVmPeak:\t 2240316 kB\nVmHWM:\t   236356 kB\nVmRSS:\t   201000 kB\nThreads:\t12\n"
	got, err := parseStatus(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Memory{RSS: 201000, Peak: 236356}, got); diff != "" {
		t.Fatalf("memory (-want +got):\n%s", diff)
	}
	if _, err := parseStatus(strings.NewReader("Name:\tx\n")); err == nil {
		t.Fatal("want an error without VmHWM")
	}
}

func TestReadMemoryOfThisProcess(t *testing.T) {
	m, err := ReadMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.Peak < m.RSS {
		t.Fatalf("memory %+v: want 0 < RSS <= peak", m)
	}
}

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses; utime 250 and stime 50 ticks.
	line := "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 0 0"
	comm, cpu, err := parseStat(line)
	if err != nil || comm != "my (odd) cmd" || cpu != 3*time.Second {
		t.Fatalf("parseStat = %q, %s, %v; want \"my (odd) cmd\", 3s", comm, cpu, err)
	}
	for _, bad := range []string{"", "4242 (x) S 1 2", "4242 x S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0"} {
		if _, _, err := parseStat(bad); err == nil {
			t.Errorf("parseStat(%q): want an error", bad)
		}
	}
}

func TestCPUTimeOfThisProcess(t *testing.T) {
	// Burn some CPU so the counter has moved past its 10 ms tick.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	own, err := CPUTime(os.Getpid())
	if err != nil || own <= 0 {
		t.Fatalf("CPUTime = %s, %v", own, err)
	}
	raw, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	comm, _, _ := parseStat(string(raw))
	all, err := CPUTimeOf(comm)
	if err != nil || all < own {
		t.Fatalf("CPUTimeOf(%q) = %s, %v; want at least this process's %s", comm, all, err, own)
	}
	if none, err := CPUTimeOf("no such command here"); err != nil || none != 0 {
		t.Fatalf("CPUTimeOf(unknown) = %s, %v", none, err)
	}
}

func TestParsePortRange(t *testing.T) {
	if n, err := parsePortRange("32768\t60999\n"); err != nil || n != 28232 {
		t.Fatalf("parsePortRange = %d, %v; want 28232", n, err)
	}
	for _, in := range []string{"", "1", "9 1", "a b"} {
		if _, err := parsePortRange(in); err == nil {
			t.Errorf("parsePortRange(%q): want an error", in)
		}
	}
}
