package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/server"
	"github.com/haru-analytics/haru/services/ingest/internal/collect"
	"github.com/haru-analytics/haru/services/ingest/internal/enrich"
	"github.com/haru-analytics/haru/services/ingest/internal/visitor"
)

// Errors of the batch endpoint, answered by reject like the collect path's.
var (
	ErrNoSecret     = errors.New("missing secret key: send Authorization: Bearer <site secret key>")
	ErrUnknownKey   = errors.New("unknown secret key")
	ErrPublicToken  = errors.New("this is the site's public token; the batch endpoint needs the site's secret key")
	ErrBatchTooBig  = fmt.Errorf("body too large: at most %d bytes", collect.MaxBatchBytes)
	ErrBatchLimited = errors.New("too many events for this site, retry later")
	ErrIdemKey      = fmt.Errorf("Idempotency-Key: want 1..%d printable ASCII characters", collect.MaxKeyLen)
)

// Per-item results of a batch.
const (
	resultAccepted = "accepted"
	resultDropped  = "dropped"
	resultError    = "error"
)

// ItemResult is one event's answer in a batch response, in request order.
type ItemResult struct {
	Index  int    `json:"index"`
	Status int    `json:"status"`
	Result string `json:"result"`
	// Reason is why an event was dropped (bot, prefetch).
	Reason string `json:"reason,omitempty"`
	// Field and Error say what is wrong with a refused event.
	Field string `json:"field,omitempty"`
	Error string `json:"error,omitempty"`
	// Replayed marks an event whose idempotency key was seen before: the answer is that
	// of the event stored then, and nothing new is counted.
	Replayed bool `json:"replayed,omitempty"`
}

// BatchResponse is the batch endpoint's answer body.
type BatchResponse struct {
	Results []ItemResult `json:"results"`
}

// idemRecord is what the idempotency bucket remembers of a keyed event: the id and
// time it was first published with, so a retry publishes the very same event and the
// writer (keyed on site, ts and id) stores it once.
type idemRecord struct {
	ID   uuid.UUID `json:"id"`
	Time time.Time `json:"ts"`
}

// handleBatch is a server-side sender's request: several events, each checked and
// answered on its own, all published before any PubAck is awaited.
func (s *Service) handleBatch(c *fiber.Ctx) error {
	// 1. Cheap checks of the request itself.
	if !acceptedContentType(c.Get(fiber.HeaderContentType)) {
		return s.reject(c, fiber.StatusUnsupportedMediaType, "content_type", ErrContentType)
	}
	if server.Compressed(c) {
		return s.reject(c, fiber.StatusUnsupportedMediaType, "content_encoding", ErrEncoding)
	}
	body := c.Request().Body()
	if len(body) > collect.MaxBatchBytes {
		return s.reject(c, fiber.StatusRequestEntityTooLarge, "too_large", ErrBatchTooBig)
	}
	idemHeader := c.Get("Idempotency-Key")
	if idemHeader != "" && !validKey(idemHeader) {
		return s.reject(c, fiber.StatusBadRequest, "bad_idempotency_key", ErrIdemKey)
	}

	// 2. Which site? Only the secret key in the Authorization header: never the public
	// token, never a query parameter (URLs end up in logs).
	secret, bearer := strings.CutPrefix(c.Get(fiber.HeaderAuthorization), "Bearer ")
	if secret = strings.TrimSpace(secret); !bearer || secret == "" {
		return s.reject(c, fiber.StatusUnauthorized, "no_secret", ErrNoSecret)
	}
	site, ok, err := s.sites.LookupSecret(secret)
	if !ok {
		if _, public, _ := s.sites.Lookup(secret); public {
			return s.reject(c, fiber.StatusUnauthorized, "public_token", ErrPublicToken)
		}
		return s.unknownSite(c, err, "unknown_secret", ErrUnknownKey)
	}

	// 3. What happened? A body that is not a batch is refused whole; each event's own
	// mistakes are its own result.
	items, err := collect.ParseBatch(body)
	switch {
	case errors.Is(err, collect.ErrTooLarge):
		return s.reject(c, fiber.StatusRequestEntityTooLarge, "too_large", ErrBatchTooBig)
	case errors.Is(err, collect.ErrTooMany):
		return s.reject(c, fiber.StatusRequestEntityTooLarge, "too_many", err)
	case err != nil:
		return s.reject(c, fiber.StatusBadRequest, "bad_payload", err)
	}

	// 4. Too many events for this site on this replica?
	now := s.clock.Now()
	if s.batchLimiter != nil {
		if ok, wait := s.batchLimiter.AllowN(site.ID, len(items), now); !ok {
			return s.rateLimited(c, wait, "batch_rate_limited", ErrBatchLimited)
		}
	}

	// 5. Each event: checked, described, published; PubAcks are awaited together.
	ctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.PublishTimeout)
	defer cancel()
	req := batchRequest{
		site: site, now: now, idemHeader: idemHeader,
		userAgent: c.Get(fiber.HeaderUserAgent),
		ip:        s.clientIP.ClientIP(peerAddr(c), func() string { return c.Get(s.clientIP.Header()) }),
	}
	results := make([]ItemResult, len(items))
	futures := make([]*outMsg, len(items))
	start := time.Now()
	var keyed sync.WaitGroup
	for i := range items {
		if itemKey(req, i, &items[i]) == "" {
			results[i], futures[i] = s.batchItem(ctx, req, i, &items[i])
			continue
		}
		// A keyed event waits for a KV round trip to claim its key: claim them all at
		// once rather than one after another.
		keyed.Go(func() { results[i], futures[i] = s.batchItem(ctx, req, i, &items[i]) })
	}
	keyed.Wait()

	// 6. Durable or not: 202 only for events with their PubAck.
	for i, o := range futures {
		if o == nil {
			continue
		}
		err := s.awaitAck(ctx, o)
		s.metrics.publishSeconds.Observe(time.Since(start).Seconds())
		if err != nil {
			s.log.Warn("publish failed", "site_id", site.ID, "err", err)
			results[i] = unavailable(i)
			continue
		}
		s.metrics.accepted.Inc()
	}
	status := batchStatus(results)
	if status == fiber.StatusServiceUnavailable {
		c.Set(fiber.HeaderRetryAfter, "1")
	}
	return c.Status(status).JSON(BatchResponse{Results: results})
}

