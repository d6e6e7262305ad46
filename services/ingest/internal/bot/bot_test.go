package bot

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	firefox := "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{"browser", Request{UserAgent: firefox}, ""},
		{"empty", Request{}, ""},
		{"curl counts", Request{UserAgent: "curl/8.5.0", ParserBot: true}, ""},
		{"wget counts", Request{UserAgent: "Wget/1.21", ParserBot: true}, ""},
		{"parser bot", Request{UserAgent: "SomethingOdd/1.0", ParserBot: true}, ReasonUserAgent},
		{"googlebot", Request{UserAgent: "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}, ReasonUserAgent},
		{"headless", Request{UserAgent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36"}, ReasonUserAgent},
		{"spider", Request{UserAgent: "Baiduspider+(+http://www.baidu.com/search/spider.htm)"}, ReasonUserAgent},
		{"crawler", Request{UserAgent: "SomeCrawler/2.0"}, ReasonUserAgent},
		{"purpose prefetch", Request{UserAgent: firefox, Purpose: "prefetch"}, ReasonPrefetch},
		{"sec-purpose", Request{UserAgent: firefox, SecPurpose: "prefetch;prerender"}, ReasonPrefetch},
		{"x-moz", Request{UserAgent: firefox, XMoz: "prefetch"}, ReasonPrefetch},
		{"prefetch beats curl", Request{UserAgent: "curl/8", Purpose: "Prefetch"}, ReasonPrefetch},
		{"other purpose", Request{UserAgent: firefox, Purpose: "preview-other"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Check(tt.req); got != tt.want {
				t.Fatalf("Check(%+v) = %q, want %q", tt.req, got, tt.want)
			}
		})
	}
}

func FuzzContainsFold(f *testing.F) {
	f.Add("HeadlessChrome", "headless")
	f.Add("", "bot")
	f.Fuzz(func(t *testing.T, s, sub string) {
		sub = strings.ToLower(sub)
		want := strings.Contains(asciiLower(s), sub)
		if got := containsFold(s, sub); got != want {
			t.Fatalf("containsFold(%q, %q) = %v, want %v", s, sub, got, want)
		}
	})
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		b[i] = lower(c)
	}
	return string(b)
}

func BenchmarkCheck(b *testing.B) {
	r := Request{UserAgent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36"}
	b.ReportAllocs()
	for b.Loop() {
		if Check(r) != "" {
			b.Fatal("a browser flagged")
		}
	}
}
