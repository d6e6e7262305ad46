// Command build minifies the tracker sources into tracker/dist. Run it with
// `go generate ./tracker` (or `go run ./tracker/build` from the repository root) after
// changing tracker/src, and commit the result: the Go build needs no JS toolchain.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/haru-analytics/haru/tracker"
	"github.com/haru-analytics/haru/tracker/internal/jsbuild"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "build tracker:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	dir := fs.String("dir", "tracker", "the tracker directory, holding src/ and dist/")
	if err := fs.Parse(args); err != nil {
		return err
	}
	files, err := jsbuild.BuildDir(*dir, tracker.Version)
	if err != nil {
		return err
	}
	sums, err := jsbuild.ReadSums(*dir)
	if err != nil {
		return err
	}
	if err := jsbuild.CheckReleased(sums, files); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	// Files of earlier versions stay: their immutable URLs must keep working.
	for _, name := range names {
		path := filepath.Join(*dir, "dist", name)
		if err := os.WriteFile(path, files[name], 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		fmt.Printf("%s %d bytes\n", path, len(files[name]))
		sums[name] = jsbuild.Sum(files[name])
	}
	// New files join the released list; the lines of older ones never change.
	all := make([]string, 0, len(sums))
	for name := range sums {
		all = append(all, name)
	}
	sort.Strings(all)
	var b strings.Builder
	for _, name := range all {
		fmt.Fprintf(&b, "%s  %s\n", sums[name], name)
	}
	path := filepath.Join(*dir, jsbuild.SumsFile)
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
