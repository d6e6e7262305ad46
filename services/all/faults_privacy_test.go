package all

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// otlpReceiver is a local OTLP/HTTP endpoint that keeps every export request's body.
type otlpReceiver struct {
	URL    string
	mu     sync.Mutex
	bodies [][]byte
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	o := &otlpReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		o.mu.Lock()
		o.bodies = append(o.bodies, b)
		o.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	o.URL = srv.URL
	return o
}

// received is every exported body, concatenated.
func (o *otlpReceiver) received() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return bytes.Join(o.bodies, []byte("\n"))
}

// saltForms are the ways a salt could be written out: raw, hex and base64.
func saltForms(salt []byte) []string {
	return []string{
		string(salt),
		hex.EncodeToString(salt), strings.ToUpper(hex.EncodeToString(salt)),
		base64.StdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(salt),
		base64.URLEncoding.EncodeToString(salt), base64.RawURLEncoding.EncodeToString(salt),
	}
}

// TestAbusePrivacy sends beacons from several client addresses and User-Agents (through
// a trusted proxy, so the addresses are believed), some accepted, some rate-limited, some
// refused as bad or as bots, with debug logs and traces exported to a local OTLP
// receiver. Afterwards none of those addresses or User-Agents, and no salt in any
// encoding, appears in a pg_dump of the database, in the services' logs, or in the
// exported traces.
func TestAbusePrivacy(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	otlp := startOTLPReceiver(t)
	r := newRig(t, map[string]string{
		"HARU_TRUSTED_PROXIES":        "127.0.0.1/32",
		"HARU_RATE_LIMIT":             "8",
		"HARU_LOG_LEVEL":              "debug",
		"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.URL,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY":     "100",
	})
	js := r.jetstream(t)
	ips := []string{"203.0.113.57", "198.51.100.203", "192.0.2.211", "2001:db8:ab::7"}
	agents := []string{
		"Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0 PrivProbeA1",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1 PrivProbeB2",
		"PrivProbeBot/1.0 (+https://crawler.example/bot)",
	}
	bodies := []string{
		`{"p":"/private-page","r":"https://news.example/item","sw":1280,"sh":800}`,
		`{"p":"/private-page","n":"signup","props":{"plan":"pro"}}`,
		`{"p":"/private-page","sw":"wide"}`, // refused: 400
	}
	client := &http.Client{Timeout: 5 * time.Second}
	answers := map[int]int{}
	var accepted int64
	for _, ip := range ips {
		for _, ua := range agents {
			for _, body := range bodies {
				req, _ := http.NewRequest(http.MethodPost, r.ingest+"/api/collect", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+r.token)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("User-Agent", ua)
				req.Header.Set("X-Forwarded-For", ip)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				answers[resp.StatusCode]++
				if resp.StatusCode == http.StatusAccepted && !strings.Contains(ua, "Bot") {
					accepted++
				}
			}
		}
	}
	t.Logf("answers: %v", answers)
	if answers[http.StatusAccepted] == 0 || answers[http.StatusTooManyRequests] == 0 || answers[http.StatusBadRequest] == 0 {
		t.Fatalf("answers %v: want some 202, 429 and 400 so every path ran", answers)
	}
	r.drain(ctx, js, accepted)

	// Stop every service, so logs and spans are flushed.
	for _, name := range []string{"ingest", "query"} {
		p := r.procs[name]
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(30 * time.Second); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := r.writer.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := r.writer.Wait(30 * time.Second); err != nil {
		t.Errorf("writer: %v", err)
	}

	secrets := map[string]string{}
	for _, ip := range ips {
		secrets[ip] = "client address " + ip
	}
	for i, ua := range agents {
		secrets[ua] = fmt.Sprintf("User-Agent %d", i)
	}
	secrets["PrivProbe"] = "the User-Agents' marker"
	salts := r.salts(ctx, js)
	if len(salts) == 0 {
		t.Fatal("no salt in the salts bucket: the visitor ids were not keyed")
	}
	for i, s := range salts {
		for j, form := range saltForms(s) {
			secrets[form] = fmt.Sprintf("salt %d (form %d)", i, j)
		}
	}

	dump := r.pg.Dump(t, "haru")
	traces := string(otlp.received())
	places := map[string]string{
		"pg_dump":     dump,
		"ingest log":  r.procs["ingest"].Log(),
		"writer log":  r.writer.Log(),
		"query log":   r.procs["query"].Log(),
		"OTLP traces": traces,
	}
	// Each place must hold what it is for, or finding nothing in it proves nothing.
	for place, want := range map[string]string{"pg_dump": "/private-page", "OTLP traces": "POST /api/collect", "ingest log": "ingest", "writer log": "writer", "query log": "query"} {
		if !strings.Contains(places[place], want) {
			t.Errorf("%s holds no %q: the check below would prove nothing", place, want)
		}
	}
	for place, text := range places {
		for secret, what := range secrets {
			if strings.Contains(text, secret) {
				i := strings.Index(text, secret)
				t.Errorf("%s contains %s: …%q…", place, what, text[max(0, i-80):min(len(text), i+len(secret)+80)])
			}
		}
	}
	t.Logf("searched %d secrets in a %d-byte dump, %d bytes of traces and three logs", len(secrets), len(dump), len(traces))
}

// salts reads every daily salt from the salts bucket.
func (r *crashRig) salts(ctx context.Context, js jetstream.JetStream) [][]byte {
	r.t.Helper()
	kv, err := js.KeyValue(ctx, r.names.Salts)
	if err != nil {
		r.t.Fatalf("salts bucket: %v", err)
	}
	keys, err := kv.Keys(ctx)
	if err != nil {
		r.t.Fatalf("salt keys: %v", err)
	}
	var out [][]byte
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			r.t.Fatalf("salt %s: %v", k, err)
		}
		out = append(out, e.Value())
	}
	return out
}
