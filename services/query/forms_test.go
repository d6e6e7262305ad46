package query

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestFormsRefuseUnstorableText: text Postgres cannot store (NUL, invalid UTF-8) in a
// form is the sender's mistake, a 400 (a 401 at login), never a 500.
func TestFormsRefuseUnstorableText(t *testing.T) {
	e := newWebEnv(t, "")
	b := e.browser(t)
	b.register("ann@example.com", "correct horse battery")
	site := b.createSite("Shop", "shop.example")
	for _, c := range []struct {
		path string
		form []string
	}{
		{"/app/sites", []string{"name", "a\x00b", "domain", "x.example", "timezone", "UTC"}},
		{"/app/sites", []string{"name", "a\xffb", "domain", "x.example", "timezone", "UTC"}},
		{"/app/sites", []string{"name", "ok", "domain", "x\x00.example", "timezone", "UTC"}},
		{"/app/sites", []string{"name", "ok", "domain", "x.example", "timezone", "Europe/Paris\x00"}},
		{fmt.Sprintf("/app/sites/%d/settings", site), []string{"name", "a\x00b", "domain", "shop.example", "timezone", "UTC"}},
		{fmt.Sprintf("/app/sites/%d/shares", site), []string{"label", "a\x00b"}},
		{fmt.Sprintf("/app/sites/%d/shares", site), []string{"label", "\xff"}},
		{"/app/account/keys", []string{"name", "a\x00b"}},
		{"/app/account/keys", []string{"name", "\xff"}},
	} {
		if a := b.post(c.path, c.form...); a.status != http.StatusBadRequest {
			t.Errorf("POST %s %q = %d, want 400", c.path, c.form, a.status)
		}
	}
	for _, email := range []string{"a\x00@example.com", "\xff@example.com"} {
		if a := e.browser(t).post("/login", "email", email, "password", "whatever12345"); a.status != http.StatusUnauthorized {
			t.Errorf("login as %q = %d, want 401", email, a.status)
		}
		if a := e.browser(t).post("/register", "email", email, "password", "whatever12345"); a.status != http.StatusBadRequest {
			t.Errorf("register %q = %d, want 400", email, a.status)
		}
	}
}

// TestSharePathsWithRawBytes: a share link's slug that is not text finds no link, 404.
func TestSharePathsWithRawBytes(t *testing.T) {
	e := newWebEnv(t, "")
	host := strings.TrimPrefix(e.origin, "http://")
	for _, p := range []string{"/share/\xff", "/share/%FF", "/share/%00", "/share/a\xffb/data/dashboard", "/share/\xff\xfe/data/live"} {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", p, host)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %q = %d, want 404", p, resp.StatusCode)
		}
	}
}

// TestSiteZonesAreCivil: a site's zone is one Go and Postgres read alike: not the host's
// own under any name, not a leap-second (right/) zone.
func TestSiteZonesAreCivil(t *testing.T) {
	e := newWebEnv(t, "")
	b := e.browser(t)
	b.register("ann@example.com", "correct horse battery")
	for _, tz := range []string{"Local", "localtime", "posixrules", "Factory", "right/Europe/Paris", "posix/Europe/Paris", "Mars/Olympus", "../etc/passwd", "CET", "MET", "EET", "WET"} {
		if a := b.post("/app/sites", "name", "S", "domain", "s.example", "timezone", tz); a.status != http.StatusBadRequest {
			t.Errorf("timezone %q = %d, want 400", tz, a.status)
		}
	}
	for _, tz := range []string{"UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5"} {
		if a := b.post("/app/sites", "name", "S", "domain", "s.example", "timezone", tz); a.status != http.StatusSeeOther {
			t.Errorf("timezone %q = %d, want 303", tz, a.status)
		}
	}
}

// TestPasswordChecksBounded: a logged-in session gets five password checks a minute
// (changing the password, deleting the account), so a stolen session cannot guess the
// password; another user's checks are their own.
func TestPasswordChecksBounded(t *testing.T) {
	e := newWebEnv(t, "")
	ann, bob := e.browser(t), e.browser(t)
	ann.register("ann@example.com", "correct horse battery")
	bob.register("bob@example.com", "correct horse battery")
	for i := range 5 {
		path, form := "/app/account/password", []string{"current", "guess", "password", "new password 123"}
		if i%2 == 1 {
			path, form = "/app/account/delete", []string{"password", "guess"}
		}
		if a := ann.post(path, form...); a.status != http.StatusBadRequest {
			t.Fatalf("guess %d = %d, want 400", i+1, a.status)
		}
	}
	if a := ann.post("/app/account/password", "current", "correct horse battery", "password", "new password 123"); a.status != http.StatusTooManyRequests {
		t.Fatalf("sixth check within the minute = %d, want 429 even with the right password", a.status)
	}
	if a := ann.post("/app/account/delete", "password", "correct horse battery"); a.status != http.StatusTooManyRequests {
		t.Fatalf("account deletion past the bound = %d, want 429", a.status)
	}
	if a := bob.post("/app/account/password", "current", "correct horse battery", "password", "new password 123"); a.status != http.StatusSeeOther {
		t.Fatalf("another user's change = %d, want 303", a.status)
	}
}
