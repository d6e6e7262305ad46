package suite

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Verdict is whether a row meets its goal.
type Verdict string

const (
	Met     Verdict = "yes"
	Missed  Verdict = "NO"
	NoGoal  Verdict = ""
	Pending Verdict = "pending"
	Failed  Verdict = "error"
)

// Row is one line of the results table.
type Row struct {
	// Section is the benchmark the row belongs to ("1 ingest").
	Section string
	// Measure says what was measured; Result is the figure.
	Measure string
	Result  string
	// Baseline is the same measure of the baseline in the same run, if any, and Ratio
	// Result over Baseline.
	Baseline string
	Ratio    string
	Goal     string
	Verdict  Verdict
}

// Table is the suite's result.
type Table struct {
	Title string
	// Setup describes the machine and the mode, one line each.
	Setup []string
	Rows  []Row
	// Notes follow the table, one line each.
	Notes []string
}

// Add appends rows.
func (t *Table) Add(rows ...Row) { t.Rows = append(t.Rows, rows...) }

var header = []string{"benchmark", "measure", "result", "baseline", "ratio", "goal", "met"}

func (r Row) cells() []string {
	return []string{r.Section, r.Measure, r.Result, r.Baseline, r.Ratio, r.Goal, string(r.Verdict)}
}

// Markdown writes the table as a markdown document.
func (t *Table) Markdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n", t.Title)
	for _, s := range t.Setup {
		fmt.Fprintf(&b, "- %s\n", s)
	}
	if len(t.Setup) > 0 {
		b.WriteString("\n")
	}
	writeRow := func(cells []string) {
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" " + escapeCell(c) + " |")
		}
		b.WriteString("\n")
	}
	writeRow(header)
	b.WriteString("|")
	for range header {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range t.Rows {
		writeRow(r.cells())
	}
	if len(t.Notes) > 0 {
		b.WriteString("\n")
		for _, n := range t.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// escapeCell keeps a value inside its markdown cell.
func escapeCell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

// Text writes the table as aligned plain text.
func (t *Table) Text(w io.Writer) error {
	rows := [][]string{header}
	for _, r := range t.Rows {
		rows = append(rows, r.cells())
	}
	width := make([]int, len(header))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	var b strings.Builder
	b.WriteString(t.Title + "\n")
	for _, s := range t.Setup {
		b.WriteString("  " + s + "\n")
	}
	for n, r := range rows {
		for i, c := range r {
			if i > 0 {
				b.WriteString("  ")
			}
			b.WriteString(c + strings.Repeat(" ", width[i]-len([]rune(c))))
		}
		b.WriteString("\n")
		if n == 0 {
			for i, wd := range width {
				if i > 0 {
					b.WriteString("  ")
				}
				b.WriteString(strings.Repeat("-", wd))
			}
			b.WriteString("\n")
		}
	}
	for _, n := range t.Notes {
		b.WriteString("* " + n + "\n")
	}
	lines := strings.Split(b.String(), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	_, err := io.WriteString(w, strings.Join(lines, "\n"))
	return err
}

// atLeast judges a figure that should reach goal.
func atLeast(v, goal float64) Verdict {
	if v >= goal {
		return Met
	}
	return Missed
}

// atMost judges a figure that should stay under goal.
func atMost(v, goal float64) Verdict {
	if v <= goal {
		return Met
	}
	return Missed
}

// ratio formats a/b as "0.62x" (three decimals under 0.1), or "" without a baseline.
func ratio(a, b float64) string {
	switch {
	case b == 0:
		return ""
	case a/b < 0.1:
		// Two significant digits, so a ratio of 0.0003 does not read as 0.
		return strconv.FormatFloat(a/b, 'g', 2, 64) + "x"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// perSec formats a rate: "41,200/s".
func perSec(v float64) string { return thousands(v) + "/s" }

// thousands formats v rounded, with commas.
func thousands(v float64) string {
	neg := v < 0
	if neg {
		v = -v
	}
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// mib formats KiB as MiB.
func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

// ms formats milliseconds.
func ms(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f ms", v)
	}
	return fmt.Sprintf("%.1f ms", v)
}

// msDur formats a duration in milliseconds.
func msDur(d time.Duration) string { return ms(float64(d.Microseconds()) / 1000) }
