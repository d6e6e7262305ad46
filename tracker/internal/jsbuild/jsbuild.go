// Package jsbuild minifies the tracker's JavaScript sources into the files served from
// tracker/dist. The build program and the test that keeps dist current share it, so
// both produce the same bytes.
package jsbuild

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/evanw/esbuild/pkg/api"
)

// Variant is one script built from the tracker source with a set of features compiled in.
type Variant struct {
	// Name is the file's base name without version or extension, as in /js/<Name>.js.
	Name string
	// Links compiles in outbound-link and file-download tracking.
	Links bool
}

// Variants are every script the tracker ships. haru.js stays within the small budget;
// the others are opt-in and may be larger.
var Variants = []Variant{
	{Name: "haru"},
	{Name: "haru.links", Links: true},
}

// Source is the tracker source every variant is built from, relative to tracker/.
const Source = "src/haru.js"

// FileName is the dist file of variant name at version: the version is part of the
// name so a versioned URL can be cached forever.
func FileName(name, version string) string { return name + "." + version + ".js" }

// Build minifies src into every variant at version, keyed by FileName.
func Build(src []byte, version string) (map[string][]byte, error) {
	if version == "" || strings.ContainsAny(version, "/ */") {
		return nil, fmt.Errorf("build tracker: bad version %q", version)
	}
	out := make(map[string][]byte, len(Variants))
	for _, v := range Variants {
		res := api.Transform(string(src), api.TransformOptions{
			Sourcefile:        Source,
			Loader:            api.LoaderJS,
			Target:            api.ES2017,
			MinifyWhitespace:  true,
			MinifyIdentifiers: true,
			MinifySyntax:      true,
			LegalComments:     api.LegalCommentsNone,
			Charset:           api.CharsetUTF8,
			Define:            map[string]string{"LINKS": fmt.Sprint(v.Links)},
			Banner:            "/* " + v.Name + ".js " + version + " */",
		})
		if len(res.Errors) > 0 {
			msgs := api.FormatMessages(res.Errors, api.FormatMessagesOptions{Kind: api.ErrorMessage})
			return nil, fmt.Errorf("build tracker %s: %s", v.Name, strings.Join(msgs, "\n"))
		}
		out[FileName(v.Name, version)] = res.Code
	}
	return out, nil
}

// BuildDir builds the tracker whose root (the directory holding src/ and dist/) is dir.
func BuildDir(dir, version string) (map[string][]byte, error) {
	src, err := os.ReadFile(filepath.Join(dir, Source))
	if err != nil {
		return nil, fmt.Errorf("read tracker source: %w", err)
	}
	return Build(src, version)
}
