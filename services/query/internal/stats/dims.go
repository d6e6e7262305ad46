package stats

import (
	"strings"

	"github.com/haru-analytics/haru/pkg/event"
)

// dimension is a breakdown or filter dimension: its number in the rollups (migration
// 000002) and its expression over a raw events row e.
type dimension struct {
	name string
	// rollup is the rollup_dims dim, or for entry and exit pages the rollup_visits dim.
	rollup int
	// expr is the dimension's value of events row e (visits row v), cut as the rollups cut
	// it, in SQL: the raw path computes event dimensions by col and rule instead, and the
	// tests check both agree.
	expr string
	// keep is an extra condition on e for a row to count under the dimension: the rollups
	// leave out empty UTM fields and regions, and pageviews as event names.
	keep string
	// visit marks entry and exit pages, a property of visits rather than events.
	visit bool
	// prop is the property key of prop.<key>; props lists the keys.
	prop  string
	props bool
	// col is the events column the raw path reads and rule how it makes the value of it.
	col  string
	rule rawRule
}

// rawRule is how the raw path makes a dimension's value of its events column, as expr
// and keep do in SQL.
type rawRule uint8

const (
	ruleText     rawRule = iota // the text, cut
	ruleNonEmpty                // the text, cut; an empty one does not count
	ruleScreen                  // the screen class of the width
	ruleEvent                   // the event name; pageviews and engagement do not count
)

// screenClass is the screen class of events row e, as the writer classes it.
const screenClass = `CASE WHEN e.screen_w <= 0 THEN ''
	WHEN e.screen_w < 576 THEN 'mobile'
	WHEN e.screen_w < 992 THEN 'tablet'
	WHEN e.screen_w < 1440 THEN 'laptop'
	ELSE 'desktop' END`

var dimensions = map[string]dimension{
	"page":         {rollup: 1, expr: "left(e.path, 1000)", col: "path"},
	"entry_page":   {rollup: 1, expr: "v.entry_page", visit: true},
	"exit_page":    {rollup: 2, expr: "v.exit_page", visit: true},
	"hostname":     {rollup: 2, expr: "left(e.hostname, 1000)", col: "hostname"},
	"source":       {rollup: 3, expr: "left(e.ref_source, 1000)", col: "ref_source"},
	"utm_source":   {rollup: 4, expr: "left(e.utm_source, 1000)", keep: "e.utm_source <> ''", col: "utm_source", rule: ruleNonEmpty},
	"utm_medium":   {rollup: 5, expr: "left(e.utm_medium, 1000)", keep: "e.utm_medium <> ''", col: "utm_medium", rule: ruleNonEmpty},
	"utm_campaign": {rollup: 6, expr: "left(e.utm_campaign, 1000)", keep: "e.utm_campaign <> ''", col: "utm_campaign", rule: ruleNonEmpty},
	"utm_term":     {rollup: 7, expr: "left(e.utm_term, 1000)", keep: "e.utm_term <> ''", col: "utm_term", rule: ruleNonEmpty},
	"utm_content":  {rollup: 8, expr: "left(e.utm_content, 1000)", keep: "e.utm_content <> ''", col: "utm_content", rule: ruleNonEmpty},
	"country":      {rollup: 9, expr: "left(e.country, 1000)", col: "country"},
	"region":       {rollup: 10, expr: "left(e.region, 1000)", keep: "e.region <> ''", col: "region", rule: ruleNonEmpty},
	"browser":      {rollup: 11, expr: "left(e.browser, 1000)", col: "browser"},
	"os":           {rollup: 12, expr: "left(e.os, 1000)", col: "os"},
	"device":       {rollup: 13, expr: "left(e.device, 1000)", col: "device"},
	"screen":       {rollup: 14, expr: screenClass, col: "screen_w", rule: ruleScreen},
	"event":        {rollup: 15, expr: "e.name", keep: "e.name NOT IN ('pageview', 'engagement')", col: "name", rule: ruleEvent},
}

// filterColumn is the plain column a filter compares, so an index on it serves; values
// are at most 1000 bytes, as the rollups cut them.
var filterColumn = map[string]string{
	"page": "e.path", "hostname": "e.hostname", "source": "e.ref_source",
	"utm_source": "e.utm_source", "utm_medium": "e.utm_medium", "utm_campaign": "e.utm_campaign",
	"utm_term": "e.utm_term", "utm_content": "e.utm_content", "country": "e.country",
	"region": "e.region", "browser": "e.browser", "os": "e.os", "device": "e.device",
	"screen": screenClass, "event": "e.name",
	"entry_page": "v.entry_page", "exit_page": "v.exit_page",
}

// dimensionNames lists the dimensions in the order the dashboard shows them.
var dimensionNames = []string{"page", "entry_page", "exit_page", "hostname", "source",
	"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "country",
	"region", "browser", "os", "device", "screen", "event"}

// dashboardPanels are the breakdowns of the dashboard.
var dashboardPanels = []string{"page", "entry_page", "exit_page", "source", "utm_source",
	"utm_medium", "utm_campaign", "country", "region", "browser", "os", "device", "screen",
	"event", "props"}

// lookupDimension resolves a dimension name of field; breakdown allows "props".
func lookupDimension(field, name string, breakdown bool) (dimension, error) {
	if key, ok := strings.CutPrefix(name, "prop."); ok {
		if key == "" || len(key) > maxPropKey || !event.Storable(key) {
			return dimension{}, fieldErr(field, "%s: a property key of 1 to %d bytes of UTF-8 text follows prop.", name, maxPropKey)
		}
		return dimension{name: name, rollup: 16, prop: key}, nil
	}
	if name == "props" && breakdown {
		return dimension{name: name, rollup: 16, props: true}, nil
	}
	d, ok := dimensions[name]
	if !ok {
		hint := ""
		if strings.HasPrefix(name, "prop") {
			hint = " (a property is prop.<key>)"
		}
		return dimension{}, fieldErr(field, "unknown dimension %q%s: want one of %s, prop.<key>%s", name, hint,
			strings.Join(dimensionNames, ", "), map[bool]string{true: " or props", false: ""}[breakdown])
	}
	d.name = name
	return d, nil
}

// breakdownMetrics are the metrics a dimension's rows carry.
func (d dimension) breakdownMetrics() []string {
	switch {
	case d.visit:
		return []string{Visits, BounceRate, VisitDuration}
	case d.name == "event" || d.prop != "" || d.props:
		return []string{Visitors, Events, Pageviews}
	}
	return []string{Visitors, Pageviews}
}

// BreakdownMetrics are the metrics the rows of a breakdown by dimension name carry.
func BreakdownMetrics(name string) []string {
	d, err := lookupDimension("dimension", name, true)
	if err != nil {
		return nil
	}
	return d.breakdownMetrics()
}
