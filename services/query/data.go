package query

import "github.com/gofiber/fiber/v2"

// mountData registers the dashboard's data routes on r, which has already
// authenticated the viewer and set localSite.
func (s *Service) mountData(r fiber.Router) {
	r.Get("/stats", s.handleStats)
	r.Get("/live", s.handleLive)
}
