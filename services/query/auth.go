package query

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/haru-analytics/haru/services/query/internal/account"
)

// requireSession loads the session of the cookie, or fails with ErrUnauthorized: the
// login page for a page, a 401 for a data route.
func (s *Service) requireSession(c *fiber.Ctx) error {
	ses, err := s.accounts.SessionByToken(c.UserContext(), c.Cookies(sessionCookie))
	if err != nil {
		return err
	}
	c.Locals(localSession, ses)
	c.Locals(localUser, ses.UserID)
	return c.Next()
}

// requireSessionData is requireSession for the data routes: a 401 that says what is
// missing (the API's message speaks of keys).
func (s *Service) requireSessionData(c *fiber.Ctx) error {
	err := s.requireSession(c)
	if errors.Is(err, account.ErrUnauthorized) {
		return fiber.NewError(fiber.StatusUnauthorized, "not logged in, or the session has ended")
	}
	return err
}

// trackStream records an event stream's connection under the session, share link, API
// key and site that grant it, so ending any of them closes it. The connection is recorded
// before the handler runs, so a grant ended while the stream's first frame is computed
// still closes it, and forgotten after unless the handler started a stream (which forgets
// it when it ends): a refused request or a HEAD leaves its keep-alive connection, which a
// proxy may hand to another viewer next, recorded under nothing.
func (s *Service) trackStream(c *fiber.Ctx) error {
	if !strings.HasSuffix(c.Path(), "/live") && !strings.HasSuffix(c.Path(), "/status") {
		return c.Next()
	}
	var keys []string
	if ses, ok := c.Locals(localSession).(account.Session); ok {
		keys = append(keys, sessionKey(ses.ID))
	}
	if l, ok := c.Locals(localShare).(account.ShareLink); ok {
		keys = append(keys, shareKey(l.ID))
	}
	if id, ok := c.Locals(localAPIKey).(int64); ok {
		keys = append(keys, apiKeyKey(id))
	}
	if site, ok := c.Locals(localSite).(account.Site); ok {
		keys = append(keys, siteKey(site.ID))
	}
	conn := c.Context().Conn()
	s.web.streams.add(conn, keys...)
	err := c.Next()
	if !c.Context().Hijacked() {
		s.web.streams.forget(conn)
	}
	return err
}

func sessionKey(id int64) string { return "session:" + strconv.FormatInt(id, 10) }
func shareKey(id int64) string   { return "share:" + strconv.FormatInt(id, 10) }
func apiKeyKey(id int64) string  { return "key:" + strconv.FormatInt(id, 10) }
func siteKey(id int64) string    { return "site:" + strconv.FormatInt(id, 10) }
func userKey(id int64) string    { return "user:" + strconv.FormatInt(id, 10) }

func (s *Service) handleHome(c *fiber.Ctx) error {
	if s.loggedIn(c) {
		return c.Redirect("/app", fiber.StatusSeeOther)
	}
	return c.Redirect("/login", fiber.StatusSeeOther)
}

func (s *Service) handleLoginPage(c *fiber.Ctx) error {
	if s.loggedIn(c) {
		return c.Redirect(safeNext(c.Query("next")), fiber.StatusSeeOther)
	}
	return s.render(c, "login", pageData{Title: "Log in", Next: c.Query("next")})
}

// loggedIn reports whether the request carries a live session.
func (s *Service) loggedIn(c *fiber.Ctx) bool {
	_, err := s.accounts.SessionByToken(c.UserContext(), c.Cookies(sessionCookie))
	return err == nil
}