// batchRequest is what every item of one batch shares.
type batchRequest struct {
	site       event.Site
	now        time.Time
	idemHeader string
	userAgent  string     // the request's, for items without their own
	ip         netip.Addr // the request's client address, for items without their own
}

// batchItem checks, describes and publishes one event of a batch. It returns the
// event's result and, when published, the future of its PubAck.
func (s *Service) batchItem(ctx context.Context, req batchRequest, i int, it *collect.Item) (ItemResult, *outMsg) {
	if it.Err != nil {
		return badItem(s, i, it.Err), nil
	}
	// The page before anything is claimed: a refused event must not take its key.
	page := enrich.ParsePage(it.URL, it.Path, it.HashMode)
	if err := collect.CheckPagePath(page.Path); err != nil {
		return badItem(s, i, err), nil
	}
	userAgent, ip := it.UserAgent, it.IP
	if userAgent == "" {
		userAgent = req.userAgent
	}
	if !ip.IsValid() {
		ip = req.ip
	}
	agent := s.agents.Get(userAgent)
	if reason := agent.botReason; reason != "" {
		s.metrics.droppedWith(reason).Inc()
		return ItemResult{Index: i, Status: fiber.StatusAccepted, Result: resultDropped, Reason: reason}, nil
	}

	ev, err := event.New(req.now, req.site.ID, it.Name)
	if err != nil {
		s.log.Error("mint event", "err", err)
		return unavailable(i), nil
	}
	// A keyed event takes the id and time of its first attempt, from any replica.
	replayed := false
	if key := itemKey(req, i, it); key != "" {
		if replayed, err = s.claim(ctx, req.site.ID, key, &ev); err != nil {
			s.log.Warn("idempotency bucket", "site_id", req.site.ID, "err", err)
			return unavailable(i), nil
		}
	}
	daySalt, err := s.salts.ForDate(ctx, s.zones.get(req.site.Timezone).localDate(ev.Time))
	if err != nil {
		s.log.Error("salt unavailable", "err", err)
		return unavailable(i), nil
	}
	ev.Visitor = visitor.ID(daySalt, req.site.ID, ip, userAgent)

	// The secret proves the sender is the site's owner, so its events need not come
	// from the site's own host.
	ev.Hostname, ev.Path = page.Host, page.Path
	ev.UTMSource, ev.UTMMedium, ev.UTMCampaign = page.UTM.Source, page.UTM.Medium, page.UTM.Campaign
	ev.UTMTerm, ev.UTMContent = page.UTM.Term, page.UTM.Content
	if ev.RefSource = enrich.RefSource(it.Referrer, page.Host, req.site.Domain); ev.RefSource != "" {
		ev.Referrer = it.Referrer
	}
	ev.Country = enrich.Country(ip, "", false)
	ev.Region = s.regions.Region(ip, ev.Country)
	ev.Browser, ev.OS = agent.Browser, agent.OS
	ev.Device = enrich.Device(agent.Device, it.ScreenW)
	ev.ScreenW, ev.ScreenH = it.ScreenW, it.ScreenH
	ev.DurationMS = it.DurationMS
	ev.Props = it.Props

	o, err := s.publishAsync(ctx, &ev)
	if errors.Is(err, ErrEventTooBig) {
		s.metrics.rejected.WithLabelValues("too_large").Inc()
		return ItemResult{Index: i, Status: fiber.StatusRequestEntityTooLarge, Result: resultError, Error: err.Error()}, nil
	}
	if err != nil {
		s.log.Warn("publish failed", "site_id", req.site.ID, "err", err)
		return unavailable(i), nil
	}
	return ItemResult{Index: i, Status: fiber.StatusAccepted, Result: resultAccepted, Replayed: replayed}, o
}

