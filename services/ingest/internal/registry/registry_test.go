package registry

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/natstest"
	"github.com/haru-analytics/haru/pkg/natsutil"
)

func sitesBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	js, names := natstest.JetStream(t)
	kv, err := natsutil.EnsureSites(context.Background(), js, names, 1)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func put(t *testing.T, kv jetstream.KeyValue, s event.Site) {
	t.Helper()
	b, err := event.EncodeSite(s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), event.SiteKey(s.Token), b); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond for up to five seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRegistryFollowsBucket(t *testing.T) {
	kv := sitesBucket(t)
	a := event.Site{ID: 1, Token: "aaa", Domain: "a.example", Timezone: "UTC"}
	put(t, kv, a)
	if _, err := kv.Put(context.Background(), "not-a-token", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), event.SiteKey("bad"), []byte("{")); err != nil {
		t.Fatal(err)
	}

	r, err := New(kv, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Lookup("aaa"); !errors.Is(err, ErrNotLoaded) {
		t.Fatalf("Lookup before load = %v, want ErrNotLoaded", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	eventually(t, "first load", r.Loaded)

	got, ok, err := r.Lookup("aaa")
	if diff := cmp.Diff([]any{a, true, nil}, []any{got, ok, err}); diff != "" {
		t.Fatalf("Lookup(aaa) (-want +got):\n%s", diff)
	}
	if _, ok, _ := r.Lookup("bad"); ok {
		t.Fatal("an undecodable entry was loaded")
	}

	b := event.Site{ID: 2, Token: "bbb", Domain: "b.example"}
	put(t, kv, b)
	eventually(t, "new site", func() bool { _, ok, _ := r.Lookup("bbb"); return ok })

	a.Domain = "changed.example"
	put(t, kv, a)
	eventually(t, "changed site", func() bool { s, _, _ := r.Lookup("aaa"); return s.Domain == "changed.example" })

	if err := kv.Delete(context.Background(), event.SiteKey("aaa")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted site", func() bool { _, ok, _ := r.Lookup("aaa"); return !ok })
	if r.Len() != 1 {
		t.Fatalf("Len = %d, want 1", r.Len())
	}
}

// TestRegistrySecrets: a secret is found by its hash's entry and only by the secret
// itself (not its hash, not the site's token); a rotated secret stops working on every
// replica within a second.
func TestRegistrySecrets(t *testing.T) {
	kv := sitesBucket(t)
	site := event.Site{ID: 7, Token: "pub", SecretHash: event.HashSecret("sec1")}
	put(t, kv, site)
	b, err := event.EncodeSite(site)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), event.SecretKey(site.SecretHash), b); err != nil {
		t.Fatal(err)
	}
	r, err := New(kv, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.LookupSecret("sec1"); !errors.Is(err, ErrNotLoaded) {
		t.Fatalf("LookupSecret before load = %v, want ErrNotLoaded", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, "first load", r.Loaded)
	// A second replica watching the same bucket.
	r2, err := New(kv, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done2 := make(chan error, 1)
	go func() { done2 <- r2.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done2 })
	eventually(t, "second replica's first load", r2.Loaded)

	if got, ok, _ := r.LookupSecret("sec1"); !ok || got.ID != 7 {
		t.Fatalf("LookupSecret(sec1) = %+v, %v", got, ok)
	}
	for _, wrong := range []string{"pub", site.SecretHash, "sec2", ""} {
		if _, ok, _ := r.LookupSecret(wrong); ok {
			t.Errorf("LookupSecret(%q) found a site", wrong)
		}
	}
	if _, ok, _ := r.Lookup(site.SecretHash); ok {
		t.Error("a secret hash works as a public token")
	}

	// Rotation as the mirror does it: the new hash is put, the old deleted.
	site.SecretHash = event.HashSecret("sec2")
	b, _ = event.EncodeSite(site)
	if _, err := kv.Put(context.Background(), event.SecretKey(site.SecretHash), b); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(context.Background(), event.SecretKey(event.HashSecret("sec1"))); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, "rotated secret on both replicas", func() bool {
		for _, reg := range []*Registry{r, r2} {
			_, newOK, _ := reg.LookupSecret("sec2")
			_, oldOK, _ := reg.LookupSecret("sec1")
			if !newOK || oldOK {
				return false
			}
		}
		return true
	})
	if took := time.Since(start); took > time.Second {
		t.Fatalf("rotation took %s, want within a second", took)
	}
}
