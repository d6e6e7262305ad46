package query

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/compress"

	"github.com/haru-analytics/haru/pkg/clientip"
	"github.com/haru-analytics/haru/pkg/server"
	"github.com/haru-analytics/haru/services/query/internal/account"
	"github.com/haru-analytics/haru/services/query/web"
)

// The web layer: server-rendered pages for accounts, sites, share links and the
// dashboard, and the dashboard's data routes behind a session or a share link.
//
// Security model, in one place:
//   - sessions are random tokens in an HttpOnly, SameSite=Lax cookie (Secure behind
//     HTTPS); Postgres keeps only their SHA-256;
//   - every state-changing request must come from this origin (Sec-Fetch-Site, else
//     Origin), so no other site can make a logged-in browser act;
//   - a site is reached only through its owner's session or one of its share links:
//     any other site id answers 404, like a missing one;
//   - logging out, deleting a site and revoking a link close the live streams they
//     granted.

const (
	sessionCookie = "haru_session"
	localSession  = "session"
	localShare    = "share"
)

// webState is the web layer's state.
type webState struct {
	pages   map[string]*template.Template
	assets  map[string]web.Asset
	streams *streams
	proxies *clientip.Resolver
	// Attempts: logins per IP and per email, registrations per IP, share passwords per
	// link and per IP.
	loginIP, loginEmail, register, sharePass *attempts
	// passwordCheck bounds a logged-in user's password checks (changing the password,
	// deleting the account): a stolen session must not make them a guessing oracle.
	passwordCheck *attempts
}

func newWebState(cfg Config, now func() time.Time) (*webState, error) {
	header := cfg.ClientIPHeader
	if header == "" {
		header = fiber.HeaderXForwardedFor
	}
	proxies, err := clientip.New(cfg.TrustedProxies, header)
	if err != nil {
		return nil, err
	}
	assets, err := web.Assets()
	if err != nil {
		return nil, fmt.Errorf("web assets: %w", err)
	}
	pages, err := web.Pages(func(name string) string {
		a, ok := assets[name]
		if !ok {
			return "/static/missing-" + name
		}
		return "/static/" + name + "?v=" + a.Version
	})
	if err != nil {
		return nil, err
	}
	return &webState{
		pages: pages, assets: assets, streams: newStreams(), proxies: proxies,
		loginIP:       newAttempts(20, 30*time.Second, now),
		loginEmail:    newAttempts(5, time.Minute, now),
		register:      newAttempts(5, 10*time.Minute, now),
		sharePass:     newAttempts(10, 30*time.Second, now),
		passwordCheck: newAttempts(5, time.Minute, now),
	}, nil
}

