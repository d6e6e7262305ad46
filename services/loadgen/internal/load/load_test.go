package load

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/haru-analytics/haru/services/loadgen/internal/traffic"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([]time.Duration, 100000)
	for i := range vals {
		vals[i] = time.Duration(rng.ExpFloat64() * float64(2*time.Millisecond))
		h.Record(vals[i])
	}
	slices.Sort(vals)
	for _, q := range []float64{.5, .9, .99, .999} {
		want := vals[int(q*float64(len(vals)))]
		got := h.Quantile(q)
		if diff := float64(got-want) / float64(want); diff < -0.02 || diff > 0.02 {
			t.Errorf("q%g: got %s, want %s within 2%%", q, got, want)
		}
	}
	if h.Max() != vals[len(vals)-1] || h.Count() != int64(len(vals)) {
		t.Errorf("max %s count %d, want %s %d", h.Max(), h.Count(), vals[len(vals)-1], len(vals))
	}
	var empty Histogram
	if empty.Quantile(.99) != 0 {
		t.Error("empty histogram: want 0")
	}
}

func TestBuckets(t *testing.T) {
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 1 << 20, 1<<40 + 12345} {
		i := bucketOf(v)
		if upper(i) < v || (i > 0 && upper(i-1) >= v) {
			t.Errorf("value %d in bucket %d [%d, %d]", v, i, upper(i-1)+1, upper(i))
		}
	}
}

func TestCheckLoopback(t *testing.T) {
	tests := []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:4000/api/collect", true},
		{"http://127.0.0.5:80/api/collect", true},
		{"http://[::1]:4000/api/collect", true},
		{"http://localhost:4000/api/collect", true},
		{"http://10.0.0.1:4000/api/collect", false},
		{"http://192.168.1.2/api/collect", false},
		{"http://8.8.8.8/api/collect", false},
		{"https://127.0.0.1/api/collect", false},
		{"http:///api/collect", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			_, err := CheckLoopback(context.Background(), tt.url)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckLoopback(%q) = %v, want ok=%v", tt.url, err, tt.ok)
			}
		})
	}
	_, err := CheckLoopback(context.Background(), "http://8.8.8.8/")
	if !errors.Is(err, ErrNotLoopback) {
		t.Fatalf("want ErrNotLoopback, got %v", err)
	}
}

// serve answers every collect request with status after checking it looks like a beacon.
func serve(t *testing.T, status int) string {
	return serveSlow(t, status, 0)
}

// serveSlow answers every beacon with status after delay.
func serveSlow(t *testing.T, status int, delay time.Duration) string {
	t.Helper()
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Post("/api/collect", func(c *fiber.Ctx) error {
		time.Sleep(delay)
		if c.Query("t") == "" || c.Get(fiber.HeaderXForwardedFor) == "" || c.Get(fiber.HeaderUserAgent) == "" || len(c.Body()) == 0 {
			return c.SendStatus(fiber.StatusBadRequest)
		}
		return c.SendStatus(status)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	return "http://" + ln.Addr().String() + "/api/collect"
}

func TestRun(t *testing.T) {
	sites := []traffic.Site{{Token: "a", Domain: "a.example"}, {Token: "b"}}
	tests := []struct {
		name   string
		o      Options
		status int
		want   int64 // exact sent count, or 0 to skip the check
	}{
		{name: "n bounds", o: Options{Conns: 4, N: 500, Pool: 100}, status: 202, want: 500},
		{name: "rate and duration", o: Options{Conns: 4, Rate: 400, Duration: 500 * time.Millisecond, Warmup: 100 * time.Millisecond, Pool: 100}, status: 202, want: 200},
		{name: "non-202 counted", o: Options{Conns: 2, N: 50, Pool: 100}, status: 503, want: 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.o.URL = serve(t, tt.status)
			res, err := Run(context.Background(), tt.o, sites)
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors != 0 || res.Status[strconv.Itoa(tt.status)] != res.Sent {
				t.Fatalf("result %s: want every answer %d", res, tt.status)
			}
			if d := res.Sent - tt.want; d < -2 || d > 2 {
				t.Fatalf("sent %d, want %d", res.Sent, tt.want)
			}
			if tt.status == 202 && res.Accepted != res.Sent {
				t.Fatalf("accepted %d of %d", res.Accepted, res.Sent)
			}
			if res.P50 <= 0 || res.P99 < res.P50 || res.Max < res.P99 {
				t.Fatalf("latencies p50 %g p99 %g max %g", res.P50, res.P99, res.Max)
			}
		})
	}
}

// TestRunBehindRate: a target that answers slower than the rate asks gets only what the
// connections can send within the window. The sent rate shows the shortfall and the run
// ends with its window, instead of sending every beacon due and counting them as on time.
func TestRunBehindRate(t *testing.T) {
	sites := []traffic.Site{{Token: "a", Domain: "a.example"}}
	o := Options{URL: serveSlow(t, 202, 20*time.Millisecond), Conns: 2, Rate: 1000, Duration: 500 * time.Millisecond, Pool: 100}
	start := time.Now()
	res, err := Run(context.Background(), o, sites)
	if err != nil {
		t.Fatal(err)
	}
	// Two connections at 20 ms a beacon send about 100/s: 50 in the window, not 500.
	if res.Sent < 20 || res.Sent > 80 || res.SentPerSec > 200 {
		t.Fatalf("sent %d (%.0f/s) in %s at a rate of 1000/s to a server taking 20 ms; want about 50", res.Sent, res.SentPerSec, time.Since(start))
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the run took %s for a 500 ms window", took)
	}
	if res.P99 < 200 {
		t.Fatalf("p99 %g ms: beacons sent late must count from when they were due", res.P99)
	}
}
