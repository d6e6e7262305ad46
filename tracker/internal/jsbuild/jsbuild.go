// Package jsbuild minifies the tracker's JavaScript sources into the files served from
// tracker/dist. The build program and the test that keeps dist current share it, so
// both produce the same bytes.
package jsbuild

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
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
			Target:            api.ES2020,
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

// SumsFile lists, in sha256sum format, every dist file ever released. A released file
// never changes: its versioned URL is cached for a year.
const SumsFile = "dist/SHA256SUMS"

// Sum is the SHA-256 of b in hex, as SumsFile records it.
func Sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// ReadSums parses SumsFile under dir: file name to checksum. A missing file is empty.
func ReadSums(dir string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, SumsFile))
	if os.IsNotExist(err) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", SumsFile, err)
	}
	sums := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		sum, name, ok := strings.Cut(line, "  ")
		if !ok || len(sum) != 64 {
			return nil, fmt.Errorf("%s: bad line %q", SumsFile, line)
		}
		sums[name] = sum
	}
	return sums, nil
}

// CheckReleased reports a built file whose name was released with other content: the
// source changed without a new Version.
func CheckReleased(sums map[string]string, files map[string][]byte) error {
	for name, b := range files {
		if want, ok := sums[name]; ok && want != Sum(b) {
			return fmt.Errorf("%s was released with other content: bump tracker.Version after changing src/", name)
		}
	}
	return nil
}
