package tracker_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/google/go-cmp/cmp"

	"github.com/haru-analytics/haru/tracker"
	"github.com/haru-analytics/haru/tracker/internal/jsbuild"
)

// Size budgets, gzip -9: the default script must stay tiny; opt-in variants may add a
// little.
const (
	budgetDefault = 1024
	budgetVariant = 1536
)

// TestDistUpToDate rebuilds the sources in memory and compares them with the committed
// dist files of the current version.
func TestDistUpToDate(t *testing.T) {
	built, err := jsbuild.BuildDir(".", tracker.Version)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range built {
		got, err := os.ReadFile(filepath.Join("dist", name))
		if err != nil {
			t.Fatalf("%v: run go generate ./tracker", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("dist/%s differs from a build of src/: run go generate ./tracker", name)
		}
	}
	// No stray file of the current version that the build no longer makes.
	ents, err := os.ReadDir("dist")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), "."+tracker.Version+".js") && built[e.Name()] == nil {
			t.Errorf("dist/%s is not built from src/ any more: delete it", e.Name())
		}
	}
}

// TestReleasedFrozen checks every dist file against the checksum it was released with,
// so a versioned URL, cached for a year, never serves new content.
func TestReleasedFrozen(t *testing.T) {
	sums, err := jsbuild.ReadSums(".")
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("dist")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if filepath.Ext(e.Name()) != ".js" {
			continue
		}
		b, err := os.ReadFile(filepath.Join("dist", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		switch want, ok := sums[e.Name()]; {
		case !ok:
			t.Errorf("dist/%s is not in %s: run go generate ./tracker", e.Name(), jsbuild.SumsFile)
		case want != jsbuild.Sum(b):
			t.Errorf("dist/%s changed after its release: restore it and bump tracker.Version", e.Name())
		}
	}
}

func gzipSize(t testing.TB, b []byte) int {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Len()
}

func TestSizeBudget(t *testing.T) {
	built, err := jsbuild.BuildDir(".", tracker.Version)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range jsbuild.Variants {
		name := jsbuild.FileName(v.Name, tracker.Version)
		budget := budgetVariant
		if v.Name == "haru" {
			budget = budgetDefault
		}
		size := gzipSize(t, built[name])
		t.Logf("%s: %d bytes, %d gzipped (budget %d)", name, len(built[name]), size, budget)
		if size > budget {
			t.Errorf("%s is %d bytes gzipped, over its budget of %d", name, size, budget)
		}
	}
}

// TestDefaultLeavesOutLinks checks the build-time switch really strips the link code.
func TestDefaultLeavesOutLinks(t *testing.T) {
	built, err := jsbuild.BuildDir(".", tracker.Version)
	if err != nil {
		t.Fatal(err)
	}
	if def := built[jsbuild.FileName("haru", tracker.Version)]; bytes.Contains(def, []byte("Outbound")) {
		t.Error("haru.js contains outbound-link code")
	}
	if links := built[jsbuild.FileName("haru.links", tracker.Version)]; !bytes.Contains(links, []byte("Outbound Link: Click")) {
		t.Error("haru.links.js lacks outbound-link code")
	}
}

func TestRoutes(t *testing.T) {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	tracker.Register(app)
	current, err := os.ReadFile(filepath.Join("dist", jsbuild.FileName("haru", tracker.Version)))
	if err != nil {
		t.Fatal(err)
	}
	links, err := os.ReadFile(filepath.Join("dist", jsbuild.FileName("haru.links", tracker.Version)))
	if err != nil {
		t.Fatal(err)
	}
	scripts, err := tracker.Scripts()
	if err != nil {
		t.Fatal(err)
	}
	etag := scripts[jsbuild.FileName("haru", tracker.Version)].ETag

	tests := []struct {
		name       string
		path       string
		header     map[string]string
		wantStatus int
		wantCache  string
		wantBody   []byte
		wantGzip   bool
	}{
		{name: "current", path: "/js/haru.js", wantStatus: 200, wantCache: tracker.CacheCurrent, wantBody: current},
		{name: "versioned", path: "/js/haru." + tracker.Version + ".js", wantStatus: 200, wantCache: tracker.CacheImmutable, wantBody: current},
		{name: "variant current", path: "/js/haru.links.js", wantStatus: 200, wantCache: tracker.CacheCurrent, wantBody: links},
		{name: "variant versioned", path: "/js/haru.links." + tracker.Version + ".js", wantStatus: 200, wantCache: tracker.CacheImmutable, wantBody: links},
		{name: "gzip", path: "/js/haru.js", header: map[string]string{"Accept-Encoding": "gzip, deflate, br"}, wantStatus: 200, wantCache: tracker.CacheCurrent, wantBody: current, wantGzip: true},
		{name: "not modified", path: "/js/haru.js", header: map[string]string{"If-None-Match": etag}, wantStatus: 304, wantCache: tracker.CacheCurrent},
		{name: "not modified weak list", path: "/js/haru.js", header: map[string]string{"If-None-Match": `"x", W/` + etag}, wantStatus: 304, wantCache: tracker.CacheCurrent},
		{name: "other etag", path: "/js/haru.js", header: map[string]string{"If-None-Match": `"stale"`}, wantStatus: 200, wantCache: tracker.CacheCurrent, wantBody: current},
		{name: "unknown version", path: "/js/haru.0.0.0.js", wantStatus: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", tt.path, nil)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := app.Test(req, -1)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantStatus == 404 {
				return
			}
			got := map[string]string{
				"Cache-Control":               resp.Header.Get("Cache-Control"),
				"Access-Control-Allow-Origin": resp.Header.Get("Access-Control-Allow-Origin"),
			}
			want := map[string]string{"Cache-Control": tt.wantCache, "Access-Control-Allow-Origin": "*"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("headers (-want +got):\n%s", diff)
			}
			if resp.Header.Get("ETag") == "" {
				t.Fatal("no ETag")
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantStatus == 304 {
				if len(body) != 0 {
					t.Fatalf("304 with a body of %d bytes", len(body))
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/javascript") {
				t.Fatalf("Content-Type %q", ct)
			}
			if tt.wantGzip {
				if ce := resp.Header.Get("Content-Encoding"); ce != "gzip" {
					t.Fatalf("Content-Encoding %q, want gzip", ce)
				}
				zr, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				if body, err = io.ReadAll(zr); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(body, tt.wantBody) {
				t.Fatalf("body differs from the dist file (%d bytes, want %d)", len(body), len(tt.wantBody))
			}
		})
	}
}