// handleLogin checks the rate limits first (per IP and per email, known or not), then
// the password; a wrong password and an unknown email get the same answer after the
// same argon2id work.
func (s *Service) handleLogin(c *fiber.Ctx) error {
	email, password := strings.TrimSpace(c.FormValue("email")), c.FormValue("password")
	d := pageData{Title: "Log in", Next: c.Query("next"), Form: map[string]string{"email": email}}
	if !s.web.loginIP.allow(s.clientIP(c)) || !s.web.loginEmail.allow(strings.ToLower(email)) {
		d.Error = errTooMany.Message
		return s.render(c.Status(fiber.StatusTooManyRequests), "login", d)
	}
	u, err := s.accounts.Authenticate(c.UserContext(), email, password)
	if errors.Is(err, account.ErrBadPassword) {
		d.Error = "Wrong email or password."
		return s.render(c.Status(fiber.StatusUnauthorized), "login", d)
	}
	if err != nil {
		return err
	}
	if err := s.startSession(c, u.ID); err != nil {
		return err
	}
	return c.Redirect(safeNext(c.Query("next")), fiber.StatusSeeOther)
}

func (s *Service) startSession(c *fiber.Ctx, userID int64) error {
	token, err := s.accounts.CreateSession(c.UserContext(), userID)
	if err != nil {
		return err
	}
	c.Cookie(&fiber.Cookie{
		Name: sessionCookie, Value: token, Path: "/", HTTPOnly: true, SameSite: fiber.CookieSameSiteLaxMode,
		Secure: s.secure(c), Expires: s.clock.Now().Add(account.SessionTTL),
	})
	return nil
}

func (s *Service) clearSession(c *fiber.Ctx) {
	c.Cookie(&fiber.Cookie{
		Name: sessionCookie, Value: "", Path: "/", HTTPOnly: true, SameSite: fiber.CookieSameSiteLaxMode,
		Secure: s.secure(c), Expires: time.Unix(0, 0), MaxAge: -1,
	})
}

func (s *Service) handleRegisterPage(c *fiber.Ctx) error {
	if s.loggedIn(c) {
		return c.Redirect("/app", fiber.StatusSeeOther)
	}
	return s.render(c, "register", pageData{Title: "Register"})
}

func (s *Service) handleRegister(c *fiber.Ctx) error {
	email, password := strings.TrimSpace(c.FormValue("email")), c.FormValue("password")
	d := pageData{Title: "Register", Form: map[string]string{"email": email}}
	if !s.web.register.allow(s.clientIP(c)) {
		d.Error = errTooMany.Message
		return s.render(c.Status(fiber.StatusTooManyRequests), "register", d)
	}
	u, err := s.accounts.CreateUser(c.UserContext(), email, password)
	switch {
	case errors.Is(err, account.ErrInvalid):
		d.Error = strings.TrimPrefix(err.Error(), account.ErrInvalid.Error()+": ")
		return s.render(c.Status(fiber.StatusBadRequest), "register", d)
	case errors.Is(err, account.ErrEmailTaken):
		d.Error = "This email cannot be registered. If it is yours, log in instead."
		return s.render(c.Status(fiber.StatusConflict), "register", d)
	case err != nil:
		return err
	}
	if err := s.startSession(c, u.ID); err != nil {
		return err
	}
	return c.Redirect("/app", fiber.StatusSeeOther)
}

// handleLogout ends the session (and its live streams) if there is one; it answers the
// same either way.
func (s *Service) handleLogout(c *fiber.Ctx) error {
	if ses, err := s.accounts.SessionByToken(c.UserContext(), c.Cookies(sessionCookie)); err == nil {
		if err := s.accounts.DeleteSession(c.UserContext(), ses.ID); err != nil {
			return err
		}
		s.web.streams.end(sessionKey(ses.ID))
	}
	s.clearSession(c)
	return c.Redirect("/login", fiber.StatusSeeOther)
}

func (s *Service) accountPage(c *fiber.Ctx, d pageData) error {
	keys, err := s.accounts.APIKeysOf(c.UserContext(), c.Locals(localUser).(int64))
	if err != nil {
		return err
	}
	d.Title, d.Keys = "Account", keys
	return s.render(c, "account", d)
}

func (s *Service) handleAccountPage(c *fiber.Ctx) error {
	return s.accountPage(c, pageData{Notice: noticeOf(c.Query("done"))})
}

