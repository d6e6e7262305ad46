package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/haru-analytics/haru/services/loadgen/internal/traffic"
)

func TestReadSites(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sites")
	if err := os.WriteFile(file, []byte("# token domain\nf1 one.example\n\nf2   # no domain\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, tokens, file string
		want               []traffic.Site
		wantErr            bool
	}{
		{name: "tokens", tokens: "a, b=b.example,", want: []traffic.Site{{Token: "a"}, {Token: "b", Domain: "b.example"}}},
		{name: "file", file: file, want: []traffic.Site{{Token: "f1", Domain: "one.example"}, {Token: "f2"}}},
		{name: "both", tokens: "a", file: file, want: []traffic.Site{{Token: "a"}, {Token: "f1", Domain: "one.example"}, {Token: "f2"}}},
		{name: "none", wantErr: true},
		{name: "missing file", file: filepath.Join(t.TempDir(), "nope"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readSites(tt.tokens, tt.file)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("sites (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRefusesRemoteTarget(t *testing.T) {
	err := run(t.Context(), []string{"-url", "http://192.0.2.1:4000/api/collect", "-tokens", "x", "-n", "1"}, os.Getenv, os.Stdout)
	if err == nil {
		t.Fatal("want a remote target refused")
	}
}
