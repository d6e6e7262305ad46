package query

import (
	"strings"
	"testing"
)

// TestConfigRefusesBadLiveSettings: settings that would make live streams spin or never
// beat are refused at start with the variable named.
func TestConfigRefusesBadLiveSettings(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"HARU_LIVE_REFRESH":  {"HARU_LIVE_REFRESH": "10ms"},
		"HARU_SSE_HEARTBEAT": {"HARU_SSE_HEARTBEAT": "1ms"},
	} {
		cfg, err := ConfigFromEnv(func(k string) string { return env[k] })
		if err != nil {
			t.Fatalf("%s: ConfigFromEnv = %v", name, err)
		}
		if err := cfg.Validate(false); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: Validate = %v, want an error naming it", name, err)
		}
	}
	cfg, err := ConfigFromEnv(func(k string) string { return map[string]string{"HARU_LIVE_REFRESH": "nope"}[k] })
	if err == nil || !strings.Contains(err.Error(), "HARU_LIVE_REFRESH") {
		t.Errorf("HARU_LIVE_REFRESH=nope: ConfigFromEnv = %+v, %v; want an error naming it", cfg.LiveRefresh, err)
	}
	cfg, err = ConfigFromEnv(func(string) string { return "" })
	if err != nil || cfg.Validate(false) != nil {
		t.Fatalf("defaults: %v / %v", err, cfg.Validate(false))
	}
	if cfg.LiveRefresh.Minutes() != 1 || cfg.DatabaseReadURL != "" {
		t.Errorf("defaults: LiveRefresh %s, DatabaseReadURL %q; want 1m and none", cfg.LiveRefresh, cfg.DatabaseReadURL)
	}
}
