package rig

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Metrics are the samples of a Prometheus text exposition, keyed by the series as
// written: the metric name followed by its labels, if any ("name{a=\"b\"}").
type Metrics map[string]float64

// ParseMetrics reads the Prometheus text format: comments and blank lines are skipped,
// every other line is a series, a value and an optional timestamp.
func ParseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// The series ends at the closing brace of its labels (which may hold spaces)
		// or at the first space.
		end := strings.IndexByte(line, ' ')
		if i := strings.IndexByte(line, '{'); i >= 0 && (end < 0 || i < end) {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return nil, fmt.Errorf("metrics line %d: unclosed labels", n)
			}
			end = j + 1
		}
		if end <= 0 || end >= len(line) {
			return nil, fmt.Errorf("metrics line %d: no value", n)
		}
		fields := strings.Fields(line[end:])
		if len(fields) == 0 || len(fields) > 2 {
			return nil, fmt.Errorf("metrics line %d: want a value and an optional timestamp", n)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: %w", n, err)
		}
		m[line[:end]] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	return m, nil
}

// Sum adds every series of the metric name, whatever its labels; ok is false when there
// is none.
func (m Metrics) Sum(name string) (sum float64, ok bool) {
	for k, v := range m {
		if k == name || (strings.HasPrefix(k, name) && len(k) > len(name) && k[len(name)] == '{') {
			sum += v
			ok = true
		}
	}
	return sum, ok
}
