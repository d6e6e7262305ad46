package load

import (
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: 2^subBits buckets per power of two, so a
// reported quantile is within 1/64 (1.6%) of the true value, as an HDR histogram with
// two significant digits.
const subBits = 6

const (
	sub     = 1 << subBits
	buckets = sub + (64-subBits-1)*sub
)

// Histogram counts latencies in log-linear buckets. The zero value is empty; it is not
// safe for concurrent use (each sender keeps its own and they are merged).
type Histogram struct {
	counts [buckets]int64
	n      int64
	max    time.Duration
}

func bucketOf(v uint64) int {
	if v < sub {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1
	return sub + shift*sub + int(v>>shift) - sub
}

// upper is the largest value that lands in bucket i.
func upper(i int) uint64 {
	if i < sub {
		return uint64(i)
	}
	shift := (i - sub) / sub
	rem := (i - sub) % sub
	return (uint64(sub+rem+1) << shift) - 1
}

// Record adds one latency.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

// Count is how many latencies were recorded.
func (h *Histogram) Count() int64 { return h.n }

// Max is the largest latency recorded, exactly.
func (h *Histogram) Max() time.Duration { return h.max }

// Quantile returns the latency at q (0..1), 0 when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(q * float64(h.n))
	if rank >= h.n {
		rank = h.n - 1
	}
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen > rank {
			v := time.Duration(upper(i))
			if v > h.max {
				v = h.max
			}
			return v
		}
	}
	return h.max
}
