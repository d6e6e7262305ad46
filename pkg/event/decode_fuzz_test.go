package event

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzDecode feeds the writer's decoder what a stream could hold. It never panics; what
// it refuses is an ErrDecode (poison, terminated) or an ErrNewerVersion (left for an
// upgraded writer), and what it accepts is storable and encodes back to the same event.
func FuzzDecode(f *testing.F) {
	e, err := New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), 7, PageviewName)
	if err != nil {
		f.Fatal(err)
	}
	e.Path, e.Props = "/a", map[string]string{"k": "v"}
	good, err := Encode(&e)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{string(good), `{}`, `{"v":1}`, `null`, `[]`, `{"v":1,"ts":"0000-01-01T00:00:00Z"}`, "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrDecode) && !errors.Is(err, ErrNewerVersion) {
				t.Fatalf("Decode(%q) = %v: neither an ErrDecode nor an ErrNewerVersion", b, err)
			}
			return
		}
		out, err := Encode(&got)
		if err != nil {
			t.Fatalf("Decode(%q) accepted an event Encode refuses: %v", b, err)
		}
		again, err := Decode(out)
		if err != nil {
			t.Fatalf("re-decode of %q: %v", out, err)
		}
		// Empty properties are not written, so {} comes back as none.
		if diff := cmp.Diff(got, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip of %q changed the event (-first +second):\n%s", b, diff)
		}
	})
}

// FuzzDecodeContracts: the site registry entries and the updated signals read from NATS
// never panic their decoders.
func FuzzDecodeContracts(f *testing.F) {
	f.Add([]byte(`{"id":1,"domain":"example.com","tz":"Europe/Berlin"}`))
	f.Add([]byte(`{"site":1,"events":2,"from":"2026-03-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = DecodeSite(b)
		_, _ = DecodeUpdated(b)
	})
}