// registerWeb mounts the pages, the forms and the dashboard's data routes.
func (s *Service) registerWeb(r fiber.Router) {
	m := s.metrics.observe
	page := []fiber.Handler{m, securityHeaders, s.pageErrors}
	post := append(page[:len(page):len(page)], s.sameOrigin, plainForm)
	with := func(a []fiber.Handler, b ...fiber.Handler) []fiber.Handler {
		return append(a[:len(a):len(a)], b...)
	}
	// A user's pages and forms; owned ones also load the :site if the user owns it.
	pageUser, postUser := with(page, s.requireSession), with(post, s.requireSession)
	pageOwned, postOwned := with(pageUser, s.withSite), with(postUser, s.withSite)

	r.Get("/static/:file", m, compress.New(compress.Config{Level: compress.LevelBestSpeed}), s.handleStatic)
	r.Get("/", with(page, s.handleHome)...)
	r.Get("/login", with(page, s.handleLoginPage)...)
	r.Post("/login", with(post, s.handleLogin)...)
	r.Get("/register", with(page, s.handleRegisterPage)...)
	r.Post("/register", with(post, s.handleRegister)...)
	r.Post("/logout", with(post, s.handleLogout)...)

	r.Get("/app", with(pageUser, s.handleSitesPage)...)
	r.Post("/app/sites", with(postUser, s.handleCreateSite)...)
	r.Get("/app/sites/:site", with(pageOwned, s.handleDashboardPage)...)
	r.Get("/app/sites/:site/settings", with(pageOwned, s.handleSitePage)...)
	r.Post("/app/sites/:site/settings", with(postOwned, s.handleUpdateSite)...)
	r.Post("/app/sites/:site/rotate", with(postOwned, s.handleRotate)...)
	r.Post("/app/sites/:site/secret", with(postOwned, s.handleCreateSecret)...)
	r.Post("/app/sites/:site/delete", with(postOwned, s.handleDeleteSite)...)
	r.Post("/app/sites/:site/shares", with(postOwned, s.handleCreateShare)...)
	r.Post("/app/sites/:site/shares/:share/delete", with(postOwned, s.handleDeleteShare)...)
	r.Get("/app/account", with(pageUser, s.handleAccountPage)...)
	r.Post("/app/account/password", with(postUser, s.handleChangePassword)...)
	r.Post("/app/account/keys", with(postUser, s.handleCreateKey)...)
	r.Post("/app/account/keys/:key/delete", with(postUser, s.handleDeleteKey)...)
	r.Post("/app/account/delete", with(postUser, s.handleDeleteAccount)...)

	r.Get("/share/:slug", with(page, s.withShare, s.handleShareDashboard)...)
	r.Post("/share/:slug", with(post, s.handleSharePassword)...)

	// Data routes answer JSON (and event streams): errors are JSON, auth failures 401.
	r.Get("/app/sites/:site/status", m, mapErrors, s.requireSessionData, s.withSite, s.trackStream, s.handleSiteStatus)
	s.mountData(r.Group("/app/sites/:site/data", m, mapErrors, s.requireSessionData, s.withSite, s.trackStream))
	s.mountData(r.Group("/share/:slug/data", m, mapErrors, s.withShare, s.trackStream))
}

// securityHeaders keeps pages to this origin's scripts and styles, out of frames, and
// their URLs (share links carry a secret) out of other sites' Referer headers. (no-referrer
// would also blank the Origin of this site's own form posts, which the CSRF check reads.)
func securityHeaders(c *fiber.Ctx) error {
	c.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	c.Set("X-Content-Type-Options", "nosniff")
	c.Set("X-Frame-Options", "DENY")
	c.Set("Referrer-Policy", "same-origin")
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Next()
}

// sameOrigin refuses a state-changing request unless the browser says it comes from
// this origin: Sec-Fetch-Site when sent (every current browser), else Origin. A request
// with neither is refused too: forms and fetch from browsers always carry one.
func (s *Service) sameOrigin(c *fiber.Ctx) error {
	switch c.Method() {
	case fiber.MethodGet, fiber.MethodHead, fiber.MethodOptions:
		return c.Next()
	}
	if site := c.Get("Sec-Fetch-Site"); site != "" {
		if site != "same-origin" {
			return errCrossSite
		}
		return c.Next()
	}
	origin := c.Get(fiber.HeaderOrigin)
	if origin == "" || origin == "null" {
		return errCrossSite
	}
	if origin != s.self(c) && origin != s.publicOrigin() {
		return errCrossSite
	}
	return c.Next()
}

// plainForm refuses a form whose body is compressed (server.Compressed), before a
// handler reads it. Browsers never compress form posts.
func plainForm(c *fiber.Ctx) error {
	if server.Compressed(c) {
		return errCompressedForm
	}
	return c.Next()
}

var errCompressedForm = fiber.NewError(fiber.StatusUnsupportedMediaType, "Forms are accepted uncompressed only.")

var errCrossSite = fiber.NewError(fiber.StatusForbidden, "This request did not come from a Haru page, so it was refused.")

