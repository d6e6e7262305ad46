package event

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
)

// decodeCases are wire forms the fast decoder takes (fast: true) or leaves to
// encoding/json; either way Decode must agree with encoding/json.
func decodeCases(t testing.TB) []struct {
	name string
	in   string
	fast bool
} {
	e := fixture()
	full, err := Encode(&e)
	if err != nil {
		t.Fatal(err)
	}
	bare := fixture()
	bare.Hostname, bare.Referrer, bare.RefSource, bare.ScreenW, bare.ScreenH, bare.DurationMS, bare.Props = "", "", "", 0, 0, 0, nil
	minimal, err := Encode(&bare)
	if err != nil {
		t.Fatal(err)
	}
	golden, err := os.ReadFile("testdata/event_v1.golden.json")
	if err != nil {
		t.Fatal(err)
	}
	f := string(full)
	return []struct {
		name string
		in   string
		fast bool
	}{
		{"as ingest writes it", f, true},
		{"no optional fields", string(minimal), true},
		{"golden file", string(golden), true},
		{"white space everywhere", " {\n\t\"v\" : 1 , \"n\":\"x\",\"props\" : { \"a\" : \"b\" } }\r\n", true},
		{"empty object", `{}`, true},
		{"empty props", `{"v":1,"props":{}}`, true},
		{"duplicate field, last wins", `{"n":"a","n":"b"}`, true},
		{"unicode text", `{"p":"/ünï/日本/😀"}`, true},
		{"negative and zero", `{"vid":-0,"sw":0,"d":-5}`, true},
		{"largest int64", `{"vid":9223372036854775807}`, true},
		{"props duplicate key", `{"props":{"a":"1","a":"2"}}`, true},

		{"escaped string", `{"p":"/a\"b"}`, false},
		{"unicode escape", `{"p":"\u00fc"}`, false},
		{"invalid UTF-8", "{\"p\":\"a\xffb\"}", false},
		{"raw control character", "{\"p\":\"a\x01b\"}", false},
		{"unknown field", `{"v":1,"extra":[1,{"x":null}],"n":"a"}`, false},
		{"other spelling", `{"V":1,"N":"a"}`, false},
		{"null value", `{"n":null}`, false},
		{"null props", `{"props":null}`, false},
		{"props twice", `{"props":{"a":"1"},"props":{"b":"2"}}`, false},
		{"prop value a number", `{"props":{"a":1}}`, false},
		{"float", `{"site":1.5}`, false},
		{"float that is whole", `{"site":1.0}`, false},
		{"exponent", `{"site":1e3}`, false},
		{"leading zero", `{"site":01}`, false},
		{"overflow", `{"vid":9223372036854775808}`, false},
		{"quoted number", `{"site":"1"}`, false},
		{"uuid in braces", `{"id":"{0192f1a2-3b4c-7d5e-8f60-718293a4b5c6}"}`, false},
		{"uuid without hyphens", `{"id":"0192f1a23b4c7d5e8f60718293a4b5c6"}`, false},
		{"uuid not hex", `{"id":"0192f1a2-3b4c-7d5e-8f60-718293a4b5cz"}`, false},
		{"bad timestamp", `{"ts":"2026-02-30T00:00:00Z"}`, false},
		{"timestamp without zone", `{"ts":"2026-02-01T00:00:00"}`, false},
		{"trailing garbage", f + "x", false},
		{"two objects", f + f, false},
		{"trailing comma", `{"v":1,}`, false},
		{"missing colon", `{"v" 1}`, false},
		{"unterminated", `{"v":1`, false},
		{"unterminated string", `{"p":"abc`, false},
		{"array", `[]`, false},
		{"null", `null`, false},
		{"empty", ``, false},
	}
}

// TestDecodeFastMatchesJSON: where the fast decoder answers it answers as encoding/json
// does, and it answers for what ingest writes.
func TestDecodeFastMatchesJSON(t *testing.T) {
	for _, c := range decodeCases(t) {
		t.Run(c.name, func(t *testing.T) {
			var got Event
			fast := decodeFast([]byte(c.in), &got)
			if fast != c.fast {
				t.Fatalf("decodeFast(%q) took it: %v, want %v", c.in, fast, c.fast)
			}
			checkDecode(t, []byte(c.in))
		})
	}
}

func FuzzDecodeFastMatchesJSON(f *testing.F) {
	for _, c := range decodeCases(f) {
		f.Add([]byte(c.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, b) })
}

// checkDecode: if decodeFast takes b, encoding/json accepts it and decodes the same event;
// and Decode errs exactly when encoding/json or Validate would.
func checkDecode(t *testing.T, b []byte) {
	t.Helper()
	var want Event
	jerr := json.Unmarshal(b, &want)
	var got Event
	if decodeFast(b, &got) {
		if jerr != nil {
			t.Fatalf("decodeFast took %q, which encoding/json refuses: %v", b, jerr)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("decodeFast(%q) differs from encoding/json (-json +fast):\n%s", b, diff)
		}
	}
	dec, err := Decode(b)
	wantErr := jerr
	if wantErr == nil {
		wantErr = want.Validate()
	}
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("Decode(%q) error %v, encoding/json and Validate %v", b, err, wantErr)
	}
	if err == nil {
		if diff := cmp.Diff(want, dec); diff != "" {
			t.Fatalf("Decode(%q) differs from encoding/json (-json +Decode):\n%s", b, diff)
		}
	}
}

// TestDecodedTextsShareOneCopy: the fast path's strings are cut from one copy of the
// message, not from the caller's buffer, which the NATS client may reuse.
func TestDecodedTextsShareOneCopy(t *testing.T) {
	e := fixture()
	b, err := Encode(&e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 'x'
	}
	if got.Path != "/pricing" || got.Props["plan"] != "pro" {
		t.Fatalf("decoded event changed with its buffer: %+v", got)
	}
}

func BenchmarkDecode(b *testing.B) {
	e := fixture()
	e.ID = uuid.New()
	e.Referrer = "https://www.google.com/search?q=" + strings.Repeat("haru+analytics+", 3)
	msg, err := Encode(&e)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var out Event
			if err := json.Unmarshal(msg, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Decode(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}
