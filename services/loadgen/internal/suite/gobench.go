package suite

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// Bench is one result line of `go test -bench`: the benchmark's name without its
// GOMAXPROCS suffix, its iterations and every metric by unit ("ns/op", "events/s").
type Bench struct {
	Name       string
	Iterations int64
	Metrics    map[string]float64
}

var procsSuffix = regexp.MustCompile(`-\d+$`)

// ParseGoBench reads the result lines of `go test -bench` output and ignores the rest.
func ParseGoBench(r io.Reader) ([]Bench, error) {
	var out []Bench
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") || len(fields)%2 != 0 {
			continue
		}
		iters, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			continue
		}
		b := Bench{Name: procsSuffix.ReplaceAllString(fields[0], ""), Iterations: iters, Metrics: map[string]float64{}}
		ok := true
		for i := 2; i < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				ok = false
				break
			}
			b.Metrics[fields[i+1]] = v
		}
		if ok {
			out = append(out, b)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read benchmark output: %w", err)
	}
	return out, nil
}

// Find returns the result of the benchmark named name.
func Find(bs []Bench, name string) (Bench, bool) {
	for _, b := range bs {
		if b.Name == name {
			return b, true
		}
	}
	return Bench{}, false
}

// ErrNoBenchmarks is a go test -bench run that matched no benchmark.
var ErrNoBenchmarks = errors.New("no benchmark results")

// GoBench is one `go test -run ^$ -bench Pattern -benchtime Benchtime Pkg` run: Env
// ("K=V") is added to this process's environment and Args are passed to the test binary.
type GoBench struct {
	Pkg, Pattern, Benchtime string
	Env, Args               []string
}

// RunGoBench runs g, copying its output to log as it comes, and parses its results.
func RunGoBench(ctx context.Context, log io.Writer, g GoBench) ([]Bench, error) {
	args := []string{"test", "-run", "^$", "-bench", g.Pattern, "-benchtime", g.Benchtime, "-count", "1", "-timeout", "60m", g.Pkg}
	if len(g.Args) > 0 {
		args = append(append(args, "-args"), g.Args...)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), g.Env...)
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, log)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go test -bench %s %s: %w", g.Pattern, g.Pkg, err)
	}
	bs, err := ParseGoBench(&out)
	if err != nil {
		return nil, err
	}
	if len(bs) == 0 {
		return nil, fmt.Errorf("go test -bench %s %s: %w", g.Pattern, g.Pkg, ErrNoBenchmarks)
	}
	return bs, nil
}
