package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs the benchmark briefly: every beacon must be accepted by both targets and
// the ingest run's events must reach the stream.
func TestSmoke(t *testing.T) {
	var out bytes.Buffer
	rep, err := Run(context.Background(), Options{
		Duration: time.Second, N: 2000, Conns: 4, Sites: 20, SteadyRate: 200, Seed: 3, Pool: 2000,
	}, &out)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	for _, r := range []struct {
		name           string
		sent, accepted int64
		errs           int64
	}{
		{"bare", rep.Bare.Sent, rep.Bare.Accepted, rep.Bare.Errors},
		{"ingest", rep.Ingest.Sent, rep.Ingest.Accepted, rep.Ingest.Errors},
		{"steady", rep.Steady.Sent, rep.Steady.Accepted, rep.Steady.Errors},
		{"bare steady", rep.BareSteady.Sent, rep.BareSteady.Accepted, rep.BareSteady.Errors},
	} {
		if r.accepted == 0 || r.accepted != r.sent || r.errs != 0 {
			t.Errorf("%s: sent %d, accepted %d, errors %d: want all accepted\n%s", r.name, r.sent, r.accepted, r.errs, out.String())
		}
	}
	if rep.Stored < uint64(rep.Ingest.Accepted) {
		t.Errorf("stream holds %d events after %d accepted: beacons were dropped", rep.Stored, rep.Ingest.Accepted)
	}
	if !strings.Contains(out.String(), "| ingest (JetStream PubAck) |") || rep.PeakRSSKiB <= 0 {
		t.Errorf("report lacks the table or the peak RSS:\n%s", out.String())
	}
}
