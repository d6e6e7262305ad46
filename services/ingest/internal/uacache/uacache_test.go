package uacache

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

func TestGet(t *testing.T) {
	var calls atomic.Int64
	c, err := New(2, func(ua string) int { calls.Add(1); return len(ua) })
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		ua        string
		want      int
		wantCalls int64
	}{
		{"first sight computes", "aa", 2, 1},
		{"repeat is cached", "aa", 2, 1},
		{"second entry", "bbb", 3, 2},
		{"third turns the generation over", "c", 1, 3},
		{"older generation still answers", "aa", 2, 3},
		{"empty string is a key too", "", 0, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.Get(tt.ua); got != tt.want {
				t.Fatalf("Get(%q) = %d, want %d", tt.ua, got, tt.want)
			}
			if got := calls.Load(); got != tt.wantCalls {
				t.Fatalf("compute called %d times, want %d", got, tt.wantCalls)
			}
		})
	}
	if n := c.Len(); n > 4 {
		t.Fatalf("Len() = %d, want at most 2×size", n)
	}
}

func TestNewRefuses(t *testing.T) {
	if _, err := New[int](0, func(string) int { return 0 }); err == nil {
		t.Fatal("size 0 accepted")
	}
	if _, err := New[int](1, nil); err == nil {
		t.Fatal("nil compute accepted")
	}
}

// TestBounded churns through many more strings than the cache holds, from several
// goroutines, and checks every answer and the bound.
func TestBounded(t *testing.T) {
	const size = 64
	c, err := New(size, func(ua string) string { return "v" + ua })
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				ua := strconv.Itoa((i * (g + 1)) % 300)
				if got := c.Get(ua); got != "v"+ua {
					t.Errorf("Get(%q) = %q", ua, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := c.Len(); n > 2*size {
		t.Fatalf("Len() = %d, want at most %d", n, 2*size)
	}
}

func BenchmarkGetHit(b *testing.B) {
	c, err := New(1024, func(ua string) int { return len(ua) })
	if err != nil {
		b.Fatal(err)
	}
	ua := "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 Safari/537.36"
	c.Get(ua)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Get(ua)
		}
	})
}
