package collect

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/haru-analytics/haru/pkg/event"
)

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name string
		body string
		want Payload
	}{
		{"minimal", `{}`, Payload{Name: "pageview"}},
		{"tracker", `{"p":"/home","r":"https://google.com","sw":1920,"sh":1080}`,
			Payload{Path: "/home", Referrer: "https://google.com", ScreenW: 1920, ScreenH: 1080, Name: "pageview"}},
		{"all fields", ` {"n":"signup","d":1500,"u":"https://a.example/x?utm_source=nl#top","h":true,"props":{"plan":"pro"}} `,
			Payload{Name: "signup", DurationMS: 1500, URL: "https://a.example/x?utm_source=nl#top", HashMode: true, Props: map[string]string{"plan": "pro"}}},
		{"escapes", `{"p":"/caf\u00e9\/x\n","n":"\ud83d\ude00"}`, Payload{Path: "/café/x\n", Name: "😀"}},
		{"props scalars become text", `{"props":{"n":3,"f":-1.5e3,"b":true,"c":false}}`,
			Payload{Name: "pageview", Props: map[string]string{"n": "3", "f": "-1.5e3", "b": "true", "c": "false"}}},
		{"unknown fields skipped", `{"x":[1,{"a":null}],"y":null,"p":"/"}`, Payload{Path: "/", Name: "pageview"}},
		{"empty name defaults", `{"n":""}`, Payload{Name: "pageview"}},
		{"zero values", `{"sw":0,"d":0,"h":false}`, Payload{Name: "pageview"}},
		{"30 props", `{"props":{` + props(30) + `}}`, Payload{Name: "pageview", Props: propMap(30)}},
		{"send id", `{"p":"/","i":1796515200123}`, Payload{Path: "/", Name: "pageview", SendID: 1796515200123}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.body))
			if err != nil {
				t.Fatalf("Parse(%s) error: %v", tt.body, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("Parse(%s) (-want +got):\n%s", tt.body, diff)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		field string
	}{
		{"empty", ``, ""},
		{"spaces", "  \n", ""},
		{"not json", `hello`, ""},
		{"array", `[]`, ""},
		{"string", `"p"`, ""},
		{"null body", `null`, ""},
		{"trailing garbage", `{"p":"/"}x`, ""},
		{"two objects", `{}{}`, ""},
		{"unterminated", `{"p":"/`, "p"},
		{"missing brace", `{"p":"/"`, "p"},
		{"trailing comma", `{"p":"/",}`, ""},
		{"null path", `{"p":null}`, "p"},
		{"number path", `{"p":1}`, "p"},
		{"array path", `{"p":["/"]}`, "p"},
		{"object referrer", `{"r":{}}`, "r"},
		{"float width", `{"sw":1920.0}`, "sw"},
		{"exp width", `{"sw":1e3}`, "sw"},
		{"string width", `{"sw":"1920"}`, "sw"},
		{"null height", `{"sh":null}`, "sh"},
		{"negative width", `{"sw":-1}`, "sw"},
		{"huge width", `{"sw":100001}`, "sw"},
		{"overflow", `{"d":99999999999999999999}`, "d"},
		{"float send id", `{"i":1796515200123.5}`, "i"},
		{"string send id", `{"i":"1"}`, "i"},
		{"duplicate send id", `{"i":1,"i":2}`, "i"},
		{"leading zero", `{"d":01}`, "d"},
		{"negative duration", `{"d":-5}`, "d"},
		{"duration too long", `{"d":86400001}`, "d"},
		{"bool as string", `{"h":"true"}`, "h"},
		{"bool as number", `{"h":1}`, "h"},
		{"name too long", `{"n":"` + strings.Repeat("a", MaxNameLen+1) + `"}`, "n"},
		{"path too long", `{"p":"` + strings.Repeat("a", MaxPathLen+1) + `"}`, "p"},
		{"escaped path too long", `{"p":"` + strings.Repeat(`\n`, MaxPathLen+1) + `"}`, "p"},
		{"url too long", `{"u":"` + strings.Repeat("a", MaxURLLen+1) + `"}`, "u"},
		{"script url", `{"u":"javascript:alert(1)"}`, "u"},
		{"data url", `{"u":"data:text/html,<b>x</b>"}`, "u"},
		{"relative url", `{"u":"/just/a/path"}`, "u"},
		{"url without host", `{"u":"https:///a"}`, "u"},
		{"not a url", `{"u":"not a url"}`, "u"},
		{"path without slash", `{"p":"javascript:alert(1)"}`, "p"},
		{"raw NUL", "{\"p\":\"/a\x00\"}", "p"},
		{"escaped NUL", `{"p":"/a\u0000"}`, "p"},
		{"escaped NUL in prop", `{"props":{"k":"\u0000"}}`, "props.k"},
		{"invalid UTF-8", "{\"p\":\"/\xff\"}", "p"},
		{"invalid UTF-8 in key", "{\"props\":{\"\xc3\":\"v\"}}", "props"},
		{"lone surrogate", `{"n":"\ud800"}`, "n"},
		{"low surrogate", `{"n":"\udc00x"}`, "n"},
		{"bad escape", `{"n":"\x"}`, "n"},
		{"control char", "{\"n\":\"a\tb\"}", "n"},
		{"duplicate field", `{"p":"/a","p":"/b"}`, "p"},
		{"props array", `{"props":["a"]}`, "props"},
		{"props null", `{"props":null}`, "props"},
		{"prop null", `{"props":{"k":null}}`, "props.k"},
		{"prop object", `{"props":{"k":{}}}`, "props.k"},
		{"prop array", `{"props":{"k":[]}}`, "props.k"},
		{"prop empty key", `{"props":{"":"v"}}`, "props"},
		{"prop key too long", `{"props":{"` + strings.Repeat("k", MaxPropKeyLen+1) + `":"v"}}`, "props"},
		{"prop value too long", `{"props":{"k":"` + strings.Repeat("v", MaxPropValLen+1) + `"}}`, "props.k"},
		{"duplicate prop", `{"props":{"k":"a","k":"b"}}`, "props.k"},
		{"31 props", `{"props":{` + props(31) + `}}`, "props"},
		{"deep nesting", `{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, "x"},
		{"deep nesting in props", `{"props":{"k":` + strings.Repeat("[", 100) + `}}`, "props.k"},
		{"bad literal", `{"x":nul}`, "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.body))
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Parse(%q) = %v, want a FieldError", tt.body, err)
			}
			if diff := cmp.Diff(tt.field, fe.Field); diff != "" {
				t.Fatalf("Parse(%q) field (-want +got):\n%s\nerror: %v", tt.body, diff, err)
			}
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	body := `{"p":"` + strings.Repeat("a", MaxBodyBytes) + `"}`
	if _, err := Parse([]byte(body)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Parse(%d bytes) = %v, want ErrTooLarge", len(body), err)
	}
}

func props(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":"v"`, i)
	}
	return b.String()
}