// publicOrigin is HARU_PUBLIC_URL's scheme and host, or "" when unset.
func (s *Service) publicOrigin() string {
	u, err := url.Parse(s.cfg.PublicURL)
	if err != nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// secure reports whether cookies must be Secure: the public URL is HTTPS, or the
// request came over TLS.
func (s *Service) secure(c *fiber.Ctx) bool {
	return strings.HasPrefix(s.cfg.PublicURL, "https://") || s.viaTLS(c)
}

// viaTLS reports whether the request came over TLS, directly or through a trusted
// proxy's X-Forwarded-Proto (anyone else's is not believed).
func (s *Service) viaTLS(c *fiber.Ctx) bool {
	if c.Context().IsTLS() {
		return true
	}
	peer, _ := netip.AddrFromSlice(c.Context().RemoteIP())
	return s.web.proxies.Trusted(peer) && strings.EqualFold(c.Get(fiber.HeaderXForwardedProto), "https")
}

// self is this request's own origin, as the browser sees it.
func (s *Service) self(c *fiber.Ctx) string {
	if s.viaTLS(c) {
		return "https://" + c.Hostname()
	}
	return "http://" + c.Hostname()
}

// pageErrors turns a page's errors into an HTML page: a 404 for any site or link the
// visitor may not see, the login page for a missing session.
func (s *Service) pageErrors(c *fiber.Ctx) error {
	err := c.Next()
	if err == nil {
		return nil
	}
	status, title, msg := fiber.StatusInternalServerError, "Something went wrong", "The error was logged; please try again."
	var fe *fiber.Error
	switch {
	case errors.Is(err, account.ErrUnauthorized):
		return c.Redirect("/login?next="+url.QueryEscape(safeNext(c.OriginalURL())), fiber.StatusSeeOther)
	case errors.Is(err, account.ErrNotFound):
		status, title, msg = fiber.StatusNotFound, "Not found", "There is nothing here, or you may not see it."
	case errors.As(err, &fe):
		status, title, msg = fe.Code, "Refused", fe.Message
		if fe.Code == fiber.StatusNotFound {
			title, msg = "Not found", "There is nothing here, or you may not see it."
		}
	}
	if status == fiber.StatusInternalServerError {
		s.log.Error("page", "path", c.Path(), "err", err)
	}
	return s.render(c.Status(status), "error", pageData{Title: title, Message: msg})
}

// pageData is what every page template gets; each page uses its part.
type pageData struct {
	Title, Error, Notice, Message string
	User                          string // the logged-in email
	Share                         bool
	Next                          string
	Form                          map[string]string
	Sites                         []account.Site
	Site                          account.Site
	Snippet                       string
	Links                         []shareView
	Keys                          []account.APIKey
	NewKey                        string
	Timezones                     []string
	Rebuild                       *account.Rebuild // the site's days being counted again in its zone
	Slug                          string
	DataBase                      string
	Figures                       []figure
	Panels                        []panel
}

func (s *Service) render(c *fiber.Ctx, name string, d pageData) error {
	t, ok := s.web.pages[name]
	if !ok {
		return fmt.Errorf("no page template %q", name)
	}
	if ses, ok := c.Locals(localSession).(account.Session); ok && d.User == "" && !d.Share {
		d.User = ses.Email
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", d); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	c.Type("html", "utf-8")
	return c.Send(buf.Bytes())
}

func (s *Service) handleStatic(c *fiber.Ctx) error {
	a, ok := s.web.assets[c.Params("file")]
	if !ok {
		return c.SendStatus(fiber.StatusNotFound)
	}
	c.Set(fiber.HeaderContentType, a.ContentType)
	c.Set("X-Content-Type-Options", "nosniff")
	if c.Query("v") == a.Version {
		c.Set(fiber.HeaderCacheControl, "public, max-age=31536000, immutable")
	} else {
		c.Set(fiber.HeaderCacheControl, "no-cache")
	}
	return c.Send(a.Body)
}

// safeNext keeps a post-login redirect on this site's app pages.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/app") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/app"
	}
	return next
}

// clientIP is the address rate limits count by: the peer, or the client a trusted
// proxy names.
func (s *Service) clientIP(c *fiber.Ctx) string {
	peer, _ := netip.AddrFromSlice(c.Context().RemoteIP())
	return s.web.proxies.ClientIP(peer, func() string { return c.Get(s.web.proxies.Header()) }).String()
}

var errTooMany = fiber.NewError(fiber.StatusTooManyRequests, "Too many attempts. Wait a minute and try again.")
