// Package bot decides which beacons are not a person viewing a page: crawlers, headless
// browsers, monitors and speculative prefetches. Such beacons are answered 202 like any
// other (a bot learns nothing from the answer) but are dropped with a counted reason.
package bot

import "bytes"

// Reasons a beacon is dropped, used as metric label values.
const (
	ReasonUserAgent = "bot_user_agent"
	ReasonPrefetch  = "prefetch"
)

// uaMarks are lower-case substrings of User-Agents that are never a person, on top of the
// UA parser's own bot flag.
var uaMarks = []string{
	"bot", "crawl", "spider", "slurp", "headless", "phantomjs", "lighthouse", "pingdom",
	"facebookexternalhit", "python-requests", "python-urllib", "scrapy", "httpclient",
	"okhttp", "java/", "libwww", "preview", "monitor", "synthetic", "selenium", "puppeteer",
	"playwright", "prerender",
}

// tools are command-line clients the parser calls bots but that we accept: the
// quick-start's curl example and hand-written tests must count. A scraper can forge any
// User-Agent anyway, so refusing these buys little.
var tools = []string{"curl/", "wget/", "go-http-client/"}

// Request is what the check reads from a beacon's request.
type Request struct {
	// Agent is UserAgent's verdict on the beacon's User-Agent: it depends on that string
	// alone, so a caller may keep it per User-Agent.
	Agent string
	// Purpose, SecPurpose and XMoz are the headers browsers set on prefetches.
	Purpose, SecPurpose, XMoz string
}

// Check returns why r is not a person, or "" when it may be one: a prefetch first, then
// the User-Agent's verdict.
func Check(r Request) string {
	if isPrefetch(r.Purpose) || isPrefetch(r.SecPurpose) || isPrefetch(r.XMoz) {
		return ReasonPrefetch
	}
	return r.Agent
}

// UserAgent is the verdict on a User-Agent alone (parserBot is the UA parser's
// bot flag): ReasonUserAgent or "". It depends on nothing else, so it may be cached per
// User-Agent.
func UserAgent(ua string, parserBot bool) string {
	for _, t := range tools {
		if hasPrefixFold(ua, t) {
			return ""
		}
	}
	if parserBot {
		return ReasonUserAgent
	}
	// Lower the User-Agent once, on the stack for any ordinary length, then let the
	// vectorised bytes.Contains scan it for each mark.
	var buf [512]byte
	lowered := appendLower(buf[:0], ua)
	for _, m := range uaMarkBytes {
		if bytes.Contains(lowered, m) {
			return ReasonUserAgent
		}
	}
	return ""
}

var uaMarkBytes = func() [][]byte {
	out := make([][]byte, len(uaMarks))
	for i, m := range uaMarks {
		out[i] = []byte(m)
	}
	return out
}()

func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		dst = append(dst, lower(s[i]))
	}
	return dst
}

// isPrefetch matches "prefetch" and Chrome's "prefetch;prerender" or "prefetch;anonymous-client-ip".
func isPrefetch(h string) bool {
	return hasPrefixFold(h, "prefetch") || containsFold(h, "prerender")
}

// containsFold is strings.Contains with ASCII case folding of s; sub is lower-case. It
// avoids lowering a copy of every User-Agent on the hot path.
func containsFold(s, sub string) bool {
	n := len(sub)
	if n == 0 {
		return true
	}
	first := sub[0]
	for i := 0; i+n <= len(s); i++ {
		if lower(s[i]) != first {
			continue
		}
		j := 1
		for j < n && lower(s[i+j]) == sub[j] {
			j++
		}
		if j == n {
			return true
		}
	}
	return false
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && containsFold(s[:len(prefix)], prefix)
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