func propMap(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%d", i)] = "v"
	}
	return m
}

// FuzzParse checks that Parse never panics, that everything it accepts Postgres can
// store, and that it never accepts what encoding/json calls invalid.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"p":"/home","r":"https://google.com","sw":1920,"sh":1080}`,
		`{"n":"signup","d":1500,"u":"https://a.example/?utm_source=x","h":true,"props":{"a":"b","n":1,"t":true}}`,
		`{"p":"\u0000"}`, `{"p":"\ud83d\ude00"}`, `{"x":[[{"a":[]}]]}`, `{"sw":1.5}`, `{"props":{"k":null}}`,
		"{\"p\":\"\xff\"}", `{"p":"/"} x`, `[`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := Parse(body)
		if err != nil {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("Parse accepted invalid JSON %q", body)
		}
		for _, s := range []string{p.Path, p.Referrer, p.URL, p.Name} {
			if !event.Storable(s) {
				t.Fatalf("Parse accepted unstorable text %q", s)
			}
		}
		if len(p.Props) > MaxProps {
			t.Fatalf("Parse accepted %d props", len(p.Props))
		}
		for k, v := range p.Props {
			if !event.Storable(k) || !event.Storable(v) || k == "" || len(k) > MaxPropKeyLen || len(v) > MaxPropValLen {
				t.Fatalf("Parse accepted prop %q=%q", k, v)
			}
		}
		if !utf8.ValidString(p.Name) || p.Name == "" {
			t.Fatalf("Parse accepted name %q", p.Name)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	body := []byte(`{"n":"pageview","u":"https://www.example.com/blog/post-1?utm_source=newsletter&utm_medium=email","p":"/blog/post-1","r":"https://www.google.com/","sw":1920,"sh":1080,"d":0,"props":{"author":"jo","words":1200}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := Parse(body); err != nil {
			b.Fatal(err)
		}
	}
}
