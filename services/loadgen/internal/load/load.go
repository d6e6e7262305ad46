// Package load sends generated beacons to a collect endpoint over keep-alive connections
// and measures what comes back: counts per status, throughput and a latency histogram.
// It only ever targets loopback addresses.
package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/haru-analytics/haru/services/loadgen/internal/traffic"
)

// ErrNotLoopback is a target outside this machine: the harness refuses to load anything
// but 127.0.0.0/8 or ::1.
var ErrNotLoopback = errors.New("target must resolve to a loopback address")

// Options bound and shape one run.
type Options struct {
	// URL is the collect endpoint, e.g. http://127.0.0.1:4000/api/collect.
	URL string
	// Conns is how many keep-alive connections send concurrently, one request each.
	Conns int
	// Rate is the target of beacons per second over all connections; 0 sends as fast as
	// the connections allow.
	Rate float64
	// N bounds how many beacons are measured (0: no bound); Duration bounds the measured
	// time. At least one must be set.
	N        int64
	Duration time.Duration
	// Warmup is sent before measuring and not counted.
	Warmup time.Duration
	// Seed makes the traffic reproducible; sender i uses Seed+i.
	Seed uint64
	// Pool is how many beacons are generated before the run, shared out among the
	// senders and sent round-robin, so generating them costs nothing while measuring.
	Pool int
	// Timeout bounds one request.
	Timeout time.Duration
}

// Result is one run's measurement. Latencies are in milliseconds; with a fixed Rate they
// are measured from when a beacon was due, not when it was sent, so a stalled server
// shows up in the tail instead of silently lowering the send rate.
type Result struct {
	Target     string           `json:"target,omitempty"`
	Conns      int              `json:"conns"`
	Rate       float64          `json:"rate"`
	Seconds    float64          `json:"seconds"`
	Sent       int64            `json:"sent"`
	Accepted   int64            `json:"accepted"`
	Status     map[string]int64 `json:"status"`
	Errors     int64            `json:"errors"`
	SentPerSec float64          `json:"sent_per_sec"`
	AcceptedPS float64          `json:"accepted_per_sec"`
	P50        float64          `json:"p50_ms"`
	P90        float64          `json:"p90_ms"`
	P99        float64          `json:"p99_ms"`
	Max        float64          `json:"max_ms"`
	FirstError string           `json:"first_error,omitempty"`
}

// String is the result as one line of text.
func (r Result) String() string {
	return fmt.Sprintf("%s sent=%d accepted=%d status=%v errors=%d in %.1fs: %.0f accepted/s, latency p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms",
		orDash(r.Target), r.Sent, r.Accepted, r.Status, r.Errors, r.Seconds, r.AcceptedPS, r.P50, r.P90, r.P99, r.Max)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// CheckLoopback resolves raw's host and refuses it unless every address is loopback.
func CheckLoopback(ctx context.Context, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parse url: %w", err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("url %q: want http://", raw)
	}
	host := u.Hostname()
	if host == "" {
		return nil, fmt.Errorf("url %q: no host", raw)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else if addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host); err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", host)
	}
	for _, a := range addrs {
		if !a.Unmap().IsLoopback() {
			return nil, fmt.Errorf("%s resolves to %s: %w", host, a, ErrNotLoopback)
		}
	}
	return u, nil
}

func (o Options) validate() error {
	switch {
	case o.Conns < 1 || o.Conns > 10000:
		return fmt.Errorf("conns %d: want 1..10000", o.Conns)
	case o.Rate < 0:
		return fmt.Errorf("rate %g: want 0 (as fast as possible) or more", o.Rate)
	case o.N < 0 || o.Duration < 0 || o.Warmup < 0:
		return errors.New("n, duration and warmup cannot be negative")
	case o.N == 0 && o.Duration == 0:
		return errors.New("set -n or -duration (or both) to bound the run")
	}
	return nil
}

// request is a beacon ready to send.
type request struct {
	uri string
	b   traffic.Beacon
	ct  string
}

// sender is one connection's loop and its own counts.
type sender struct {
	reqs   []request
	hist   Histogram
	status [600]int64
	errs   int64
	sent   int64
	first  error
}

