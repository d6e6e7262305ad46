package query

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"

	"github.com/haru-analytics/haru/services/query/internal/account"
)

// commonZones are offered as suggestions in the timezone fields; any IANA name is
// accepted.
var commonZones = []string{
	"UTC", "Europe/London", "Europe/Dublin", "Europe/Lisbon", "Europe/Paris", "Europe/Berlin", "Europe/Madrid",
	"Europe/Rome", "Europe/Amsterdam", "Europe/Brussels", "Europe/Zurich", "Europe/Stockholm", "Europe/Warsaw",
	"Europe/Athens", "Europe/Helsinki", "Europe/Istanbul", "Europe/Kyiv", "Europe/Moscow", "Africa/Cairo",
	"Africa/Johannesburg", "Africa/Lagos", "Africa/Nairobi", "Asia/Dubai", "Asia/Kolkata", "Asia/Bangkok",
	"Asia/Singapore", "Asia/Shanghai", "Asia/Hong_Kong", "Asia/Seoul", "Asia/Tokyo", "Australia/Perth",
	"Australia/Sydney", "Pacific/Auckland", "America/Sao_Paulo", "America/Argentina/Buenos_Aires",
	"America/Mexico_City", "America/Bogota", "America/New_York", "America/Chicago", "America/Denver",
	"America/Phoenix", "America/Los_Angeles", "America/Anchorage", "Pacific/Honolulu", "America/Toronto",
	"America/Vancouver",
}

func siteForm(c *fiber.Ctx) account.SiteInput {
	return account.SiteInput{
		Name: c.FormValue("name"), Domain: c.FormValue("domain"), Timezone: strings.TrimSpace(c.FormValue("timezone")),
		AllowAnyHost: c.FormValue("allow_any_host") == "1",
	}
}

func formOf(in account.SiteInput) map[string]string {
	return map[string]string{"name": in.Name, "domain": in.Domain, "timezone": in.Timezone}
}

func invalidMessage(err error) string {
	return strings.TrimPrefix(err.Error(), account.ErrInvalid.Error()+": ")
}

func (s *Service) sitesPage(c *fiber.Ctx, d pageData) error {
	sites, err := s.accounts.SitesOf(c.UserContext(), c.Locals(localUser).(int64))
	if err != nil {
		return err
	}
	d.Title, d.Sites, d.Timezones = "Sites", sites, commonZones
	return s.render(c, "sites", d)
}

func (s *Service) handleSitesPage(c *fiber.Ctx) error { return s.sitesPage(c, pageData{}) }

func (s *Service) handleCreateSite(c *fiber.Ctx) error {
	in := siteForm(c)
	site, err := s.accounts.CreateSite(c.UserContext(), c.Locals(localUser).(int64), in)
	if errors.Is(err, account.ErrInvalid) {
		return s.sitesPage(c.Status(fiber.StatusBadRequest), pageData{Error: invalidMessage(err), Form: formOf(in)})
	}
	if err != nil {
		return err
	}
	return c.Redirect(fmt.Sprintf("/app/sites/%d/settings", site.ID), fiber.StatusSeeOther)
}

// shareView is a share link as its site's settings page lists it.
type shareView struct {
	ID                  int64
	URL, Label, Created string
	Password            bool
}

// origin is where visitors' browsers reach this service: HARU_PUBLIC_URL, else the
// origin of the request.
func (s *Service) origin(c *fiber.Ctx) string {
	if o := s.publicOrigin(); o != "" {
		return o
	}
	return c.BaseURL()
}

// snippet is the tag a site's pages embed, exactly as it must be pasted.
func (s *Service) snippet(c *fiber.Ctx, site account.Site) string {
	ingest := strings.TrimSuffix(s.cfg.IngestURL, "/")
	if ingest == "" {
		ingest = s.origin(c)
	}
	return fmt.Sprintf(`<script defer src="%s/js/haru.js" data-api="%s" data-token="%s"></script>`, ingest, ingest, site.Token)
}

func (s *Service) sitePage(c *fiber.Ctx, site account.Site, d pageData) error {
	links, err := s.accounts.ShareLinksOf(c.UserContext(), site.UserID, site.ID)
	if err != nil {
		return err
	}
	for _, l := range links {
		d.Links = append(d.Links, shareView{ID: l.ID, URL: s.origin(c) + "/share/" + l.Slug, Label: l.Label,
			Created: l.CreatedAt.Format("2006-01-02"), Password: l.HasPassword()})
	}
	if d.Rebuild, err = s.accounts.PendingRebuild(c.UserContext(), site.ID); err != nil {
		return err
	}
	if d.Form == nil {
		d.Form = formOf(account.SiteInput{Name: site.Name, Domain: site.Domain, Timezone: site.Timezone})
	}
	d.Title, d.Site, d.Snippet, d.Timezones = site.Name+" settings", site, s.snippet(c, site), commonZones
	return s.render(c, "site", d)
}

