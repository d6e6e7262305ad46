package salt

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/haru-analytics/haru/pkg/natstest"
	"github.com/haru-analytics/haru/pkg/natsutil"
)

func saltsBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	js, names := natstest.JetStream(t)
	kv, err := natsutil.EnsureSalts(context.Background(), js, names, 1)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestReplicasShareSalt: stores racing to create a date's salt all end up with the one
// that won the atomic create, so every replica hashes a visitor alike.
func TestReplicasShareSalt(t *testing.T) {
	kv := saltsBucket(t)
	ctx := context.Background()
	const replicas = 8
	got := make([]Salt, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		s, err := New(kv, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			v, err := s.ForDate(ctx, "2026-03-01")
			if err != nil {
				t.Errorf("ForDate: %v", err)
			}
			got[i] = v
		})
	}
	wg.Wait()
	for i := 1; i < replicas; i++ {
		if got[i] != got[0] {
			t.Fatalf("replica %d has a different salt", i)
		}
	}
	if got[0] == (Salt{}) {
		t.Fatal("salt is all zero")
	}
	s, _ := New(kv, time.Second)
	other, err := s.ForDate(ctx, "2026-03-02")
	if err != nil {
		t.Fatal(err)
	}
	if other == got[0] {
		t.Fatal("two dates share a salt")
	}
}

func TestCacheStaysSmall(t *testing.T) {
	s, err := New(saltsBucket(t), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for d := 1; d <= 20; d++ {
		date := fmt.Sprintf("2026-03-%02d", d)
		if _, err := s.ForDate(context.Background(), date); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.cache) > 8 {
		t.Fatalf("cache holds %d dates, want at most 8", len(s.cache))
	}
	if _, ok := s.cache["2026-03-01"]; ok {
		t.Fatal("oldest date was not evicted")
	}
}

func TestNewRejectsNil(t *testing.T) {
	if _, err := New(nil, time.Second); err == nil {
		t.Fatal("New(nil) = nil error")
	}
}
