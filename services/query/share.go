package query

import (
	"fmt"
	"strconv"

	"github.com/gofiber/fiber/v2"

	"github.com/haru-analytics/haru/services/query/internal/account"
)

// shareCookie names the cookie holding a link's pass once its password was entered; it
// is scoped to the link's path.
func shareCookie(l account.ShareLink) string { return "haru_share_" + strconv.FormatInt(l.ID, 10) }

// withShare loads the share link of :slug and its site. A link with a password also
// needs its pass cookie; without it a page shows the password form and a data route
// answers 401. A missing or revoked link is a 404.
func (s *Service) withShare(c *fiber.Ctx) error {
	l, site, err := s.accounts.ShareLinkBySlug(c.UserContext(), c.Params("slug"))
	if err != nil {
		return err
	}
	if l.HasPassword() && !l.CheckPass(c.Cookies(shareCookie(l))) {
		if c.Method() == fiber.MethodGet && c.Route().Path == "/share/:slug" {
			return s.render(c.Status(fiber.StatusUnauthorized), "share_password", pageData{Title: "Password required", Share: true, Slug: l.Slug})
		}
		return fiber.NewError(fiber.StatusUnauthorized, "this share link needs its password")
	}
	c.Locals(localShare, l)
	c.Locals(localSite, site)
	return c.Next()
}

func (s *Service) handleShareDashboard(c *fiber.Ctx) error {
	site := c.Locals(localSite).(account.Site)
	l := c.Locals(localShare).(account.ShareLink)
	return s.renderDashboard(c, site, "/share/"+l.Slug+"/data", true)
}

// handleSharePassword checks a link's password, rate-limited per link and per IP, and
// on success stores the link's pass in a cookie scoped to the link.
func (s *Service) handleSharePassword(c *fiber.Ctx) error {
	l, _, err := s.accounts.ShareLinkBySlug(c.UserContext(), c.Params("slug"))
	if err != nil {
		return err
	}
	if !l.HasPassword() {
		return c.Redirect("/share/"+l.Slug, fiber.StatusSeeOther)
	}
	d := pageData{Title: "Password required", Share: true, Slug: l.Slug}
	if !s.web.sharePass.allow(fmt.Sprintf("link:%d", l.ID)) || !s.web.sharePass.allow("ip:"+s.clientIP(c)) {
		d.Error = errTooMany.Message
		return s.render(c.Status(fiber.StatusTooManyRequests), "share_password", d)
	}
	if !l.CheckPassword(c.FormValue("password")) {
		d.Error = "Wrong password."
		return s.render(c.Status(fiber.StatusUnauthorized), "share_password", d)
	}
	c.Cookie(&fiber.Cookie{
		Name: shareCookie(l), Value: l.Pass(), Path: "/share/" + l.Slug, HTTPOnly: true,
		SameSite: fiber.CookieSameSiteLaxMode, Secure: s.secure(c),
	})
	return c.Redirect("/share/"+l.Slug, fiber.StatusSeeOther)
}
