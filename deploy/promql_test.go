package deploy

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

// selectorNames parses a PromQL expression with Prometheus's own parser and returns the
// series names its selectors read.
func selectorNames(t *testing.T, where, expr string) []string {
	t.Helper()
	e, err := parser.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q: %v", where, expr, err)
		return nil
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok && vs.Name != "" {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names
}

// TestPrometheusRulesParse parses every alert expression with Prometheus's own PromQL
// parser (what `promtool check rules` runs on them) and checks every series a rule reads
// is one the code exports.
func TestPrometheusRulesParse(t *testing.T) {
	var rf ruleFile
	decodeYAML(t, "prometheus/haru-alerts.yml", &rf)
	known := sourceLiterals(t).all
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			where := "alert " + r.Alert
			for _, sel := range selectorNames(t, where, r.Expr) {
				if sel == "up" {
					continue
				}
				for _, m := range metricNames(sel, known) {
					checkMetric(t, where, m, false)
				}
			}
		}
	}
}

// TestGrafanaQueriesParse parses every dashboard query with Prometheus's parser, Grafana's
// variables replaced by what they expand to, and checks the series it reads exist.
func TestGrafanaQueriesParse(t *testing.T) {
	files, _ := filepath.Glob("grafana/dashboards/*.json")
	known := sourceLiterals(t).all
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$job", ".+")
	for _, f := range files {
		var d struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(readFile(t, f), &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				where := f + " panel " + p.Title
				for _, sel := range selectorNames(t, where, vars.Replace(tg.Expr)) {
					for _, m := range metricNames(sel, known) {
						checkMetric(t, where, m, false)
					}
				}
			}
		}
	}
}
