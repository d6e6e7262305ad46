package query

import "github.com/gofiber/fiber/v2"

// mountData registers the dashboard's data routes on r, which has already
// authenticated the viewer and set localSite: the stats routes, as the API serves them.
func (s *Service) mountData(r fiber.Router) { s.mountStats(r) }
