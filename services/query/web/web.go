// Package web holds the dashboard's HTML templates and static files (the stylesheet, the
// scripts and the vendored uPlot chart library, MIT, see static/uplot.LICENSE), embedded
// so the binary serves everything itself: no CDN, no third-party request.
package web

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"path"
)

//go:embed templates/*.html
var templatesFS embed.FS

//go:embed static
var staticFS embed.FS

// Asset is one static file with its content type and a content hash for cache busting.
type Asset struct {
	Body        []byte
	ContentType string
	Version     string
}

// Assets returns the static files by name.
func Assets() (map[string]Asset, error) {
	out := map[string]Asset{}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[path.Base(p)] = Asset{Body: b, ContentType: contentType(p), Version: hex.EncodeToString(sum[:6])}
		return nil
	})
	return out, err
}

func contentType(p string) string {
	switch path.Ext(p) {
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	default:
		return "text/plain; charset=utf-8"
	}
}

// Pages parses every page template with the shared layout; asset names a static file's
// versioned URL.
func Pages(asset func(string) string) (map[string]*template.Template, error) {
	base, err := template.New("layout").Funcs(template.FuncMap{"asset": asset}).ParseFS(templatesFS, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("parse layout: %w", err)
	}
	names, err := fs.Glob(templatesFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		name := path.Base(n)
		if name == "layout.html" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(templatesFS, n)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", name, err)
		}
		pages[name[:len(name)-len(".html")]] = t
	}
	return pages, nil
}
