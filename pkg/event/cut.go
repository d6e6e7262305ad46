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
