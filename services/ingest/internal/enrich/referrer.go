package enrich

import "strings"

// knownSources name the referrers people recognise by brand rather than host. Keys are
// hosts without "www."; a host also matches through its parent domains, so
// "l.facebook.com" is Facebook.
var knownSources = map[string]string{
	"duckduckgo.com":       "DuckDuckGo",
	"search.brave.com":     "Brave Search",
	"ecosia.org":           "Ecosia",
	"startpage.com":        "Startpage",
	"search.naver.com":     "Naver",
	"facebook.com":         "Facebook",
	"fb.com":               "Facebook",
	"fb.me":                "Facebook",
	"messenger.com":        "Facebook",
	"t.co":                 "Twitter",
	"twitter.com":          "Twitter",
	"x.com":                "Twitter",
	"linkedin.com":         "LinkedIn",
	"lnkd.in":              "LinkedIn",
	"reddit.com":           "Reddit",
	"redd.it":              "Reddit",
	"youtube.com":          "YouTube",
	"youtu.be":             "YouTube",
	"instagram.com":        "Instagram",
	"github.com":           "GitHub",
	"news.ycombinator.com": "Hacker News",
	"pinterest.com":        "Pinterest",
	"tiktok.com":           "TikTok",
	"threads.net":          "Threads",
	"bsky.app":             "Bluesky",
	"mastodon.social":      "Mastodon",
	"wikipedia.org":        "Wikipedia",
	"stackoverflow.com":    "Stack Overflow",
	"medium.com":           "Medium",
	"substack.com":         "Substack",
	"chatgpt.com":          "ChatGPT",
	"perplexity.ai":        "Perplexity",
}

// searchBrands are engines with a domain per country (google.de, yahoo.co.jp): a host
// whose label is one of these, followed only by a public suffix of short labels, is the
// brand.
var searchBrands = map[string]string{
	"google": "Google",
	"bing":   "Bing",
	"yahoo":  "Yahoo",
	"yandex": "Yandex",
	"baidu":  "Baidu",
	"ya":     "Yandex",
}

// RefSource reduces a referrer URL to its source: a known name, else the host without
// "www.". A referral from the page's own host or the site's domain is no referral at
// all and gives "".
func RefSource(referrer, pageHost, siteDomain string) string {
	host := refHost(referrer)
	if host == "" {
		return ""
	}
	bare := strings.TrimPrefix(host, "www.")
	if bare == strings.TrimPrefix(pageHost, "www.") || SameSite(host, siteDomain) {
		return ""
	}
	for h := bare; ; {
		if name, ok := knownSources[h]; ok {
			return name
		}
		i := strings.IndexByte(h, '.')
		if i < 0 || !strings.Contains(h[i+1:], ".") {
			break
		}
		h = h[i+1:]
	}
	if name := searchBrand(bare); name != "" {
		return name
	}
	return bare
}

// refHost extracts the host of a referrer; a referrer without a scheme is taken as a
// bare host, as hand-written ones ("google.com") often are.
func refHost(ref string) string {
	if i := strings.Index(ref, "://"); i >= 0 {
		scheme := ref[:i]
		if scheme != "http" && scheme != "https" {
			return "" // android-app://, file://, chrome-extension:// are not web sources
		}
		ref = ref[i+3:]
	}
	if end := strings.IndexAny(ref, "/?#"); end >= 0 {
		ref = ref[:end]
	}
	return Host(ref)
}

// searchBrand names the search engine whose brand is a label of host followed by one or
// two short labels (google.com, google.co.uk), walking the labels in place.
func searchBrand(host string) string {
	for rest := host; ; {
		label, after, more := strings.Cut(rest, ".")
		if name, ok := searchBrands[label]; ok && more && shortSuffix(after) {
			return name
		}
		if !more {
			return ""
		}
		rest = after
	}
}

// shortSuffix reports whether s is one or two labels of at most three bytes each.
func shortSuffix(s string) bool {
	first, second, two := strings.Cut(s, ".")
	if len(first) > 3 {
		return false
	}
	return !two || len(second) <= 3 && !strings.Contains(second, ".")
}
