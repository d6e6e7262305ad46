package collect

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/haru-analytics/haru/pkg/event"
)

func TestParseBatch(t *testing.T) {
	items, err := ParseBatch([]byte(`{"events":[
		{"p":"/a","ip":"2001:db8::1","ua":"UA","key":"k"},
		{"p":"/b","ip":"::ffff:192.0.2.1","x":{"nested":[1,"s"]}},
		{"p":"\u0000"},
		{"p":"/c","ip":"fe80::1%eth0"},
		{"key":""},
		{"ua":"` + strings.Repeat("u", MaxUALen+1) + `"},
		[1,2],
		{"p":"/dup","ip":"192.0.2.1","ip":"192.0.2.2"}
	],"other":{"ignored":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 8 {
		t.Fatalf("%d items", len(items))
	}
	a := items[0]
	if a.Err != nil || a.Path != "/a" || a.IP != netip.MustParseAddr("2001:db8::1") || a.UserAgent != "UA" || a.Key != "k" || a.Name != event.PageviewName {
		t.Fatalf("item 0 = %+v", a)
	}
	if b := items[1]; b.Err != nil || b.IP != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("item 1 = %+v (mapped IPv4 is unmapped; an unknown field's content is skipped)", b)
	}
	for i, field := range map[int]string{2: "p", 3: "ip", 4: "key", 5: "ua", 6: "", 7: "ip"} {
		if items[i].Err == nil || items[i].Err.Field != field {
			t.Errorf("item %d error = %v, want one naming %q", i, items[i].Err, field)
		}
	}
}

func TestParseBatchWhole(t *testing.T) {
	tests := map[string]struct {
		body string
		want error
	}{
		"too many":  {`{"events":[` + strings.Repeat(`{},`, MaxBatchItems) + `{}]}`, ErrTooMany},
		"too large": {`{"events":[{"p":"` + strings.Repeat("a", MaxBatchBytes) + `"}]}`, ErrTooLarge},
	}
	for name, tt := range tests {
		if _, err := ParseBatch([]byte(tt.body)); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tt.want)
		}
	}
	for _, bad := range []string{``, `[]`, `{"events":null}`, `{"events":[}`, `{"events":[{"p":"x}]}`, `{"events":[{}]`, `{"events":[{}]}}`, `{"events":[{}] "x":1}`} {
		if _, err := ParseBatch([]byte(bad)); err == nil {
			t.Errorf("ParseBatch(%q) accepted", bad)
		}
	}
	if items, err := ParseBatch([]byte(`{"events":[` + strings.Repeat(`{},`, MaxBatchItems-1) + `{}]}`)); err != nil || len(items) != MaxBatchItems {
		t.Fatalf("a full batch: %d items, %v", len(items), err)
	}
}

func FuzzParseBatch(f *testing.F) {
	for _, s := range []string{
		`{"events":[{}]}`, `{"events":[{"p":"/a","ip":"192.0.2.1","ua":"x","key":"k"},{"sw":"x"},"s",1,null]}`,
		`{"events":[{"p":"\u0000"}],"x":[{"a":"\"\\"}]}`, `{"events":[{"p":"\"}]}`, "{\"events\":[{\"p\":\"\xff\"}]}",
		`{"events":[]}`, `{"events":{}}`, `{}`, `[`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		items, err := ParseBatch(body)
		if err != nil {
			return
		}
		allOK := true
		for _, it := range items {
			allOK = allOK && it.Err == nil
		}
		// Invalid JSON inside one event is that event's error; elsewhere it is the body's.
		if allOK && !json.Valid(body) {
			t.Fatalf("ParseBatch accepted invalid JSON %q", body)
		}
		if len(items) == 0 || len(items) > MaxBatchItems {
			t.Fatalf("ParseBatch returned %d items", len(items))
		}
		for i, it := range items {
			if it.Err != nil {
				continue
			}
			for _, s := range []string{it.Path, it.Referrer, it.URL, it.Name, it.UserAgent, it.Key} {
				if !event.Storable(s) {
					t.Fatalf("item %d: accepted unstorable text %q", i, s)
				}
			}
			if it.IP.IsValid() && (it.IP.Is4In6() || it.IP.Zone() != "") {
				t.Fatalf("item %d: address %s", i, it.IP)
			}
		}
	})
}
