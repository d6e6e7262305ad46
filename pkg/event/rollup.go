package event

// The rollups keep the first RollupValueChars characters of a dimension or property
// value and the first RollupKeyChars of a property key; views read from raw events cut
// the same way, so both agree.
const (
	RollupKeyChars   = 200
	RollupValueChars = 1000
)

// Cut keeps the first n characters of s, as Postgres's left(s, n).
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := 0
	for j := range s {
		if i == n {
			return s[:j]
		}
		i++
	}
	return s
}

// ScreenClass names the class of a screen width, as the dashboard groups them.
func ScreenClass(w int) string {
	switch {
	case w <= 0:
		return ""
	case w < 576:
		return "mobile"
	case w < 992:
		return "tablet"
	case w < 1440:
		return "laptop"
	}
	return "desktop"
}
