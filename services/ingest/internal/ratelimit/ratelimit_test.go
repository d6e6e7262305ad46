package ratelimit

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/haru-analytics/haru/pkg/clock"
)

type step struct {
	ip      string
	advance time.Duration
	allowed bool
	retry   time.Duration
}

func TestAllow(t *testing.T) {
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		steps []step
	}{
		{"under limit", []step{{"1.2.3.4", 0, true, 0}, {"1.2.3.4", 0, true, 0}, {"1.2.3.4", 0, true, 0}}},
		{"over limit", []step{{"1.2.3.4", 0, true, 0}, {"1.2.3.4", 0, true, 0}, {"1.2.3.4", 0, true, 0},
			{"1.2.3.4", 20 * time.Second, false, 40 * time.Second}}},
		{"other address unaffected", []step{{"1.2.3.4", 0, true, 0}, {"1.2.3.4", 0, true, 0}, {"1.2.3.4", 0, true, 0},
			{"1.2.3.4", 0, false, time.Minute}, {"5.6.7.8", 0, true, 0}}},
		{"next window resets", []step{{"1.2.3.4", 0, true, 0}, {"1.2.3.4", 0, true, 0}, {"1.2.3.4", 0, true, 0},
			{"1.2.3.4", 0, false, time.Minute}, {"1.2.3.4", time.Minute, true, 0}}},
		{"ipv6 counted per /64", []step{{"2001:db8::1", 0, true, 0}, {"2001:db8::2", 0, true, 0}, {"2001:db8::3", 0, true, 0},
			{"2001:db8::ffff:4", 0, false, time.Minute}, {"2001:db8:0:1::1", 0, true, 0}}},
		{"mapped v4 same as v4", []step{{"1.2.3.4", 0, true, 0}, {"::ffff:1.2.3.4", 0, true, 0}, {"1.2.3.4", 0, true, 0},
			{"::ffff:1.2.3.4", 0, false, time.Minute}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.NewFake(start)
			l, err := New[netip.Addr](3, time.Minute)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			for i, s := range tt.steps {
				clk.Advance(s.advance)
				ok, retry := l.Allow(Key(netip.MustParseAddr(s.ip)), clk.Now())
				if diff := cmp.Diff([]any{s.allowed, s.retry}, []any{ok, retry}); diff != "" {
					t.Fatalf("step %d (%s): allowed, retry (-want +got):\n%s", i, s.ip, diff)
				}
			}
		})
	}
}

func TestNewRejectsNonPositive(t *testing.T) {
	for _, c := range []struct {
		limit  int
		window time.Duration
	}{{0, time.Minute}, {1, 0}, {-1, time.Second}} {
		if _, err := New[netip.Addr](c.limit, c.window); err == nil {
			t.Fatalf("New[netip.Addr](%d, %s) = nil error", c.limit, c.window)
		}
	}
}

func TestAllowConcurrent(t *testing.T) {
	l, err := New[netip.Addr](100, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ip := netip.MustParseAddr("9.9.9.9")
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if ok, _ := l.Allow(Key(ip), now); ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if allowed != 100 {
		t.Fatalf("allowed %d of 400, want 100", allowed)
	}
}

func BenchmarkAllow(b *testing.B) {
	l, _ := New[netip.Addr](1000000, time.Minute)
	now := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		a := [4]byte{10, 0, 0, 0}
		for pb.Next() {
			a[3]++
			l.Allow(Key(netip.AddrFrom4(a)), now)
		}
	})
}
