package event

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

var update = flag.Bool("update", false, "rewrite golden files")

func fixture() Event {
	return Event{
		V:           1,
		ID:          uuid.MustParse("0192f1a2-3b4c-7d5e-8f60-718293a4b5c6"),
		Time:        time.Date(2026, 11, 27, 9, 30, 15, 123456000, time.UTC),
		SiteID:      42,
		Name:        "pageview",
		Visitor:     -7234411234567890123,
		Hostname:    "example.com",
		Path:        "/pricing",
		Referrer:    "https://www.google.com/search?q=haru",
		RefSource:   "Google",
		UTMSource:   "newsletter",
		UTMMedium:   "email",
		UTMCampaign: "launch",
		UTMTerm:     "analytics",
		UTMContent:  "footer",
		Country:     "JP",
		Region:      "JP-13",
		Browser:     "Firefox",
		OS:          "Linux",
		Device:      "desktop",
		ScreenW:     1920,
		ScreenH:     1080,
		DurationMS:  5400,
		Props:       map[string]string{"plan": "pro", "ab": "b"},
	}
}

// TestWireGolden pins the v1 wire format: a change here breaks writers still reading what
// older ingest replicas published.
func TestWireGolden(t *testing.T) {
	golden := filepath.Join("testdata", "event_v1.golden.json")
	e := fixture()
	got, err := Encode(&e)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)+"\n"); diff != "" {
		t.Fatalf("wire format changed (-golden +encoded):\n%s", diff)
	}
	back, err := Decode(want)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(e, back); diff != "" {
		t.Fatalf("golden does not decode to the fixture (-want +got):\n%s", diff)
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr error
		check   func(Event) bool
	}{
		{name: "minimal", in: `{"v":1,"id":"0192f1a2-3b4c-7d5e-8f60-718293a4b5c6","ts":"2026-11-27T09:30:15Z","site":1,"n":"pageview","vid":5,"p":"/"}`,
			check: func(e Event) bool { return e.SiteID == 1 && e.Path == "/" && e.Visitor == 5 }},
		{name: "unknown fields ignored", in: `{"v":1,"id":"0192f1a2-3b4c-7d5e-8f60-718293a4b5c6","ts":"2026-11-27T09:30:15Z","site":1,"n":"x","p":"/","future":{"a":[1]}}`,
			check: func(e Event) bool { return e.Name == "x" }},
		{name: "newer version", in: `{"v":2,"id":"0192f1a2-3b4c-7d5e-8f60-718293a4b5c6","ts":"2026-11-27T09:30:15Z","site":1,"n":"x"}`, wantErr: ErrNewerVersion},
		{name: "newer version without an id", in: `{"v":99,"ts":"2026-11-27T09:30:15Z","site":1,"n":"x"}`, wantErr: ErrDecode},
		{name: "no version", in: `{"id":"0192f1a2-3b4c-7d5e-8f60-718293a4b5c6","ts":"2026-11-27T09:30:15Z","site":1,"n":"x"}`, wantErr: ErrDecode},
		{name: "no id", in: `{"v":1,"ts":"2026-11-27T09:30:15Z","site":1,"n":"x"}`, wantErr: ErrDecode},
		{name: "no time", in: `{"v":1,"id":"0192f1a2-3b4c-7d5e-8f60-718293a4b5c6","site":1,"n":"x"}`, wantErr: ErrDecode},
		{name: "no site", in: `{"v":1,"id":"0192f1a2-3b4c-7d5e-8f60-718293a4b5c6","ts":"2026-11-27T09:30:15Z","n":"x"}`, wantErr: ErrDecode},
		{name: "no name", in: `{"v":1,"id":"0192f1a2-3b4c-7d5e-8f60-718293a4b5c6","ts":"2026-11-27T09:30:15Z","site":1}`, wantErr: ErrDecode},
		{name: "NUL in path", in: `{"v":1,"id":"0192f1a2-3b4c-7d5e-8f60-718293a4b5c6","ts":"2026-11-27T09:30:15Z","site":1,"n":"x","p":"/a\u0000"}`, wantErr: ErrDecode},
		{name: "NUL in prop", in: `{"v":1,"id":"0192f1a2-3b4c-7d5e-8f60-718293a4b5c6","ts":"2026-11-27T09:30:15Z","site":1,"n":"x","props":{"a":"\u0000"}}`, wantErr: ErrDecode},
		{name: "not json", in: `garbage`, wantErr: ErrDecode},
		{name: "wrong type", in: `{"v":"1"}`, wantErr: ErrDecode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Decode([]byte(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Decode() err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode() err = %v", err)
			}
			if !tt.check(e) {
				t.Fatalf("Decode() = %+v", e)
			}
		})
	}
}

func TestNewStampsOnce(t *testing.T) {
	now := time.Date(2026, 11, 27, 23, 59, 59, 999999999, time.FixedZone("JST", 9*3600))
	a, err := New(now, 3, PageviewName)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New(now, 3, PageviewName)
	if a.ID == b.ID || a.ID.Version() != 7 {
		t.Fatalf("ids %v %v: want distinct UUIDv7", a.ID, b.ID)
	}
	if a.Time.Location() != time.UTC || a.Time.Nanosecond()%1000 != 0 {
		t.Fatalf("time %v: want UTC, microseconds", a.Time)
	}
	raw, _ := Encode(&a)
	back, err := Decode(raw)
	if err != nil || !back.Time.Equal(a.Time) {
		t.Fatalf("round trip time %v, err %v; want %v", back.Time, err, a.Time)
	}
}

func TestNames(t *testing.T) {
	n, err := NewNames("haru_test1")
	if err != nil {
		t.Fatal(err)
	}
	got := []string{n.Stream, n.Sites, n.Salts, n.StreamSubjects(), n.EventSubject(7), n.UpdatedSubject(7), n.UpdatedWildcard()}
	want := []string{"HARU_TEST1_EVENTS", "haru_test1_sites", "haru_test1_salts", "haru_test1.events.>", "haru_test1.events.7", "haru_test1.updated.7", "haru_test1.updated.*"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("names (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"", "Haru", "ha.ru", "ha ru", "1haru", "ha>ru"} {
		if _, err := NewNames(bad); err == nil {
			t.Errorf("NewNames(%q) accepted", bad)
		}
	}
}

func TestSiteKey(t *testing.T) {
	tok, ok := TokenFromKey(SiteKey("abc-_9"))
	if !ok || tok != "abc-_9" {
		t.Fatalf("TokenFromKey(SiteKey) = %q, %v", tok, ok)
	}
	if _, ok := TokenFromKey("salt.x"); ok {
		t.Fatal("non-token key accepted")
	}
}

func TestCut(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{{"abc", 5, "abc"}, {"abcdef", 3, "abc"}, {"héllo", 2, "hé"}, {"日本語", 2, "日本"}, {"日本語", 3, "日本語"}, {"", 1, ""}} {
		if got := Cut(c.in, c.n); got != c.want {
			t.Errorf("Cut(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}