// Run sends beacons for sites to o.URL until o.N beacons or o.Duration have been measured
// (after o.Warmup), or ctx ends.
func Run(ctx context.Context, o Options, sites []traffic.Site) (Result, error) {
	if err := o.validate(); err != nil {
		return Result{}, err
	}
	u, err := CheckLoopback(ctx, o.URL)
	if err != nil {
		return Result{}, err
	}
	if o.Pool <= 0 {
		o.Pool = 100000
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	senders, err := prepare(o, u, sites)
	if err != nil {
		return Result{}, err
	}
	client := &fasthttp.HostClient{
		Addr:                u.Host,
		MaxConns:            o.Conns,
		ReadTimeout:         o.Timeout,
		WriteTimeout:        o.Timeout,
		MaxIdleConnDuration: time.Minute,
		MaxConnWaitTimeout:  o.Timeout,
	}
	defer client.CloseIdleConnections()

	start := time.Now()
	measureFrom := start.Add(o.Warmup)
	var stopAt time.Time
	if o.Duration > 0 {
		stopAt = measureFrom.Add(o.Duration)
	}
	var tickets atomic.Int64 // beacons handed out, warmup included
	var measured atomic.Int64
	var wg sync.WaitGroup
	for _, s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.loop(ctx, client, o, start, measureFrom, stopAt, &tickets, &measured)
		}()
	}
	wg.Wait()
	end := time.Now()
	if !stopAt.IsZero() && end.After(stopAt) && o.N == 0 {
		end = stopAt
	}

	res := Result{Target: u.Host, Conns: o.Conns, Rate: o.Rate, Status: map[string]int64{}}
	var hist Histogram
	for _, s := range senders {
		hist.Merge(&s.hist)
		res.Sent += s.sent
		res.Errors += s.errs
		for code, c := range s.status {
			if c > 0 {
				res.Status[strconv.Itoa(code)] += c
			}
		}
		if s.first != nil && res.FirstError == "" {
			res.FirstError = s.first.Error()
		}
	}
	res.Accepted = res.Status["202"]
	res.Seconds = end.Sub(measureFrom).Seconds()
	if res.Seconds > 0 {
		res.SentPerSec = float64(res.Sent) / res.Seconds
		res.AcceptedPS = float64(res.Accepted) / res.Seconds
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	res.P50, res.P90, res.P99, res.Max = ms(hist.Quantile(.5)), ms(hist.Quantile(.9)), ms(hist.Quantile(.99)), ms(hist.Max())
	return res, nil
}

// prepare generates each sender's share of the pool from its own seed.
func prepare(o Options, u *url.URL, sites []traffic.Site) ([]*sender, error) {
	per := max(o.Pool/o.Conns, 64)
	base := *u
	base.RawQuery = ""
	senders := make([]*sender, o.Conns)
	for i := range senders {
		g, err := traffic.New(o.Seed+uint64(i), sites, traffic.Options{})
		if err != nil {
			return nil, err
		}
		s := &sender{reqs: make([]request, per)}
		for j := range s.reqs {
			b := g.Next()
			q := u.Query()
			q.Set("t", b.Token)
			base.RawQuery = q.Encode()
			ct := "application/json"
			if j%2 == 0 {
				ct = "text/plain;charset=UTF-8" // what sendBeacon sends
			}
			s.reqs[j] = request{uri: base.String(), b: b, ct: ct}
		}
		senders[i] = s
	}
	return senders, nil
}

func (s *sender) loop(ctx context.Context, client *fasthttp.HostClient, o Options, start, measureFrom, stopAt time.Time,
	tickets, measured *atomic.Int64) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) / o.Rate)
	}
	for i := 0; ; i++ {
		if ctx.Err() != nil {
			return
		}
		t := tickets.Add(1) - 1
		due := time.Now()
		if interval > 0 {
			due = start.Add(time.Duration(t) * interval)
			if wait := time.Until(due); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
		// A beacon due after the window, or still unsent when the window has ended (the
		// target fell behind the rate), is not sent: what a fixed rate delivered is what
		// went out within the window, so a server that cannot keep up lowers the sent
		// rate instead of stretching the run.
		if !stopAt.IsZero() && (!due.Before(stopAt) || time.Now().After(stopAt)) {
			return
		}
		inWindow := !due.Before(measureFrom)
		if inWindow && o.N > 0 && measured.Add(1) > o.N {
			return
		}
		r := &s.reqs[i%len(s.reqs)]
		req.Reset()
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetRequestURI(r.uri)
		req.Header.SetContentType(r.ct)
		req.Header.SetUserAgent(r.b.UserAgent)
		req.Header.Set("X-Forwarded-For", r.b.IP)
		req.SetBodyRaw(r.b.Body)
		sentAt := time.Now()
		if interval == 0 {
			due = sentAt
		}
		err := client.DoTimeout(req, resp, o.Timeout)
		lat := time.Since(due)
		if !inWindow {
			continue
		}
		s.sent++
		if err != nil {
			s.errs++
			if s.first == nil {
				s.first = err
			}
			continue
		}
		code := resp.StatusCode()
		if code >= 0 && code < len(s.status) {
			s.status[code]++
		}
		s.hist.Record(lat)
	}
}
