// Package tracker serves haru.js, the script pages embed to send beacons to the collect
// endpoint. The script is built from src/ into dist/ by `go generate` and embedded, so
// the Go build needs no JavaScript toolchain; every file in dist carries its version in
// its name and stays frozen once released.
package tracker

//go:generate go run ./build -dir .

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// Version is the tracker's current version: /js/haru.js serves dist/haru.<Version>.js.
// Bump it whenever src/ changes, so a released versioned URL never changes content.
const Version = "1.2.0"

// Cache-Control of the two kinds of URL: the plain one must pick up a new version
// within minutes, a versioned one never changes.
const (
	CacheCurrent   = "public, max-age=300"
	CacheImmutable = "public, max-age=31536000, immutable"
)

//go:embed dist
var dist embed.FS

// Script is one served file: its bytes, a gzip -9 copy for clients that accept it, and
// an ETag of its content.
type Script struct {
	Body []byte
	Gzip []byte
	ETag string
}

// Scripts returns every file in dist by name (such as "haru.1.0.0.js").
func Scripts() (map[string]*Script, error) {
	ents, err := fs.ReadDir(dist, "dist")
	if err != nil {
		return nil, fmt.Errorf("read tracker dist: %w", err)
	}
	out := map[string]*Script{}
	for _, e := range ents {
		if e.IsDir() || path.Ext(e.Name()) != ".js" {
			continue
		}
		body, err := dist.ReadFile("dist/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("read tracker dist: %w", err)
		}
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
		if _, err := zw.Write(body); err != nil {
			return nil, fmt.Errorf("gzip %s: %w", e.Name(), err)
		}
		if err := zw.Close(); err != nil {
			return nil, fmt.Errorf("gzip %s: %w", e.Name(), err)
		}
		sum := sha256.Sum256(body)
		out[e.Name()] = &Script{Body: body, Gzip: gz.Bytes(), ETag: `"` + hex.EncodeToString(sum[:12]) + `"`}
	}
	return out, nil
}

// Register mounts the tracker's routes on r: /js/<variant>.js serves the current version
// of each variant (haru.js, haru.links.js) with a short cache and an ETag, and
// /js/<variant>.<version>.js serves every version ever shipped, cached for good.
func Register(r fiber.Router) {
	scripts, err := Scripts()
	if err != nil {
		// dist is embedded at compile time; failing to read it is a broken build.
		panic(err)
	}
	names := make([]string, 0, len(scripts))
	for name := range scripts {
		names = append(names, name)
	}
	sort.Strings(names)
	suffix := "." + Version + ".js"
	for _, name := range names {
		s := scripts[name]
		r.Get("/js/"+name, serve(s, CacheImmutable))
		if variant, ok := strings.CutSuffix(name, suffix); ok {
			r.Get("/js/"+variant+".js", serve(s, CacheCurrent))
		}
	}
}

// serve answers with s, or 304 when the client already holds it. The script is loaded
// cross-origin from every tracked site, so it allows any origin.
func serve(s *Script, cacheControl string) fiber.Handler {
	gzETag := strings.TrimSuffix(s.ETag, `"`) + `-gz"`
	return func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderAccessControlAllowOrigin, "*")
		c.Set(fiber.HeaderCacheControl, cacheControl)
		c.Set(fiber.HeaderVary, fiber.HeaderAcceptEncoding)
		c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
		body, etag := s.Body, s.ETag
		gz := strings.Contains(c.Get(fiber.HeaderAcceptEncoding), "gzip")
		if gz {
			body, etag = s.Gzip, gzETag
		}
		c.Set(fiber.HeaderETag, etag)
		if inm := c.Get(fiber.HeaderIfNoneMatch); inm != "" && etagMatch(inm, s.ETag, gzETag) {
			c.Status(fiber.StatusNotModified)
			return nil
		}
		c.Set(fiber.HeaderContentType, "application/javascript; charset=utf-8")
		if gz {
			c.Set(fiber.HeaderContentEncoding, "gzip")
		}
		return c.Send(body)
	}
}

// etagMatch reports whether an If-None-Match header names one of tags; comparison is
// weak, as RFC 9110 asks for If-None-Match.
func etagMatch(header string, tags ...string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" {
			return true
		}
		for _, want := range tags {
			if t == want {
				return true
			}
		}
	}
	return false
}