// noticeOf is the message a redirect after a successful form shows.
func noticeOf(done string) string {
	return map[string]string{
		"password": "Password changed. Every other browser was logged out.",
		"revoked":  "Key revoked.",
		"saved":    "Saved.",
		"rotated":  "Token rotated: update the snippet on your site.",
		"shared":   "Share link created.",
		"unshared": "Share link revoked.",
	}[done]
}

func (s *Service) handleChangePassword(c *fiber.Ctx) error {
	ses := c.Locals(localSession).(account.Session)
	if !s.web.passwordCheck.allow(userKey(ses.UserID)) {
		return s.accountPage(c.Status(fiber.StatusTooManyRequests), pageData{Error: errTooMany.Message})
	}
	ended, err := s.accounts.ChangePassword(c.UserContext(), ses.UserID, ses.ID, c.FormValue("current"), c.FormValue("password"))
	switch {
	case errors.Is(err, account.ErrBadPassword):
		return s.accountPage(c.Status(fiber.StatusBadRequest), pageData{Error: "The current password is wrong."})
	case errors.Is(err, account.ErrInvalid):
		return s.accountPage(c.Status(fiber.StatusBadRequest), pageData{Error: strings.TrimPrefix(err.Error(), account.ErrInvalid.Error()+": ")})
	case err != nil:
		return err
	}
	for _, id := range ended {
		s.web.streams.end(sessionKey(id))
	}
	return c.Redirect("/app/account?done=password", fiber.StatusSeeOther)
}

func (s *Service) handleCreateKey(c *fiber.Ctx) error {
	key, err := s.accounts.CreateAPIKey(c.UserContext(), c.Locals(localUser).(int64), c.FormValue("name"))
	if errors.Is(err, account.ErrInvalid) {
		return s.accountPage(c.Status(fiber.StatusBadRequest), pageData{Error: "A key needs a name of 1 to 100 characters."})
	}
	if err != nil {
		return err
	}
	return s.accountPage(c, pageData{NewKey: key})
}

func (s *Service) handleDeleteKey(c *fiber.Ctx) error {
	id, err := strconv.ParseInt(c.Params("key"), 10, 64)
	if err != nil {
		return account.ErrNotFound
	}
	if err := s.accounts.DeleteAPIKey(c.UserContext(), c.Locals(localUser).(int64), id); err != nil {
		return err
	}
	s.web.streams.end(apiKeyKey(id))
	return c.Redirect("/app/account?done=revoked", fiber.StatusSeeOther)
}

// handleDeleteAccount removes the user and everything of theirs, and closes every
// stream of their session, sites and API keys.
func (s *Service) handleDeleteAccount(c *fiber.Ctx) error {
	ses := c.Locals(localSession).(account.Session)
	if !s.web.passwordCheck.allow(userKey(ses.UserID)) {
		return s.accountPage(c.Status(fiber.StatusTooManyRequests), pageData{Error: errTooMany.Message})
	}
	sites, err := s.accounts.SitesOf(c.UserContext(), ses.UserID)
	if err != nil {
		return err
	}
	keys, err := s.accounts.APIKeysOf(c.UserContext(), ses.UserID)
	if err != nil {
		return err
	}
	err = s.accounts.DeleteUser(c.UserContext(), ses.UserID, c.FormValue("password"))
	if errors.Is(err, account.ErrBadPassword) {
		return s.accountPage(c.Status(fiber.StatusBadRequest), pageData{Error: "The password is wrong: the account was not deleted."})
	}
	if err != nil {
		return err
	}
	for _, site := range sites {
		s.web.streams.end(siteKey(site.ID))
	}
	for _, k := range keys {
		s.web.streams.end(apiKeyKey(k.ID))
	}
	s.web.streams.end(sessionKey(ses.ID))
	s.clearSession(c)
	return c.Redirect("/register", fiber.StatusSeeOther)
}