func (s *Service) handleSitePage(c *fiber.Ctx) error {
	return s.sitePage(c, c.Locals(localSite).(account.Site), pageData{Notice: noticeOf(c.Query("done"))})
}

func (s *Service) handleUpdateSite(c *fiber.Ctx) error {
	site := c.Locals(localSite).(account.Site)
	in := siteForm(c)
	_, err := s.accounts.UpdateSite(c.UserContext(), site.UserID, site.ID, in)
	if errors.Is(err, account.ErrInvalid) {
		return s.sitePage(c.Status(fiber.StatusBadRequest), site, pageData{Error: invalidMessage(err), Form: formOf(in)})
	}
	if err != nil {
		return err
	}
	return c.Redirect(fmt.Sprintf("/app/sites/%d/settings?done=saved", site.ID), fiber.StatusSeeOther)
}

func (s *Service) handleRotate(c *fiber.Ctx) error {
	site := c.Locals(localSite).(account.Site)
	if _, err := s.accounts.RotateToken(c.UserContext(), site.UserID, site.ID); err != nil {
		return err
	}
	return c.Redirect(fmt.Sprintf("/app/sites/%d/settings?done=rotated", site.ID), fiber.StatusSeeOther)
}

// handleCreateSecret gives the site a new secret key for the batch endpoint and shows
// it once.
func (s *Service) handleCreateSecret(c *fiber.Ctx) error {
	site := c.Locals(localSite).(account.Site)
	secret, err := s.accounts.CreateSiteSecret(c.UserContext(), site.ID)
	if err != nil {
		return err
	}
	return s.sitePage(c, site, pageData{NewKey: secret})
}

// handleDeleteSite removes the site with its data once the owner typed its domain, and
// closes every stream showing it.
func (s *Service) handleDeleteSite(c *fiber.Ctx) error {
	site := c.Locals(localSite).(account.Site)
	if !strings.EqualFold(strings.TrimSpace(c.FormValue("confirm")), site.Domain) {
		return s.sitePage(c.Status(fiber.StatusBadRequest), site, pageData{Error: "Type the site's domain to confirm its deletion."})
	}
	if err := s.accounts.DeleteSite(c.UserContext(), site.UserID, site.ID); err != nil {
		return err
	}
	s.web.streams.end(siteKey(site.ID))
	return c.Redirect("/app", fiber.StatusSeeOther)
}

func (s *Service) handleCreateShare(c *fiber.Ctx) error {
	site := c.Locals(localSite).(account.Site)
	_, err := s.accounts.CreateShareLink(c.UserContext(), site.UserID, site.ID, c.FormValue("label"), c.FormValue("password"))
	if errors.Is(err, account.ErrInvalid) {
		return s.sitePage(c.Status(fiber.StatusBadRequest), site, pageData{Error: invalidMessage(err)})
	}
	if err != nil {
		return err
	}
	return c.Redirect(fmt.Sprintf("/app/sites/%d/settings?done=shared", site.ID), fiber.StatusSeeOther)
}

func (s *Service) handleDeleteShare(c *fiber.Ctx) error {
	site := c.Locals(localSite).(account.Site)
	id, err := strconv.ParseInt(c.Params("share"), 10, 64)
	if err != nil {
		return account.ErrNotFound
	}
	if err := s.accounts.DeleteShareLink(c.UserContext(), site.UserID, site.ID, id); err != nil {
		return err
	}
	s.web.streams.end(shareKey(id))
	return c.Redirect(fmt.Sprintf("/app/sites/%d/settings?done=unshared", site.ID), fiber.StatusSeeOther)
}

// handleSiteStatus streams whether the site has received data: "waiting" until its
// first event is stored, then "receiving". It rechecks whenever the writer announces an
// update of the site.
func (s *Service) handleSiteStatus(c *fiber.Ctx) error {
	siteID := c.Locals(localSite).(account.Site).ID
	updates := make(chan *nats.Msg, 4)
	sub, err := s.nc.ChanSubscribe(s.names.UpdatedSubject(siteID), updates)
	if err != nil {
		return fmt.Errorf("subscribe to site updates: %w", err)
	}
	last := ""
	check := func(w eventConn) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		has, err := s.accounts.HasEvents(ctx, siteID)
		if err != nil {
			return err
		}
		state := map[bool]string{false: "waiting", true: "receiving"}[has]
		if state == last {
			return nil
		}
		last = state
		return w.send(eventFrame("status", []byte(`"`+state+`"`)))
	}
	return streamEvents(s, c, updates, check,
		func(w eventConn, _ *nats.Msg) error {
			if last == "receiving" {
				return nil
			}
			return check(w)
		},
		func() { _ = sub.Unsubscribe() })
}
