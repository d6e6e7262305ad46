package config

import (
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEnv(t *testing.T) {
	vars := map[string]string{
		"A_INT": "42", "A_BAD_INT": "x", "A_DUR": "250ms", "A_BAD_DUR": "soon",
		"A_SIZE": "2 MiB", "A_LIST": " a, ,b ", "A_BOOL": "true", "A_STR": "  v  ",
	}
	env := NewEnv(func(k string) string { return vars[k] })
	got := []any{
		env.Int("A_INT", 1), env.Int("A_MISSING", 7), env.Duration("A_DUR", 0),
		env.Int64("A_SIZE", 0), env.List("A_LIST", nil), env.Bool("A_BOOL", false), env.String("A_STR", ""),
	}
	want := []any{42, 7, 250 * time.Millisecond, int64(2 << 20), []string{"a", "b"}, true, "v"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("values (-want +got):\n%s", diff)
	}
	if env.Err() != nil {
		t.Fatalf("unexpected error %v", env.Err())
	}
	env.Int("A_BAD_INT", 0)
	env.Duration("A_BAD_DUR", 0)
	err := env.Err()
	if err == nil || !strings.Contains(err.Error(), "A_BAD_INT") || !strings.Contains(err.Error(), "A_BAD_DUR") {
		t.Fatalf("Err() = %v, want both bad variables named", err)
	}
}

func TestPrintMasks(t *testing.T) {
	type inner struct{ URL string }
	cfg := struct {
		DB     string
		Key    string `secret:"true"`
		Empty  string `secret:"true"`
		NATS   inner
		hidden string
	}{DB: "postgres://u:hunter2@db/haru", Key: "k3y", NATS: inner{URL: "nats://a:b@n:4222"}, hidden: "x"}
	var b strings.Builder
	Print(&b, "test", cfg)
	out := b.String()
	for _, leak := range []string{"hunter2", "k3y", ":b@", "hidden"} {
		if strings.Contains(out, leak) {
			t.Fatalf("Print leaked %q:\n%s", leak, out)
		}
	}
	for _, want := range []string{"DB: postgres://u:***@db/haru", "Key: ***", "NATS.URL: nats://a:***@n:4222", "Empty: \n"} {
		if !strings.Contains(out+"\n", want) {
			t.Fatalf("Print output lacks %q:\n%s", want, out)
		}
	}
}

func TestMaskURL(t *testing.T) {
	for raw, want := range map[string]string{
		"postgres://haru@db:5432/haru?password=s3cret&sslmode=require": "postgres://haru@db:5432/haru?password=***&sslmode=require",
		"nats://tok:s3cret@n1:4222,nats://tok:s3cret@n2:4222":          "nats://tok:***@n1:4222,nats://tok:***@n2:4222",
		"postgres://u:pa#ss@db/haru":                                   "***",
		"postgres://u@db/haru":                                         "postgres://u@db/haru",
		"nats://127.0.0.1:4222":                                        "nats://127.0.0.1:4222",
	} {
		if got := MaskURL(raw); got != want {
			t.Errorf("MaskURL(%q) = %q, want %q", raw, got, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"2 MiB": 2 << 20, "96MiB": 96 << 20, "1GB": 1e9, "512": 512, "8589934591GiB": 8589934591 << 30} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"17179869184GiB", "9223372036854775807KB", "-5MiB", "lots", ""} {
		if got, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", bad, got)
		}
	}
}

func TestSetMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(before)
	SetMemoryLimit(96<<20, func(string) string { return "" })
	if got := debug.SetMemoryLimit(-1); got != 96<<20 {
		t.Fatalf("limit %d, want 96 MiB", got)
	}
	SetMemoryLimit(200<<20, func(k string) string { return map[string]string{"GOMEMLIMIT": "1GiB"}[k] })
	if got := debug.SetMemoryLimit(-1); got != 96<<20 {
		t.Fatalf("limit %d with GOMEMLIMIT set, want it left at 96 MiB", got)
	}
	SetMemoryLimit(0, func(string) string { return "" })
	if got := debug.SetMemoryLimit(-1); got != 96<<20 {
		t.Fatalf("limit %d after 0, want it left at 96 MiB", got)
	}
}
