package load

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
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
