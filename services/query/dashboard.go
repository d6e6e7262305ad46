package query

import (
	"github.com/gofiber/fiber/v2"

	"github.com/haru-analytics/haru/services/query/internal/account"
)

// figure is one of the dashboard's top figures.
type figure struct{ Key, Label string }

// panel is a dashboard breakdown card; its tabs switch between dimensions.
type panel struct {
	Name, Title string
	Tabs        []tab
}

type tab struct{ Dim, Label string }

var dashboardFigures = []figure{
	{"visitors", "Unique visitors"}, {"pageviews", "Pageviews"}, {"visits", "Visits"},
	{"views_per_visit", "Views per visit"}, {"bounce_rate", "Bounce rate"}, {"visit_duration", "Visit duration"},
}

var dashboardPanels = []panel{
	{"pages", "Pages", []tab{{"page", "Top"}, {"entry_page", "Entry"}, {"exit_page", "Exit"}}},
	{"sources", "Sources", []tab{{"source", "Source"}, {"utm_source", "UTM source"}, {"utm_medium", "Medium"}, {"utm_campaign", "Campaign"}}},
	{"locations", "Locations", []tab{{"country", "Countries"}, {"region", "Regions"}}},
	{"devices", "Devices", []tab{{"browser", "Browser"}, {"os", "OS"}, {"device", "Device"}, {"screen", "Screen"}}},
	{"events", "Events", []tab{{"event", "Events"}, {"props", "Properties"}}},
}

func (s *Service) handleDashboardPage(c *fiber.Ctx) error {
	site := c.Locals(localSite).(account.Site)
	return s.renderDashboard(c, site, "/app/sites/"+c.Params("site")+"/data", false)
}

// renderDashboard serves the dashboard's shell: its controls and empty cards paint at
// once, and dashboard.js fills them from the data routes under base.
func (s *Service) renderDashboard(c *fiber.Ctx, site account.Site, base string, share bool) error {
	d := pageData{
		Title: site.Name, Site: site, Share: share, DataBase: base,
		Figures: dashboardFigures, Panels: dashboardPanels,
	}
	// After a change of timezone, the days before it are counted again in the new zone:
	// until then they may be the old zone's, which the page says.
	var err error
	if d.Rebuild, err = s.accounts.PendingRebuild(c.UserContext(), site.ID); err != nil {
		return err
	}
	return s.render(c, "dashboard", d)
}
