package account

import (
	"strings"
	"testing"
)

func TestPasswordHash(t *testing.T) {
	h, err := HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=3,p=2$") {
		t.Fatalf("hash %q is not an argon2id PHC string", h)
	}
	h2, _ := HashPassword("correct horse battery")
	if h == h2 {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
	tests := []struct {
		hash, password string
		want           bool
	}{
		{h, "correct horse battery", true},
		{h, "correct horse batterY", false},
		{h, "", false},
		{"$argon2id$v=19$m=65536,t=3,p=2$!!$!!", "x", false},
		{"plain", "plain", false},
	}
	for _, tt := range tests {
		if got := CheckPassword(tt.hash, tt.password); got != tt.want {
			t.Errorf("CheckPassword(%q, %q) = %v, want %v", tt.hash, tt.password, got, tt.want)
		}
	}
}

func TestNormalizeEmail(t *testing.T) {
	for _, ok := range []string{"a@b.c", " Dev@Haru.Local "} {
		if _, err := NormalizeEmail(ok); err != nil {
			t.Errorf("NormalizeEmail(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "nope", "a@", "Name <a@b.c>", strings.Repeat("a", 250) + "@b.cd"} {
		if _, err := NormalizeEmail(bad); err == nil {
			t.Errorf("NormalizeEmail(%q) accepted", bad)
		}
	}
}

func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if len(tok) != 32 || strings.ContainsAny(tok, "+/=") || seen[tok] {
			t.Fatalf("token %q: want 32 unique base64url characters", tok)
		}
		seen[tok] = true
	}
}
