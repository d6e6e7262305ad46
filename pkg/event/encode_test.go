package event

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
)

var tricky = []string{"", "plain", `quote " and \ back`, "<script>&amp;</script>", "tab\tnl\nret\r", "\b\f\x00\x01\x1f\x7f",
	"ünï©ødé 日本語 😀", "\u2028\u2029", "bad \xff\xfe utf8", "\xed\xa0\x80", "trailing \xc3"}

// TestEncodeMatchesJSON: the hand-written encoder is byte for byte encoding/json's
// (without HTML escaping).
func TestEncodeMatchesJSON(t *testing.T) {
	for i, s := range tricky {
		e := fixture()
		e.Path, e.Referrer, e.Name, e.Region = s, s, s, s
		e.Props = map[string]string{s: s, "z": s, "a": "1"}
		if i%2 == 0 {
			e.Hostname, e.ScreenW, e.DurationMS, e.Props = "", 0, 0, nil
		}
		checkEncode(t, &e)
	}
}

func FuzzEncodeMatchesJSON(f *testing.F) {
	for _, s := range tricky {
		f.Add(s, s, int64(1), 1920)
	}
	f.Fuzz(func(t *testing.T, a, b string, n int64, w int) {
		e := fixture()
		e.Path, e.UTMTerm, e.Visitor, e.ScreenW = a, b, n, w
		e.Time = time.Unix(0, n%(1<<60)).UTC()
		e.Props = map[string]string{a: b, b: a}
		checkEncode(t, &e)
	})
}

func checkEncode(t *testing.T, e *Event) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		t.Fatal(err)
	}
	want := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	got, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode differs from encoding/json:\n got %s\nwant %s", got, want)
	}
}

func BenchmarkEncode(b *testing.B) {
	e := fixture()
	e.ID = uuid.New()
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(&e)
		}
	})
	b.Run("appendEvent", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = Encode(&e)
		}
	})
}
