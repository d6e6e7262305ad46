// Package browsertest starts the headless Chromium that Haru's browser tests drive, set
// up to look like a visitor's browser: a desktop User-Agent, no automation markers, and
// test host names resolved to 127.0.0.1 (ingest ignores pages on local hosts).
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// UserAgent is a current desktop Chrome's, which ingest's bot check lets through.
const UserAgent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36"

// Find returns the browser to drive: $HARU_CHROMIUM, or Chromium or Chrome on the PATH.
// Without one the test skips, except under CI=true, where it fails.
func Find(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("HARU_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is required under CI=true (apt-get install chromium)")
	}
	t.Skip("chromium not found; install it (apt-get install chromium) to run the browser tests")
	return ""
}

// Start launches headless Chromium with hosts mapped to 127.0.0.1 and a width×height
// window, and returns its browser context; it stops with the test.
func Start(t testing.TB, hosts []string, width, height int) context.Context {
	t.Helper()
	chromium := Find(t)
	rules := make([]string, len(hosts))
	for i, h := range hosts {
		rules[i] = "MAP " + h + " 127.0.0.1"
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("host-resolver-rules", strings.Join(rules, ", ")),
		// No automation markers: navigator.webdriver must be false, as for a visitor.
		chromedp.Flag("enable-automation", false),
		chromedp.Flag("disable-blink-features", "AutomationControlled"),
		chromedp.UserAgent(UserAgent),
		chromedp.WindowSize(width, height),
	)
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), opts...)
	browser, browserCancel := chromedp.NewContext(allocCtx)
	// Registered after t.TempDir, so it runs first: the browser stops before its data
	// directory is removed.
	t.Cleanup(func() {
		browserCancel()
		allocCancel()
	})
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return browser
}

// Artifact saves a screenshot or other file of a test under $HARU_ARTIFACTS (the
// temporary directory if unset) and returns its path.
func Artifact(t testing.TB, name string, data []byte) string {
	t.Helper()
	dir := os.Getenv("HARU_ARTIFACTS")
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("artifacts: %v", err)
		return ""
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Errorf("artifact %s: %v", name, err)
		return ""
	}
	return p
}