// badItem is the answer to an event refused for its content.
func badItem(s *Service, i int, err *collect.FieldError) ItemResult {
	s.metrics.rejected.WithLabelValues("bad_payload").Inc()
	return ItemResult{Index: i, Status: fiber.StatusBadRequest, Result: resultError, Field: err.Field, Error: err.Reason}
}

// claim makes ev the one event of key: the first claim (an atomic Create, so one wins
// across replicas) records ev's id and time; a later one takes the recorded id and time
// into ev and reports replayed. Republishing that same event is harmless: JetStream drops
// it within its duplicate window and the writer's key (site, ts, id) after it.
func (s *Service) claim(ctx context.Context, siteID int64, key string, ev *event.Event) (replayed bool, err error) {
	sum := sha256.Sum256([]byte(strconv.FormatInt(siteID, 10) + "\x00" + key))
	kvKey := hex.EncodeToString(sum[:])
	rec, err := json.Marshal(idemRecord{ID: ev.ID, Time: ev.Time})
	if err != nil {
		return false, err
	}
	if _, err := s.idem.Create(ctx, kvKey, rec); err == nil {
		return false, nil
	} else if !errors.Is(err, jetstream.ErrKeyExists) {
		return false, fmt.Errorf("claim idempotency key: %w", err)
	}
	e, err := s.idem.Get(ctx, kvKey)
	if err != nil {
		return false, fmt.Errorf("read idempotency key: %w", err)
	}
	var first idemRecord
	if err := json.Unmarshal(e.Value(), &first); err != nil {
		return false, fmt.Errorf("read idempotency key: %w", err)
	}
	ev.ID, ev.Time = first.ID, first.Time
	return true, nil
}

// itemKey is an item's idempotency key: its own, else the request's Idempotency-Key
// with the item's position (a retry resends the same items in the same order).
func itemKey(req batchRequest, i int, it *collect.Item) string {
	switch {
	case it.Key != "":
		return "k:" + it.Key
	case req.idemHeader != "":
		return "h:" + req.idemHeader + ":" + strconv.Itoa(i)
	}
	return ""
}

// validKey allows printable ASCII only: a header value goes into logs and hashes as is.
func validKey(k string) bool {
	if len(k) > collect.MaxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

func unavailable(i int) ItemResult {
	return ItemResult{Index: i, Status: fiber.StatusServiceUnavailable, Result: resultError, Error: ErrUnavailable.Error()}
}

// batchStatus is the request's status: 503 if any event is not durable (the sender
// retries the whole request; idempotency keys make that safe), 400 if every event was
// refused, else 202.
func batchStatus(results []ItemResult) int {
	refused := 0
	for _, r := range results {
		switch r.Status {
		case fiber.StatusServiceUnavailable:
			return fiber.StatusServiceUnavailable
		case fiber.StatusBadRequest:
			refused++
		}
	}
	if refused == len(results) {
		return fiber.StatusBadRequest
	}
	return fiber.StatusAccepted
}
